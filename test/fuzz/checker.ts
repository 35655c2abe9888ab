// The checker: a few well-behaved users, one per node, chat with numbered messages while the
// fuzzer runs. `verifyDeliveries` is pure, so its judgement is unit-tested on its own.
import { connectUser, sees, type ChatClient } from '../support/ws-client'

export const checkerText = (n: number) => `check ${n}`
const CHECKER_TEXT = /^check (\d+)$/

export interface Received {
  username: string
  message: string
  nodeAddress: string
}

export interface DeliveryReport {
  /** One line per problem: missing, duplicated, reordered, forged or misattributed messages. */
  problems: string[]
  /** Checker messages delivered (to every checker, the sender included). */
  delivered: number
  expected: number
}

/**
 * Every checker must receive every numbered message of every checker (its own too) exactly once,
 * in the order it was sent, marked with the sender's node. Anything else that claims to come from
 * a checker name is a forgery.
 */
export function verifyDeliveries(
  senders: { username: string; nodeAddress: string; sent: number; refused?: number }[],
  received: Map<string, Received[]>,
): DeliveryReport {
  const problems: string[] = []
  let delivered = 0
  let expected = 0
  // A node that sheds load refuses a message with an `overloaded` error to its sender, and nobody
  // gets it: that is a refusal the sender was told of, not a loss. As many numbers as the sender
  // was refused, that no receiver (the sender included) got, are not counted missing.
  const refusedBy = new Map<string, Set<number>>()
  for (const sender of senders) {
    const got = new Set<number>()
    for (const frames of received.values()) for (const f of frames) if (f.username === sender.username) got.add(Number(CHECKER_TEXT.exec(f.message)?.[1]))
    const nobody: number[] = []
    for (let n = 1; n <= sender.sent; n++) if (!got.has(n)) nobody.push(n)
    refusedBy.set(sender.username, new Set(nobody.length <= (sender.refused ?? 0) ? nobody : []))
  }
  for (const [receiver, frames] of received) {
    for (const sender of senders) {
      const refused = refusedBy.get(sender.username)!
      expected += sender.sent - refused.size
      const numbers: number[] = []
      for (const f of frames) {
        if (f.username !== sender.username) continue
        const match = CHECKER_TEXT.exec(f.message)
        const n = match ? Number(match[1]) : Number.NaN
        if (!Number.isSafeInteger(n) || n < 1 || n > sender.sent) {
          problems.push(`${receiver} got a message from ${sender.username} it never sent: ${JSON.stringify(f.message.slice(0, 80))}`)
          continue
        }
        if (f.nodeAddress !== sender.nodeAddress) problems.push(`${receiver} got ${sender.username}'s #${n} marked from ${f.nodeAddress}, not ${sender.nodeAddress}`)
        numbers.push(n)
      }
      const seen = new Set<number>()
      const duplicates: number[] = []
      let reordered = 0
      for (let i = 0; i < numbers.length; i++) {
        if (seen.has(numbers[i]!)) duplicates.push(numbers[i]!)
        else delivered++
        seen.add(numbers[i]!)
        if (i > 0 && numbers[i]! < numbers[i - 1]!) reordered++
      }
      const missing: number[] = []
      for (let n = 1; n <= sender.sent; n++) if (!seen.has(n) && !refused.has(n)) missing.push(n)
      if (missing.length > 0) problems.push(`${receiver} missed ${missing.length} of ${sender.sent} from ${sender.username}: ${brief(missing)}`)
      if (duplicates.length > 0) problems.push(`${receiver} got ${duplicates.length} duplicate(s) from ${sender.username}: ${brief(duplicates)}`)
      if (reordered > 0) problems.push(`${receiver} got ${sender.username}'s messages out of order ${reordered} time(s)`)
    }
  }
  return { problems, delivered, expected }
}

const brief = (numbers: number[]) => (numbers.length > 8 ? `${numbers.slice(0, 8).join(', ')}, …` : numbers.join(', '))

export interface CheckerUser {
  client: ChatClient
  nodeAddress: string
  sent: number
  unexpectedClose: string | null
}

export class Checker {
  private users: CheckerUser[] = []
  private timer: ReturnType<typeof setInterval> | null = null
  private closing = false

  constructor(
    private readonly names: string[],
    private readonly intervalMs: number,
  ) {}

  async start(nodes: { httpUrl: string; address: string }[]): Promise<void> {
    for (const [i, name] of this.names.entries()) {
      const node = nodes[i % nodes.length]!
      const client = await connectUser(node.httpUrl, name, { timeoutMs: 10_000 })
      const user: CheckerUser = { client, nodeAddress: node.address, sent: 0, unexpectedClose: null }
      void client.closed.then((info) => {
        if (!this.closing) user.unexpectedClose = `${name} was closed by the server: ${info.code} ${info.reason}`
      })
      this.users.push(user)
    }
    // Nobody may miss a message because it had not seen the sender join yet.
    const deadline = performance.now() + 15_000
    while (!this.users.every((u) => this.names.every((n) => sees(u.client, n)))) {
      if (performance.now() > deadline) throw new Error('checker users did not see each other within 15 s')
      await Bun.sleep(20)
    }
    this.timer = setInterval(() => {
      for (const user of this.users) {
        if (user.client.isClosed()) continue
        user.sent++
        user.client.sendChat(checkerText(user.sent))
      }
    }, this.intervalMs)
  }

  stopSending(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** Waits (up to `timeoutMs`) until every open checker has its peers' last message, then judges. */
  async finish(timeoutMs: number): Promise<DeliveryReport & { closes: string[] }> {
    this.stopSending()
    const deadline = performance.now() + timeoutMs
    const lastArrived = () =>
      this.users.every((r) => r.client.isClosed() || this.users.every((s) => s.sent === 0 || r.client.frames.some((f) => f.type === 'chat' && f.username === s.client.username && f.message === checkerText(s.sent))))
    while (!lastArrived() && performance.now() < deadline) await Bun.sleep(20)
    const received = new Map<string, Received[]>()
    for (const r of this.users) received.set(r.client.username, r.client.frames.filter((f) => f.type === 'chat' && this.names.includes(f.username)) as Received[])
    const report = verifyDeliveries(
      this.users.map((u) => ({ username: u.client.username, nodeAddress: u.nodeAddress, sent: u.sent, refused: u.client.received((f) => f.type === 'error' && f.code === 'overloaded').length })),
      received,
    )
    return { ...report, closes: this.users.flatMap((u) => (u.unexpectedClose ? [u.unexpectedClose] : [])) }
  }

  /** Every chat frame the checker users received, whoever it claims to be from. */
  chatSeen(): Received[] {
    return this.users.flatMap((u) => u.client.frames.filter((f) => f.type === 'chat') as Received[])
  }

  get sent(): number {
    return this.users.reduce((sum, u) => sum + u.sent, 0)
  }

  async close(): Promise<void> {
    this.closing = true
    this.stopSending()
    const users = this.users
    await Promise.all(users.map((u) => u.client.close().catch(() => {})))
  }
}

// A chat user that behaves as the page does when its node drains: on a `moving` frame and the
// 1012 close that follows, it reconnects at once to one of the members the node named (then the
// others), resuming after the last line it saw (`since`/`epoch`), and retries a name the new node
// still thinks is taken (the old node's leave may not have arrived yet). What it says goes out
// with a clientMsgId and is kept until acknowledged: said while between nodes, or unacknowledged
// when its node went, it is sent again on the next connection; refused for now (rate, load), all
// that is unacknowledged is sent again, in order, a moment later. It records how long each move
// took and every chat line it received (live or replayed), repeats included.
import { chatUrl, connectUrl, type ChatClient, type Frame } from './ws-client'

const SERVICE_RESTART = 1012
const TAKEN = 4409
const MOVE_DEADLINE_MS = 10_000
/** After a refusal for now: the page waits 5 s; a test has less time. */
const RESEND_AFTER_MS = 300

export interface Move {
  from: string
  to: string
  /** From the close of the old socket to the welcome on the new one. */
  ms: number
  closedAt: number
}

export class MovingUser {
  client!: ChatClient
  httpUrl: string
  readonly moves: Move[] = []
  readonly chats: Frame[] = []
  readonly failures: string[] = []
  private stopped = false
  private lastId = 0
  private epoch: string | null = null
  private said = 0
  /** clientMsgId → text, in the order said, until acknowledged. */
  private readonly unacked = new Map<string, string>()
  /** Refusals for now (rate, load, unavailable) it was told of. */
  refusals = 0
  /** A resend after a refusal for now is scheduled. */
  private resending = false

  constructor(
    readonly username: string,
    httpUrl: string,
  ) {
    this.httpUrl = httpUrl
  }

  async connect(): Promise<void> {
    // A node lets a burst of new sockets in a turn's budget at a time and refuses the rest with 503
    // (1006 to a WebSocket); the page tries again after a pause, and so does this user.
    for (let attempt = 1; ; attempt++) {
      try {
        this.client = await connectUrl(chatUrl(this.httpUrl, this.username), this.username)
        break
      } catch (error) {
        if (attempt === 10 || !String(error).includes('closed with 1006')) throw error
        await Bun.sleep(100 * attempt) // a retry's backoff, not a wait for a condition
      }
    }
    this.watch(this.client)
  }

  send(text: string): void {
    const clientMsgId = `${this.username}-${++this.said}`
    this.unacked.set(clientMsgId, text)
    if (!this.client.isClosed()) this.sendTyped(clientMsgId, text)
  }

  /** Messages said and not acknowledged yet. */
  get pending(): number {
    return this.unacked.size
  }

  private sendTyped(clientMsgId: string, message: string): void {
    this.client.send(JSON.stringify({ type: 'chat', message, clientMsgId }))
  }

  private see(frame: Frame): void {
    if (typeof frame.id === 'number') this.lastId = Math.max(this.lastId, frame.id)
    if (frame.type === 'chat') this.chats.push(frame)
  }

  async stop(): Promise<void> {
    this.stopped = true
    await this.client.close().catch(() => {})
  }

  private watch(client: ChatClient): void {
    let members: string[] = []
    client.ws.addEventListener('message', (event) => {
      const frame = JSON.parse(String(event.data)) as Frame
      if (frame.type === 'history') {
        this.epoch = frame.epoch as string
        for (const line of frame.messages as Frame[]) this.see(line)
      } else this.see(frame)
      if (frame.type === 'ack') this.unacked.delete(frame.clientMsgId as string)
      if (frame.type === 'error' && ['rate_limited', 'overloaded', 'unavailable'].includes(frame.code as string)) this.refusals++, this.resendSoon(client)
      if (frame.type === 'moving') members = (frame.members as Array<{ httpUrl: string }>).map((m) => m.httpUrl)
    })
    void client.closed.then(async (info) => {
      if (this.stopped) return
      if (info.code !== SERVICE_RESTART) return void this.failures.push(`closed with ${info.code} ${info.reason}`)
      const closedAt = performance.now()
      const from = this.httpUrl
      const moved = await this.moveTo(members, closedAt)
      if (!moved) return void this.failures.push(`could not move from ${from} to any of ${members.join(', ')}`)
      this.moves.push({ from, to: this.httpUrl, ms: performance.now() - closedAt, closedAt })
    })
  }

  /** As the page: what was refused for now goes again, with everything after it, in the order said (the node holds the later ones until then). */
  private resendSoon(client: ChatClient): void {
    if (this.resending) return
    this.resending = true
    setTimeout(() => {
      this.resending = false
      if (client === this.client && !client.isClosed()) for (const [clientMsgId, text] of this.unacked) this.sendTyped(clientMsgId, text)
    }, RESEND_AFTER_MS)
  }

  private async moveTo(members: string[], since: number): Promise<boolean> {
    while (performance.now() - since < MOVE_DEADLINE_MS) {
      for (const url of members) {
        try {
          const resume = this.epoch === null ? '' : `&since=${this.lastId}&epoch=${encodeURIComponent(this.epoch)}`
          // Long enough for a loaded machine: an attempt given up on may still be admitted, and the same
          // name then open at two nodes makes the later one give way (4409).
          const client = await connectUrl(chatUrl(url, this.username) + resume, this.username, { timeoutMs: 8000 })
          this.client = client
          this.httpUrl = url
          this.watch(client)
          for (const [clientMsgId, text] of this.unacked) this.sendTyped(clientMsgId, text)
          return true
        } catch (error) {
          // A taken name (the old node's leave still on its way) or a node that went too: next.
          if (!String(error).includes(String(TAKEN))) continue
        }
      }
      await Bun.sleep(50) // between rounds of attempts, not a wait for a condition
    }
    return false
  }
}

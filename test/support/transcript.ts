// The transcript as the tests see it: acknowledged sends, the lines a client received (its history
// frames and live lines, in arrival order), and a node's whole held transcript via /api/messages.
//
//   const ack = await sendAcked(alice, 'hello')          // { clientMsgId, id }
//   const lines = receivedLines(bob)                       // [{ id, type, message, username }, ...]
//   expect(checkStream(lines).duplicates).toEqual([])
//   const held = await fetchTranscript(node)               // every line the node holds, oldest first
import type { NodeHandle } from './cluster'
import type { ChatClient, Frame } from './ws-client'

export interface LineSeen {
  id: number
  type: 'chat' | 'system'
  message: string
  username: string
  /** Arrived in a history frame (true) or live (false). */
  history: boolean
}

let sent = 0

/** A clientMsgId unique in this test process. */
export function newClientMsgId(prefix = 't'): string {
  return `${prefix}-${process.pid}-${++sent}-${Math.random().toString(36).slice(2, 8)}`
}

/** Sends a typed chat with a clientMsgId (without waiting). */
export function sendTyped(client: ChatClient, message: string, clientMsgId = newClientMsgId()): string {
  client.send(JSON.stringify({ type: 'chat', message, clientMsgId }))
  return clientMsgId
}

/** Sends and resolves with the ack (rejects on a refusal frame meant for it or at the timeout). */
export async function sendAcked(client: ChatClient, message: string, timeoutMs = 10_000, clientMsgId = newClientMsgId()): Promise<{ clientMsgId: string; id: number }> {
  sendTyped(client, message, clientMsgId)
  const ack = await client.next((f) => f.type === 'ack' && f.clientMsgId === clientMsgId, timeoutMs)
  return { clientMsgId, id: ack.id }
}

function lineOf(f: Frame, history: boolean): LineSeen | null {
  if ((f.type !== 'chat' && f.type !== 'system') || typeof f.id !== 'number') return null
  return { id: f.id, type: f.type, message: String(f.message), username: String(f.username ?? ''), history }
}

/** Every line a client received, in arrival order: the messages of its history frames and its live lines. */
export function receivedLines(client: ChatClient): LineSeen[] {
  const out: LineSeen[] = []
  for (const f of client.frames) {
    if (f.type === 'history' && Array.isArray(f.messages)) {
      for (const m of f.messages) {
        const line = lineOf(m, true)
        if (line) out.push(line)
      }
    } else {
      const line = lineOf(f, false)
      if (line) out.push(line)
    }
  }
  return out
}

/** What is wrong with a stream of lines: ids seen twice, ids going backwards. */
export function checkStream(lines: LineSeen[]): { duplicates: number[]; backwards: number[] } {
  const seen = new Set<number>()
  const duplicates: number[] = []
  const backwards: number[] = []
  let last = 0
  for (const { id } of lines) {
    if (seen.has(id)) duplicates.push(id)
    else if (id < last) backwards.push(id)
    seen.add(id)
    last = Math.max(last, id)
  }
  return { duplicates, backwards }
}

/** `id → text` of the lines, for comparing two users' views of the transcript. */
export function idMap(lines: LineSeen[]): Map<number, string> {
  return new Map(lines.map((l) => [l.id, `${l.type}:${l.username}:${l.message}`]))
}

/** Every line `node` holds, oldest first, paging /api/messages back to the start. */
export async function fetchTranscript(node: NodeHandle, pageLimit = 500): Promise<{ epoch: string; lines: LineSeen[]; complete: boolean }> {
  const pages: LineSeen[][] = []
  let before: number | undefined
  let epoch = ''
  let complete = true
  for (let i = 0; i < 1000; i++) {
    const query = before === undefined ? `limit=${pageLimit}` : `before=${before}&limit=${pageLimit}`
    const response = await node.fetch(`/api/messages?${query}`)
    if (!response.ok) throw new Error(`GET /api/messages?${query} at ${node.name}: HTTP ${response.status}`)
    const page = (await response.json()) as { epoch: string; messages: Frame[]; complete: boolean }
    if (epoch === '') epoch = page.epoch
    else if (page.epoch !== epoch) throw new Error(`${node.name}: epoch changed while paging (${epoch} → ${page.epoch})`)
    const lines = page.messages.map((m) => lineOf(m, true)).filter((l): l is LineSeen => l !== null)
    pages.unshift(lines)
    if (lines.length < pageLimit) {
      complete = page.complete
      break
    }
    before = lines[0]!.id
  }
  return { epoch, lines: pages.flat(), complete }
}

/** Where a client is in the transcript: the last line it received and the epoch its history named. */
export function resumePoint(client: ChatClient): { since: number; epoch: string } {
  const lines = receivedLines(client)
  const history = client.frames.filter((f) => f.type === 'history' && typeof f.epoch === 'string' && f.epoch !== '')
  return { since: lines.reduce((m, l) => Math.max(m, l.id), 0), epoch: history.at(-1)?.epoch ?? '' }
}

/** `chatUrl` plus `since` and `epoch`: a socket that resumes after line `since`. */
export function resumeUrl(httpUrl: string, username: string, at: { since: number; epoch: string }): string {
  const url = new URL('/ws/chat', httpUrl)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  url.searchParams.set('username', username)
  url.searchParams.set('since', String(at.since))
  if (at.epoch !== '') url.searchParams.set('epoch', at.epoch)
  return url.toString()
}

/** Arrival time (performance.now()) of each chat line a client receives live or in a history frame, by text. */
export function stampArrivals(client: ChatClient, into = new Map<string, number>()): Map<string, number> {
  client.ws.addEventListener('message', (event) => {
    if (typeof event.data !== 'string') return
    const now = performance.now()
    let frame: Frame
    try {
      frame = JSON.parse(event.data)
    } catch {
      return
    }
    const lines = frame.type === 'history' && Array.isArray(frame.messages) ? frame.messages : [frame]
    for (const l of lines) if (l?.type === 'chat' && typeof l.message === 'string' && !into.has(l.message)) into.set(l.message, now)
  })
  return into
}

export interface Outgoing {
  n: number
  text: string
  clientMsgId: string
  /** First send, and the ack's arrival (performance.now()). */
  sentAt: number
  ackedAt?: number
  id?: number
  /** The connection it was last sent on (0: none yet) and when. */
  sentOn: number
  lastSentAt: number
}

/** Unacknowledged this long on the same connection: sent again (a refusal, e.g. over the rate limit). */
const RESEND_AFTER_MS = 3000
/** Sent at once on a new connection (the server's bucket holds 40). */
const RESEND_BURST = 20

/**
 * A user sending numbered messages (`<prefix>#<n>`) with clientMsgIds at a steady rate, as the
 * page does: what is not acknowledged is sent again with the same clientMsgId, on the next
 * connection (`moveTo`) or after a while, oldest first and before anything new, so each is
 * taken once and in order. One send per tick: with ticks of 50 ms or more it stays within the
 * server's default rate limit.
 */
export class AckedSender {
  readonly out: Outgoing[] = []
  /** Acks that contradicted an earlier one (must stay empty). */
  readonly errors: string[] = []
  private timer: ReturnType<typeof setInterval> | null = null
  private readonly byId = new Map<string, Outgoing>()
  private connection = 1

  constructor(
    public client: ChatClient,
    readonly prefix: string,
  ) {
    this.listen(client)
  }

  /** One send every `intervalMs`: the oldest message due again, else a new one (none while the socket is closed). */
  start(intervalMs: number): void {
    this.timer = setInterval(() => this.tick(), intervalMs)
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /** Stops making new messages; keeps sending again what is not acknowledged. */
  drain(): void {
    this.draining = true
  }

  private draining = false

  private tick(): void {
    if (this.client.isClosed()) return
    const now = performance.now()
    const due = this.out.find((o) => o.id === undefined && (o.sentOn !== this.connection || now - o.lastSentAt > RESEND_AFTER_MS))
    if (due) return this.transmit(due, now)
    if (!this.draining) this.sendNext()
  }

  sendNext(): Outgoing {
    const n = this.out.length + 1
    const now = performance.now()
    const o: Outgoing = { n, text: `${this.prefix}#${n}`, clientMsgId: `${this.prefix}-${n}`, sentAt: now, sentOn: 0, lastSentAt: 0 }
    this.out.push(o)
    this.byId.set(o.clientMsgId, o)
    if (!this.client.isClosed()) this.transmit(o, now)
    return o
  }

  /** Continues on another connection (a resume, usually): what is not acknowledged goes again, oldest first. */
  moveTo(client: ChatClient): void {
    this.client = client
    this.connection++
    this.listen(client)
    const now = performance.now()
    for (const o of this.unacked().slice(0, RESEND_BURST)) this.transmit(o, now)
  }

  acked(): Outgoing[] {
    return this.out.filter((o) => o.id !== undefined)
  }

  unacked(): Outgoing[] {
    return this.out.filter((o) => o.id === undefined)
  }

  private transmit(o: Outgoing, now: number): void {
    sendTyped(this.client, o.text, o.clientMsgId)
    o.sentOn = this.connection
    o.lastSentAt = now
  }

  private listen(client: ChatClient): void {
    client.ws.addEventListener('message', (event) => {
      if (typeof event.data !== 'string' || !event.data.includes('"ack"')) return
      const frame = JSON.parse(event.data) as Frame
      const o = frame.type === 'ack' ? this.byId.get(frame.clientMsgId) : undefined
      if (!o) return
      if (o.id !== undefined && o.id !== frame.id) this.errors.push(`${o.text} acknowledged twice with different ids: ${o.id} then ${frame.id}`)
      o.id = frame.id
      o.ackedAt ??= performance.now()
    })
  }
}

/** Percentile `p` (0–100) of `values`, or NaN when empty. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

// A load-generator worker of bench/scale.ts: it holds a share of the benchmark's client
// connections in its own process (so the generator is not one JS thread), opens them, keeps
// their user lists as the page does, sends paced chat and measures its latency on the shared
// wall clock. It does what the parent asks over IPC (bench/scale/protocol.ts) and nothing else.
import { io, type Socket } from 'socket.io-client'
import { HISTOGRAM_BIN_MS, HISTOGRAM_BINS, wallNow, type Group, type Reply, type Request, type ServerKind, type Target, type Traffic } from './protocol'

interface Client {
  group: Group
  close(): void
  send(text: string): void
  /** username -> nodeAddress, for tracked clients of ours. */
  users: Map<string, string> | null
}

const clients: Client[] = []
const traffic: Traffic = { frames: 0, bytes: 0, byType: {} }
/** Per phase: deliveries and the latency histogram. */
const phases = new Map<number, { received: number; histogram: Uint32Array }>()

function phaseOf(id: number) {
  let p = phases.get(id)
  if (!p) phases.set(id, (p = { received: 0, histogram: new Uint32Array(HISTOGRAM_BINS) }))
  return p
}

/** A chat text of the load: `f|<phase>|<send time, epoch ms>|padding`. */
function receiveChat(text: string, t: number): void {
  if (!text.startsWith('f|')) return
  const bar = text.indexOf('|', 2)
  const phase = Number(text.slice(2, bar))
  const sentAt = Number(text.slice(bar + 1, text.indexOf('|', bar + 1)))
  const p = phaseOf(phase)
  p.received++
  p.histogram[Math.min(HISTOGRAM_BINS - 1, Math.max(0, Math.floor((t - sentAt) / HISTOGRAM_BIN_MS)))]!++
}

function count(type: string, bytes: number): void {
  traffic.frames++
  traffic.bytes += bytes
  const t = (traffic.byType[type] ??= { frames: 0, bytes: 0 })
  t.frames++
  t.bytes += bytes
}

type Entry = { username: string; nodeAddress: string }

/** Our frames (and the ceiling's, a subset): the user list kept as public/app.ts keeps it. */
function onOurFrame(client: Client, data: string): void {
  // {"type":"<type>"...: the type runs from index 9 to the next quote.
  const type = data.slice(9, data.indexOf('"', 9))
  count(type, data.length)
  if (type === 'chat') {
    const at = data.indexOf('"message":"f|')
    if (at >= 0) receiveChat(data.slice(at + 11, data.indexOf('"', at + 11)), wallNow())
    return
  }
  const list = client.users
  if (!list) return
  if (type === 'users') {
    const frame = JSON.parse(data) as { users: Entry[] }
    list.clear()
    for (const u of frame.users) list.set(u.username, u.nodeAddress)
  } else if (type === 'presence') {
    const frame = JSON.parse(data) as { joins?: Entry[]; leaves?: Entry[]; event?: 'join' | 'leave'; user?: Entry }
    const leaves = frame.leaves ?? (frame.event === 'leave' && frame.user ? [frame.user] : [])
    const joins = frame.joins ?? (frame.event === 'join' && frame.user ? [frame.user] : [])
    for (const u of leaves) if (list.get(u.username) === u.nodeAddress) list.delete(u.username)
    for (const u of joins) list.set(u.username, u.nodeAddress)
  }
}

function openOurs(target: Target, group: Group, timeoutMs: number): Promise<Client> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(target.url)
    const client: Client = { group, users: target.track ? new Map() : null, close: () => ws.close(1000), send: (text) => ws.send(text) }
    let welcomed = false
    const timer = setTimeout(() => {
      ws.close()
      reject(new Error(`${target.username}: no welcome within ${timeoutMs} ms`))
    }, timeoutMs)
    ws.onmessage = (event) => {
      const data = event.data as string
      if (!welcomed && data.startsWith('{"type":"welcome"')) {
        welcomed = true
        clearTimeout(timer)
        resolve(client)
      }
      onOurFrame(client, data)
    }
    ws.onclose = (event) => {
      if (welcomed) return
      clearTimeout(timer)
      reject(new Error(`${target.username}: closed ${event.code} ${event.reason} before welcome`))
    }
  })
}

function openSocketIo(target: Target, group: Group, timeoutMs: number): Promise<Client> {
  return new Promise((resolve, reject) => {
    const socket: Socket = io(target.url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: timeoutMs, auth: { username: target.username } })
    socket.on('chat', (frame: { message?: string }) => {
      count('chat', 0)
      receiveChat(frame.message ?? '', wallNow())
    })
    socket.once('connect', () => resolve({ group, users: null, close: () => socket.disconnect(), send: (text) => socket.emit('chat', text) }))
    socket.once('connect_error', (error) => reject(new Error(`${target.username}: ${error.message}`)))
  })
}

/** Handshakes refused before the upgrade (a shedding node answers 503: the client sees 1006) and tried again. */
let retries = 0
/** How long one connection keeps trying: a node that sheds a storm (its join budget) admits it later, as the page finds. */
const RETRY_FOR_MS = 180_000

/** Opens one target; a refusal before the welcome is tried again after a backoff, as the page does. */
async function openOne(kind: ServerKind, target: Target, group: Group): Promise<Client> {
  const giveUpAt = performance.now() + RETRY_FOR_MS
  for (let attempt = 1; ; attempt++) {
    try {
      return await (kind === 'sio' ? openSocketIo(target, group, 60_000) : openOurs(target, group, 60_000))
    } catch (error) {
      if (performance.now() > giveUpAt) throw error
      retries++
      await Bun.sleep(Math.min(1000, 50 * attempt))
    }
  }
}

/** Opens every target with at most `width` handshakes in flight. */
async function open(kind: ServerKind, group: Group, targets: Target[], width: number): Promise<void> {
  let next = 0
  const lane = async () => {
    while (next < targets.length) clients.push(await openOne(kind, targets[next++]!, group))
  }
  await Promise.all(Array.from({ length: Math.min(width, targets.length) }, lane))
}

function lists(group: Group, expected: number) {
  let tracked = 0
  let atExpected = 0
  let min = Infinity
  let max = -Infinity
  for (const c of clients) {
    if (c.group !== group || !c.users) continue
    tracked++
    if (c.users.size === expected) atExpected++
    min = Math.min(min, c.users.size)
    max = Math.max(max, c.users.size)
  }
  return { tracked, atExpected, sizes: { min, max } }
}

async function send(phase: number, perSecond: number, durationMs: number, senderCount: number): Promise<{ sent: number; lagMaxMs: number }> {
  const senders = clients.filter((c) => c.group === 'fanout').slice(0, senderCount)
  if (!senders.length || perSecond <= 0) return { sent: 0, lagMaxMs: 0 }
  const total = Math.round((perSecond * durationMs) / 1000)
  const padding = 'x'.repeat(40)
  const t0 = wallNow()
  let sent = 0
  let lagMaxMs = 0
  while (sent < total) {
    const t = wallNow()
    const due = Math.min(total, Math.floor(((t - t0) * perSecond) / 1000) + 1)
    if (due > sent) lagMaxMs = Math.max(lagMaxMs, t - (t0 + (sent * 1000) / perSecond))
    for (; sent < due; sent++) senders[sent % senders.length]!.send(`f|${phase}|${wallNow().toFixed(3)}|${padding}`)
    await Bun.sleep(1)
  }
  return { sent, lagMaxMs }
}

async function handle(r: Request): Promise<Reply> {
  switch (r.type) {
    case 'open': {
      const start = performance.now()
      await open(r.kind, r.group, r.targets, r.width)
      return { id: r.id, ok: true, type: 'opened', ms: performance.now() - start, retries }
    }
    case 'lists':
      return { id: r.id, ok: true, type: 'lists', ...lists(r.group, r.expected) }
    case 'close': {
      for (let i = clients.length - 1; i >= 0; i--) {
        if (clients[i]!.group !== r.group) continue
        clients[i]!.close()
        clients.splice(i, 1)
      }
      return { id: r.id, ok: true, type: 'closed' }
    }
    case 'send':
      return { id: r.id, ok: true, type: 'sent', ...(await send(r.phase, r.perSecond, r.durationMs, r.senders)) }
    case 'receipts': {
      const p = phaseOf(r.phase)
      const histogram: Array<[number, number]> = []
      p.histogram.forEach((n, bin) => n && histogram.push([bin, n]))
      return { id: r.id, ok: true, type: 'receipts', receipts: { received: p.received, histogram } }
    }
    case 'traffic':
      return { id: r.id, ok: true, type: 'traffic', traffic }
  }
}

process.on('message', (r: Request) => {
  handle(r).then(
    (reply) => process.send!(reply),
    (error: unknown) => process.send!({ id: r.id, ok: false, error: error instanceof Error ? error.message : String(error) } satisfies Reply),
  )
})
process.on('SIGTERM', () => process.exit(0))
process.send!({ id: 0, ok: true, type: 'closed' } satisfies Reply)

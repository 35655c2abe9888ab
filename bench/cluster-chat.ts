// Chat benchmark: what the cluster hop costs. Prints figures, asserts nothing about timings.
//
//   bun run bench/cluster-chat.ts            # full run, well under 90 s on 2 cores
//   bun run bench/cluster-chat.ts --quick    # smoke run, a few seconds of load
//   bun run bench/cluster-chat.ts --help
//
// A: one node, C clients, S of them send M messages each at a paced total rate.
// B: three nodes, the same C clients spread evenly, the same load. B - A = the cluster hop.
// Then: RSS per idle WebSocket connection on a fresh node, and the cost of that join storm.
//
// Every client runs in this process, so send and receive times come from one clock
// (performance.now). The message text carries the global message id and its send time.
// The client process shares the 2 cores with the nodes: its CPU time is printed, and a
// warning if it may have been the bottleneck.
//
// bench/compare.ts imports the measuring code from here (ChatLoad drives and measures a load
// over any client protocol; runScenario, runMemory, the tables); importing runs nothing.
import { cpus, release } from 'node:os'
import { readFileSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { runningNodes, startCluster, startNode, stopAll, type NodeHandle } from '../test/support/cluster'

/**
 * The per-connection rate limit and the connection caps are off here: every simulated client
 * comes from one address, and the unpaced phase sends as fast as it can on purpose.
 */
export const BENCH_NODE_ARGS = ['--rate-limit', '0', '--connect-rate', '0', '--max-fanout', '0', '--max-connections-per-ip', '1000000', '--max-connections', '1000000']
import { chatUrl } from '../test/support/ws-client'

// ---------------------------------------------------------------- options

export interface Options {
  clients: number
  senders: number
  messages: number
  /** Messages per second, all senders together; 0 = as fast as the client loop can send. */
  rate: number
  /** Messages per sender in the unpaced (saturation) phase; 0 skips it. */
  burstMessages: number
  idle: number
  joinSamples: number
  quick: boolean
}

/** The flags of the load shape, shared with bench/compare.ts. */
export const LOAD_FLAGS_HELP = `  --clients N       chat clients per scenario (default 100; quick 12)
  --senders N       how many of them send (default 20; quick 4)
  --messages N      messages per sender (default 200; quick 25)
  --rate N          messages per second, all senders together; 0 = unpaced (default 400; quick 200)
  --burst N         then N messages per sender, unpaced, for a saturation figure; 0 skips
                    (default: same as --messages)
  --idle N          idle connections for the memory figure; 0 skips it (default 2000; quick 200)
  --quick           small numbers for a smoke run`

const HELP = `usage: bun run bench/cluster-chat.ts [flags]
${LOAD_FLAGS_HELP}
  --join-samples N  joins timed per scenario (default 5; quick 3)`

/**
 * Parses the load-shape flags (and `extra` ones, returned as they are); prints `help` and exits
 * on --help, an unknown flag or a bad value (status 2).
 */
export function parseOptions(
  args: string[],
  help: string,
  extra: ParseArgsConfig['options'] = {},
): { options: Options; extra: Record<string, string | boolean | undefined> } {
  let parsed: Record<string, string | boolean | undefined>
  try {
    parsed = parseArgs({
      args,
      options: {
        clients: { type: 'string' },
        senders: { type: 'string' },
        messages: { type: 'string' },
        rate: { type: 'string' },
        burst: { type: 'string' },
        idle: { type: 'string' },
        quick: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
        ...extra,
      },
      strict: true,
      allowPositionals: false,
    }).values as Record<string, string | boolean | undefined>
  } catch (error) {
    console.error(`${(error as Error).message}\n${help}`)
    process.exit(2)
  }
  if (parsed.help) {
    console.log(help)
    process.exit(0)
  }
  const quick = parsed.quick === true
  const int = (name: string, fallback: number, min: number): number => {
    const raw = parsed[name]
    if (typeof raw !== 'string') return fallback
    const n = Number(raw)
    if (!Number.isSafeInteger(n) || n < min) {
      console.error(`--${name} needs a whole number >= ${min}, got ${JSON.stringify(raw)}`)
      process.exit(2)
    }
    return n
  }
  const messages = int('messages', quick ? 25 : 200, 1)
  const o: Options = {
    quick,
    clients: int('clients', quick ? 12 : 100, 1),
    senders: int('senders', quick ? 4 : 20, 1),
    messages,
    rate: int('rate', quick ? 200 : 400, 0),
    burstMessages: int('burst', messages, 0),
    idle: int('idle', quick ? 200 : 2000, 0),
    joinSamples: int('join-samples', quick ? 3 : 5, 0),
  }
  if (o.senders > o.clients) {
    console.error(`--senders (${o.senders}) cannot exceed --clients (${o.clients})`)
    process.exit(2)
  }
  return { options: o, extra: parsed }
}

// ---------------------------------------------------------------- small helpers

export const now = () => performance.now()
export const sleep = (ms: number) => Bun.sleep(ms)

function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]!
}

function sortedCopy(values: ArrayLike<number>, n = values.length): Float64Array {
  const out = new Float64Array(n)
  for (let i = 0; i < n; i++) out[i] = values[i]!
  return out.sort()
}

const median = (values: number[]) => percentile(sortedCopy(values), 50)

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  const match = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match ? Number(match[1]) : NaN
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / clockTicks
}

export function shell(command: string): string {
  try {
    const result = Bun.spawnSync(['sh', '-c', command], { stdout: 'pipe', stderr: 'ignore' })
    return result.stdout.toString().trim()
  } catch {
    return ''
  }
}

const clockTicks = Number(shell('getconf CLK_TCK')) || 100

export function fmt(value: number, digits = 1): string {
  if (!Number.isFinite(value)) return 'n/a'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export const int = (value: number) => (Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : 'n/a')

// ---------------------------------------------------------------- clients

/** Every socket this process opened, so an interrupt or a failure can close them all. */
const openSockets = new Set<WebSocket>()

type FrameHandler = (data: string) => void

/**
 * Opens `ws://.../ws/chat?username=NAME`; resolves with the socket on the `welcome` frame.
 * `onFrame` sees every text frame (including the welcome), unparsed.
 */
function connect(node: NodeHandle, username: string, onFrame: FrameHandler, timeoutMs = 10_000): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(chatUrl(node.httpUrl, username))
    openSockets.add(ws)
    let welcomed = false
    const timer = setTimeout(() => {
      ws.close()
      reject(new Error(`${username}: no welcome from ${node.httpUrl} within ${timeoutMs} ms`))
    }, timeoutMs)
    ws.onmessage = (event) => {
      const data = event.data
      if (typeof data !== 'string') return
      if (!welcomed && data.startsWith('{"type":"welcome"')) {
        welcomed = true
        clearTimeout(timer)
        resolve(ws)
      }
      onFrame(data)
    }
    ws.onclose = (event) => {
      openSockets.delete(ws)
      if (!welcomed) {
        clearTimeout(timer)
        reject(new Error(`${username}: closed ${event.code} ${JSON.stringify(event.reason)} before welcome`))
      }
    }
  })
}

/** Closes sockets and waits (bounded) for their close events. */
async function closeAll(sockets: Iterable<WebSocket>, timeoutMs = 5000): Promise<void> {
  const waits: Promise<unknown>[] = []
  for (const ws of sockets) {
    if (ws.readyState === WebSocket.CLOSED) continue
    waits.push(new Promise((resolve) => ws.addEventListener('close', resolve, { once: true })))
    ws.close(1000)
  }
  await Promise.race([Promise.all(waits), sleep(timeoutMs)])
}

/** Runs `make(i)` for i in [0, n) with at most `width` in flight. */
export async function inBatches<T>(n: number, width: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = []
  for (let start = 0; start < n; start += width) {
    const batch = await Promise.all(Array.from({ length: Math.min(width, n - start) }, (_, k) => make(start + k)))
    out.push(...batch)
  }
  return out
}

// ---------------------------------------------------------------- scenario (A or B)

interface JoinSample {
  /** Joiner's connect() start to its welcome. */
  welcome: number
  /** To the `system` join frame at an observer on the joiner's node. */
  sameNode: number
  /** To the `system` join frame at observers on each other node (one value per node). */
  otherNodes: number[]
  /** To the `presence` join frame naming the joiner, at observers on each other node. */
  otherNodesPresence: number[]
}

export interface LoadFigures {
  /** Messages per second, all senders together; 0 = unpaced. */
  rate: number
  sent: number
  expected: number
  received: number
  duplicates: number
  lost: number
  /** First send to last receipt (or to the end of the drain when something was lost). */
  elapsedMs: number
  latency: { p50: number; p95: number; p99: number; max: number; mean: number }
  sameNode: { p50: number; p99: number; count: number }
  crossNode: { p50: number; p99: number; count: number }
  sendLag: { p99: number; max: number }
  clientCpuPct: number
  serverCpuS: number[]
  /** How long the server CPU figures were measured over. */
  cpuWindowMs: number
}

export interface ScenarioResult {
  label: string
  nodeCount: number
  clientsPerNode: number[]
  connectMs: number
  /** Node CPU while every client is connected and nobody talks, % of one core. */
  idleCpuPct: number[]
  paced: LoadFigures
  burst: LoadFigures | null
  /** Chat frames that belong to no running phase (should stay 0). */
  stray: number
  joins: JoinSample[]
}

/** Receipt bookkeeping of one load phase: `seen` is indexed [client * total + message]. */
class Phase {
  readonly seen: Uint8Array
  readonly sameLat: Float64Array
  readonly crossLat: Float64Array
  sameCount = 0
  crossCount = 0
  received = 0
  duplicates = 0
  lastReceipt = 0

  constructor(
    readonly id: number,
    readonly total: number,
    clients: number,
  ) {
    this.seen = new Uint8Array(clients * total)
    this.sameLat = new Float64Array(clients * total)
    this.crossLat = new Float64Array(clients * total)
  }

  receive(client: number, id: number, sameNode: boolean, latency: number, t: number): void {
    const slot = client * this.total + id
    if (this.seen[slot]) {
      this.duplicates++
      return
    }
    this.seen[slot] = 1
    this.received++
    this.lastReceipt = t
    if (sameNode) this.sameLat[this.sameCount++] = latency
    else this.crossLat[this.crossCount++] = latency
  }
}

const PADDING = 'x'.repeat(40)

/** What a chat load needs from the servers under test and their clients, whatever the protocol. */
export interface LoadTarget {
  /** Number of connected clients, numbered 0..clients-1; clients 0..senders-1 send. */
  clients: number
  /** Server processes, for their CPU time. */
  pids: number[]
  /** Which server node client `i` is connected to. */
  nodeOf(client: number): number
  /** Client `sender` sends one chat message with this text. */
  send(sender: number, text: string): void
}

/**
 * Runs load phases against a LoadTarget and measures them. The target's clients hand every chat
 * text they receive to `receive`. Message g of a phase goes out at t0 + g/rate (or at once), from
 * sender g % S, to everyone; its text is `b|<phase>|<id>|<sender>|<send time>|padding`.
 */
export class ChatLoad {
  private phase: Phase | null = null
  private phases = 0
  /** Chat texts that belong to no running phase (should stay 0). */
  stray = 0

  constructor(readonly target: LoadTarget) {}

  /** Client `client` received a chat message with `text` at `t` (this process's clock). */
  receive(client: number, text: string, t = now()): void {
    const phase = this.phase
    // b|<phase>|<message id>|<sender client>|<send time, ms on this process's clock>|padding
    const parts = text.split('|')
    const id = Number(parts[2])
    if (parts[0] !== 'b' || !phase || Number(parts[1]) !== phase.id || !(id >= 0 && id < phase.total)) {
      this.stray++
      return
    }
    const nodeOf = this.target.nodeOf
    phase.receive(client, id, nodeOf(Number(parts[3])) === nodeOf(client), t - Number(parts[4]), t)
  }

  /** The paced phase, then the unpaced one (unless --burst 0), after the servers' idle CPU. */
  async phasesOf(o: Options): Promise<Pick<ScenarioResult, 'idleCpuPct' | 'paced' | 'burst'>> {
    // Let the last connection frames pass; meanwhile, the nodes' idle CPU.
    const idleCpuPct = await cpuPct(this.target.pids, o.quick ? 500 : 1500)
    const paced = await this.run(o.senders, o.messages, o.rate)
    const burst = o.burstMessages > 0 ? await this.run(o.senders, o.burstMessages, 0) : null
    return { idleCpuPct, paced, burst }
  }

  /** One phase: S senders send `messagesPerSender` each, `rate` msg/s in total (0 = unpaced). */
  async run(S: number, messagesPerSender: number, rate: number): Promise<LoadFigures> {
    const { clients: C, pids } = this.target
    const total = S * messagesPerSender
    const expected = total * C // every client, the sender too, gets every message
    const p = new Phase(++this.phases, total, C)
    this.phase = p
    const lags = new Float64Array(total)
    const intervalMs = rate > 0 ? 1000 / rate : 0
    const cpu0 = pids.map(cpuSeconds)
    const cpuFrom = now()
    const client0 = process.cpuUsage()
    const t0 = now()
    let g = 0
    while (g < total) {
      const tick = now()
      let batch = 0
      while (g < total && (intervalMs === 0 || t0 + g * intervalMs <= tick)) {
        const sender = g % S
        const sentAt = now()
        lags[g] = intervalMs === 0 ? 0 : sentAt - (t0 + g * intervalMs)
        this.target.send(sender, `b|${p.id}|${g}|${sender}|${sentAt.toFixed(3)}|${PADDING}`)
        g++
        // Unpaced: still let receipts in now and then, or every frame waits for the last send.
        if (intervalMs === 0 && ++batch >= 200) break
      }
      await sleep(intervalMs === 0 ? 0 : 1)
    }
    // Drain: until everything arrived, or nothing moved for 3 s (lost), at most 30 s.
    const drainDeadline = now() + 30_000
    let lastCount = -1
    let lastMove = now()
    while (p.received < expected && now() < drainDeadline) {
      if (p.received !== lastCount) {
        lastCount = p.received
        lastMove = now()
      } else if (now() - lastMove > 3000) break
      await sleep(10)
    }
    const clientUsage = process.cpuUsage(client0)
    const elapsedMs = (p.received === expected ? p.lastReceipt : now()) - t0
    const cpu1 = pids.map(cpuSeconds)
    const cpuWindowMs = now() - cpuFrom
    await sleep(200) // late duplicates would show up now
    this.phase = null

    const same = p.sameLat.subarray(0, p.sameCount).sort()
    const cross = p.crossLat.subarray(0, p.crossCount).sort()
    const all = new Float64Array(p.sameCount + p.crossCount)
    all.set(same)
    all.set(cross, same.length)
    all.sort()
    let sum = 0
    for (const v of all) sum += v
    lags.sort()
    return {
      rate,
      sent: total,
      expected,
      received: p.received,
      duplicates: p.duplicates,
      lost: expected - p.received,
      elapsedMs,
      latency: {
        p50: percentile(all, 50),
        p95: percentile(all, 95),
        p99: percentile(all, 99),
        max: all.length ? all[all.length - 1]! : NaN,
        mean: all.length ? sum / all.length : NaN,
      },
      sameNode: { p50: percentile(same, 50), p99: percentile(same, 99), count: same.length },
      crossNode: { p50: percentile(cross, 50), p99: percentile(cross, 99), count: cross.length },
      sendLag: { p99: percentile(lags, 99), max: lags.length ? lags[lags.length - 1]! : NaN },
      clientCpuPct: ((clientUsage.user + clientUsage.system) / 1000 / elapsedMs) * 100,
      serverCpuS: cpu1.map((c, i) => c - cpu0[i]!),
      cpuWindowMs,
    }
  }
}

/** CPU of each process over the next `ms`, in % of one core. */
async function cpuPct(pids: number[], ms: number): Promise<number[]> {
  const cpu0 = pids.map(cpuSeconds)
  const start = now()
  await sleep(ms)
  return pids.map((pid, i) => ((cpuSeconds(pid) - cpu0[i]!) * 1e5) / (now() - start))
}

/** Client i sits on node i % nodes: the per-node client counts. */
export const spread = (clients: number, nodes: number) =>
  Array.from({ length: nodes }, (_, n) => Math.floor(clients / nodes) + (n < clients % nodes ? 1 : 0))

export async function runScenario(label: string, nodes: NodeHandle[], o: Options): Promise<ScenarioResult> {
  const C = o.clients
  const nodeOf = (i: number) => i % nodes.length
  const prefix = label.toLowerCase()
  let sockets: WebSocket[] = []
  const load = new ChatLoad({
    clients: C,
    pids: nodes.map((n) => n.proc.pid),
    nodeOf,
    send: (sender, text) => sockets[sender]!.send(text),
  })
  // Each client's user list as the page keeps it: the `users` frame it gets once, on connect,
  // then one `presence` delta per change (username -> nodeAddress).
  const userLists = Array.from({ length: C }, () => new Map<string, string>())
  const usersSeen = new Int32Array(C)
  // Join watches: username -> what to do when an observer sees it.
  const joinWatch = new Map<string, { system: (client: number) => void; presence: (client: number) => void }>()

  const onFrame = (client: number) => (data: string) => {
    if (data.startsWith('{"type":"chat"')) {
      const t = now()
      load.receive(client, (JSON.parse(data) as { message?: string }).message ?? '', t)
      return
    }
    if (data.startsWith('{"type":"presence"')) {
      // Batched frames (leaves, then joins); the one-change form of earlier releases too, so
      // bench/transcript-cost.ts can run this against them.
      type Entry = { username: string; nodeAddress: string }
      const frame = JSON.parse(data) as { joins?: Entry[]; leaves?: Entry[]; event?: 'join' | 'leave'; user?: Entry }
      const joins = frame.joins ?? (frame.event === 'join' ? [frame.user!] : [])
      const leaves = frame.leaves ?? (frame.event === 'leave' ? [frame.user!] : [])
      const list = userLists[client]!
      for (const u of leaves) if (list.get(u.username) === u.nodeAddress) list.delete(u.username)
      for (const u of joins) {
        list.set(u.username, u.nodeAddress)
        joinWatch.get(u.username)?.presence(client)
      }
      usersSeen[client] = list.size
      return
    }
    if (data.startsWith('{"type":"users"')) {
      // Once per connection; it already reflects every delta published before it.
      const frame = JSON.parse(data) as { users: { username: string; nodeAddress: string }[] }
      userLists[client] = new Map(frame.users.map((u) => [u.username, u.nodeAddress]))
      usersSeen[client] = frame.users.length
      return
    }
    if (data.startsWith('{"type":"system"') && joinWatch.size) {
      const frame = JSON.parse(data) as { event: string; username: string }
      if (frame.event === 'join') joinWatch.get(frame.username)?.system(client)
    }
  }

  // 1. Connect and let presence settle everywhere.
  const connectStart = now()
  sockets = await inBatches(C, 50, (i) => connect(nodes[nodeOf(i)]!, `${prefix}-u${i}`, onFrame(i)))
  const connectMs = now() - connectStart
  const settleDeadline = now() + 30_000
  for (;;) {
    const counts = await Promise.all(nodes.map((n) => n.users().then((u) => u.count as number).catch(() => -1)))
    if (counts.every((c) => c === C) && usersSeen.every((c) => c === C)) break
    if (now() > settleDeadline) {
      throw new Error(
        `${label}: presence did not settle: node user counts ${counts.join('/')}, ` +
          `clients seeing all ${C}: ${usersSeen.filter((c) => c === C).length}`,
      )
    }
    await sleep(50)
  }
  // 2. Load.
  const { idleCpuPct, paced, burst } = await load.phasesOf(o)

  // 3. Joins: a new user connects; one observer on every node waits for its `system` join frame
  //    and for the `presence` join frame that names it.
  const observers = nodes.map((_, n) => n) // client n sits on node n
  const joins: JoinSample[] = []
  for (let k = 0; k < o.joinSamples && C >= nodes.length; k++) {
    const home = k % nodes.length
    const name = `${prefix}-join${k}`
    const systemAt = new Map<number, number>()
    const presenceAt = new Map<number, number>()
    let allSeen!: () => void
    const done = new Promise<void>((resolve) => (allSeen = resolve))
    const check = () => {
      if (observers.every((c) => systemAt.has(c) && presenceAt.has(c))) allSeen()
    }
    const mark = (m: Map<number, number>) => (c: number) => {
      if (observers.includes(c) && !m.has(c)) m.set(c, now())
      check()
    }
    joinWatch.set(name, { system: mark(systemAt), presence: mark(presenceAt) })
    const start = now()
    const joiner = await connect(nodes[home]!, name, () => {})
    const welcome = now() - start
    await Promise.race([done, sleep(5000)])
    joinWatch.delete(name)
    const at = (m: Map<number, number>, c: number) => (m.has(c) ? m.get(c)! - start : NaN)
    const others = observers.filter((c) => c !== home)
    joins.push({
      welcome,
      sameNode: at(systemAt, home),
      otherNodes: others.map((c) => at(systemAt, c)),
      otherNodesPresence: others.map((c) => at(presenceAt, c)),
    })
    await closeAll([joiner])
    await sleep(150) // let the leave frames pass before the next sample
  }

  await closeAll(sockets)
  const clientsPerNode = spread(C, nodes.length)
  return { label, nodeCount: nodes.length, clientsPerNode, connectMs, idleCpuPct, paced, burst, stray: load.stray, joins }
}

// ---------------------------------------------------------------- memory per idle connection

export interface MemoryResult {
  connections: number
  rssBeforeKiB: number
  rssAfterKiB: number
  rssAfterCloseKiB: number
  openMs: number
  settleMs: number
  serverCpuS: number
  frames: number
  bytes: number
  /** One per connection, on connect: the whole user list at that moment. */
  usersFrames: number
  usersBytes: number
  presenceFrames: number
  presenceBytes: number
  systemFrames: number
  systemBytes: number
  droppedByServer: number
  clientCpuS: number
  leftAfterClose: number
}

export async function runMemory(k: number): Promise<MemoryResult> {
  const node = track(await startNode({ name: 'mem', args: BENCH_NODE_ARGS }))
  const pid = node.proc.pid
  try {
    await sleep(1000) // startup garbage, timers, first GC
    const rssBeforeKiB = rssKiB(pid)
    const cpu0 = cpuSeconds(pid)
    const client0 = process.cpuUsage()
    let frames = 0
    let bytes = 0
    let usersFrames = 0
    let usersBytes = 0
    let presenceFrames = 0
    let presenceBytes = 0
    let systemFrames = 0
    let systemBytes = 0
    // Idle clients: they read (so the server never hits its backpressure limit) and do nothing else.
    const onFrame = (data: string) => {
      frames++
      bytes += data.length
      // {"type":"presence"... / {"type":"system"... / {"type":"users"...: the 10th character tells them apart.
      const kind = data.charCodeAt(9)
      if (kind === 112 /* p */) {
        presenceFrames++
        presenceBytes += data.length
      } else if (kind === 115 /* s */) {
        systemFrames++
        systemBytes += data.length
      } else if (kind === 117 /* u */) {
        usersFrames++
        usersBytes += data.length
      }
    }
    const start = now()
    const sockets = await inBatches(k, 200, (i) => connect(node, `idle-${i}`, onFrame, 30_000))
    const openMs = now() - start
    // Wait for the join storm's broadcasts to stop arriving.
    let last = -1
    while (bytes !== last && now() - start < 60_000) {
      last = bytes
      await sleep(500)
    }
    const settleMs = now() - start - 500
    const rssAfterKiB = rssKiB(pid)
    const serverCpuS = cpuSeconds(pid) - cpu0
    const clientUsage = process.cpuUsage(client0)
    const droppedByServer = sockets.filter((ws) => ws.readyState !== WebSocket.OPEN).length
    await closeAll(sockets, 15_000)
    let users = -1
    for (let i = 0; i < 100; i++) {
      users = await node.users().then((u) => u.count as number).catch(() => -1)
      if (users === 0) break
      await sleep(100)
    }
    await sleep(300)
    return {
      connections: k,
      rssBeforeKiB,
      rssAfterKiB,
      rssAfterCloseKiB: rssKiB(pid),
      openMs,
      settleMs,
      serverCpuS,
      frames,
      bytes,
      usersFrames,
      usersBytes,
      presenceFrames,
      presenceBytes,
      systemFrames,
      systemBytes,
      droppedByServer,
      clientCpuS: (clientUsage.user + clientUsage.system) / 1e6,
      leftAfterClose: users,
    }
  } finally {
    await node.stop(5000)
  }
}

// ---------------------------------------------------------------- report

function report(o: Options, machine: string[], a: ScenarioResult | null, b: ScenarioResult | null, mem: MemoryResult | null, totalMs: number) {
  const out: string[] = []
  out.push('', '='.repeat(80), 'cluster-chat benchmark', '='.repeat(80))
  out.push(...machine)
  out.push(
    `load: ${o.clients} clients, of which ${o.senders} send; paced phase ${o.senders} x ${o.messages} = ${int(o.senders * o.messages)} messages ` +
      `${o.rate > 0 ? `at ${o.rate} msg/s` : 'unpaced'}` +
      (o.burstMessages > 0 ? `, then unpaced phase ${o.senders} x ${o.burstMessages} = ${int(o.senders * o.burstMessages)} messages` : '') +
      `; every message goes to all ${o.clients} clients (sender included), so deliveries = messages x ${o.clients}`,
  )
  const scenarios = [a, b].filter((s): s is ScenarioResult => s !== null)

  // Load phases: A paced, B paced, A unpaced, B unpaced.
  const loads: LoadColumn[] = []
  for (const s of scenarios) loads.push({ title: `${s.label} paced`, s, f: s.paced })
  for (const s of scenarios) if (s.burst) loads.push({ title: `${s.label} unpaced`, s, f: s.burst })
  if (loads.length) out.push('', loadTable(loads))

  if (scenarios.length) {
    const col = (fn: (s: ScenarioResult) => string) => scenarios.map(fn)
    const joinMedian = (s: ScenarioResult, fn: (x: JoinSample) => number[]) => median(s.joins.flatMap(fn).filter(Number.isFinite))
    out.push(
      '',
      table([
        ['SCENARIO', ...col((s) => `${s.label} (${s.nodeCount} node${s.nodeCount > 1 ? 's' : ''})`)],
        ['clients per node', ...col((s) => s.clientsPerNode.join('/'))],
        ['connect all clients ms (50 at a time)', ...col((s) => fmt(s.connectMs, 0))],
        ['node CPU with clients connected, idle, %', ...col((s) => s.idleCpuPct.map((c) => fmt(c, 1)).join('/'))],
        [`join: connect -> own welcome, p50 ms (${o.joinSamples} joins)`, ...col((s) => fmt(median(s.joins.map((x) => x.welcome)), 1))],
        ['join: connect -> `system` frame, same node, p50 ms', ...col((s) => fmt(median(s.joins.map((x) => x.sameNode)), 1))],
        ['join: connect -> `system` frame, other nodes, p50 ms', ...col((s) => (s.nodeCount > 1 ? fmt(joinMedian(s, (x) => x.otherNodes), 1) : '-'))],
        ['join: connect -> `presence` join, other nodes, p50 ms', ...col((s) => (s.nodeCount > 1 ? fmt(joinMedian(s, (x) => x.otherNodesPresence), 1) : '-'))],
        ['chat frames outside any phase (should be 0)', ...col((s) => int(s.stray))],
      ]),
    )
  }

  if (a && b) {
    const hop = (x: LoadFigures, y: LoadFigures, what: string) =>
      `${what}: latency p50 ${signed(y.latency.p50 - x.latency.p50)} ms, p99 ${signed(y.latency.p99 - x.latency.p99)} ms; ` +
      `in B cross-node minus same-node p50 ${signed(y.crossNode.p50 - y.sameNode.p50)} ms; ` +
      `server CPU per delivery x${fmt(perDelivery(y) / perDelivery(x), 2)} (less idle x${fmt(aboveIdle(y, b) / y.received / (aboveIdle(x, a) / x.received), 2)}); delivered msgs/s x${fmt(y.received / y.elapsedMs / (x.received / x.elapsedMs), 2)}`
    out.push('', 'cluster hop (B vs A)')
    out.push(`  ${hop(a.paced, b.paced, 'paced')}`)
    if (a.burst && b.burst) out.push(`  ${hop(a.burst, b.burst, 'unpaced')}`)
  }

  if (mem) {
    const delta = mem.rssAfterKiB - mem.rssBeforeKiB
    out.push(
      '',
      table([
        ['MEMORY: idle WebSocket connections, one fresh node', ''],
        ['connections opened (200 at a time)', int(mem.connections)],
        ['node RSS before / after / after closing all, MiB', `${fmt(mem.rssBeforeKiB / 1024)} / ${fmt(mem.rssAfterKiB / 1024)} / ${fmt(mem.rssAfterCloseKiB / 1024)}`],
        ['RSS per connection, KiB', fmt(delta / mem.connections, 2)],
        ['open all ms / until the broadcasts stop ms', `${fmt(mem.openMs, 0)} / ${fmt(mem.settleMs, 0)}`],
        ['join storm: frames pushed to the idle clients', int(mem.frames)],
        ['join storm: `presence` / `system` / `users` (once per connection) frames', `${int(mem.presenceFrames)} / ${int(mem.systemFrames)} / ${int(mem.usersFrames)}`],
        ['join storm: MiB pushed, `presence` / `system` / `users` / total', `${fmt(mem.presenceBytes / 2 ** 20)} / ${fmt(mem.systemBytes / 2 ** 20)} / ${fmt(mem.usersBytes / 2 ** 20)} / ${fmt(mem.bytes / 2 ** 20)}`],
        ['join storm: bytes pushed per connection, total', int(mem.bytes / mem.connections)],
        ['join storm: node CPU s / client CPU s', `${fmt(mem.serverCpuS, 2)} / ${fmt(mem.clientCpuS, 2)}`],
        ['connections the server closed during the storm', int(mem.droppedByServer)],
        ['users left on the node after closing all', int(mem.leftAfterClose)],
      ]),
    )
  }

  const warnings = loadWarnings(loads)
  for (const s of scenarios) if (s.stray) warnings.push(`${s.label}: ${int(s.stray)} chat frames outside any phase`)
  if (mem?.droppedByServer) warnings.push(`memory: the server closed ${mem.droppedByServer} idle connections during the join storm`)
  if (warnings.length) out.push('', ...warnings.map((w) => `!! ${w}`))

  out.push('', `the 2 cores are shared by the nodes and this client process (${fmt(cpus().length, 0)} CPUs): figures are relative, not capacity claims`)
  out.push(
    `node processes started: ${startedPids.size}; still running after the final stop: ${leftBehind.length}` +
      (leftBehind.length ? ` (pids ${leftBehind.join(', ')}, killed with SIGKILL)` : ''),
  )
  if (Number.isFinite(clusterStopMs)) out.push(`stopping the 3-node cluster (SIGTERM to all at once, graceful leave): ${fmt(clusterStopMs / 1000, 2)} s`)
  out.push(`total run time ${fmt(totalMs / 1000)} s`)
  console.log(out.join('\n'))
}

/** One load phase of one scenario, a column of the LOAD table. */
export interface LoadColumn {
  title: string
  s: ScenarioResult
  f: LoadFigures
}

/** The LOAD table: one column per phase. */
export function loadTable(loads: LoadColumn[]): string {
  const col = (fn: (f: LoadFigures, s: ScenarioResult) => string) => loads.map(({ f, s }) => fn(f, s))
  return table([
    ['LOAD', ...loads.map((l) => `${l.title} (${l.s.nodeCount} node${l.s.nodeCount > 1 ? 's' : ''})`)],
    ['offered msg/s (sends)', ...col((f) => (f.rate > 0 ? int(f.rate) : 'max'))],
    ['messages sent', ...col((f) => int(f.sent))],
    ['expected deliveries (msgs x receivers)', ...col((f) => int(f.expected))],
    ['received', ...col((f) => int(f.received))],
    ['LOST (expected - received)', ...col((f) => int(f.lost))],
    ['duplicates', ...col((f) => int(f.duplicates))],
    ['delivered msgs/s (first send..last receipt)', ...col((f) => int(deliveredPerS(f)))],
    ['latency p50 ms', ...col((f) => fmt(f.latency.p50, 2))],
    ['latency p95 ms', ...col((f) => fmt(f.latency.p95, 2))],
    ['latency p99 ms', ...col((f) => fmt(f.latency.p99, 2))],
    ['latency max ms', ...col((f) => fmt(f.latency.max, 2))],
    ['latency mean ms', ...col((f) => fmt(f.latency.mean, 2))],
    ['  same-node deliveries p50 / p99 ms', ...col((f) => `${fmt(f.sameNode.p50, 2)} / ${fmt(f.sameNode.p99, 2)}`)],
    ['  cross-node deliveries p50 / p99 ms', ...col((f) => (f.crossNode.count ? `${fmt(f.crossNode.p50, 2)} / ${fmt(f.crossNode.p99, 2)}` : '-'))],
    ['server CPU s, per server process', ...col((f) => f.serverCpuS.map((c) => fmt(c, 2)).join('/'))],
    ['server CPU us per delivery, all server processes', ...col((f) => fmt(perDelivery(f) * 1e6, 2))],
    ['  the same, less the servers\' idle CPU', ...col((f, s) => fmt((aboveIdle(f, s) * 1e6) / Math.max(1, f.received), 2))],
    ['client (this process) CPU, % of one core', ...col((f) => fmt(f.clientCpuPct, 0))],
    ['send lag behind schedule p99 / max ms', ...col((f) => (f.rate > 0 ? `${fmt(f.sendLag.p99, 1)} / ${fmt(f.sendLag.max, 1)}` : '-'))],
  ])
}

/** Lost or duplicate deliveries, a saturated client, a client that could not keep the pace. */
export function loadWarnings(loads: LoadColumn[]): string[] {
  const warnings: string[] = []
  for (const { title, f } of loads) {
    if (f.lost !== 0) warnings.push(`${title}: ${int(f.lost)} deliveries LOST (expected ${int(f.expected)}, received ${int(f.received)})`)
    if (f.duplicates !== 0) warnings.push(`${title}: ${int(f.duplicates)} duplicate deliveries`)
    if (f.clientCpuPct > 75) {
      warnings.push(
        `${title}: this client process used ${fmt(f.clientCpuPct, 0)}% of a core: it is (close to) the bottleneck, ` +
          'and its own queueing is part of the latency',
      )
    }
    if (f.rate > 0 && f.sendLag.p99 > 20) warnings.push(`${title}: sends ran up to ${fmt(f.sendLag.max, 0)} ms behind schedule: the client could not keep the pace`)
  }
  return warnings
}

export function table(rows: string[][]): string {
  const widths: number[] = []
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)))
  return rows.map((row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('   ').trimEnd()).join('\n')
}

const summary = (s: ScenarioResult) =>
  [s.paced, s.burst]
    .filter((f): f is LoadFigures => f !== null)
    .map((f) => `${f.rate > 0 ? 'paced' : 'unpaced'} ${int(f.received)}/${int(f.expected)} delivered, p50 ${fmt(f.latency.p50, 2)} ms`)
    .join('; ')
/** Server CPU seconds of a phase minus what the nodes burn idle (timers, heartbeats) over as long. */
export const aboveIdle = (f: LoadFigures, s: ScenarioResult) =>
  f.serverCpuS.reduce((x, y) => x + y, 0) - (s.idleCpuPct.reduce((x, y) => x + y, 0) / 100) * (f.cpuWindowMs / 1000)
export const perDelivery = (f: LoadFigures) => f.serverCpuS.reduce((x, y) => x + y, 0) / Math.max(1, f.received)
export const deliveredPerS = (f: LoadFigures) => f.received / (f.elapsedMs / 1000)
const signed = (v: number) => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${fmt(v, 2)}` : 'n/a')

// ---------------------------------------------------------------- run guards (shared with bench/compare.ts)

/** Set once an interrupt or the watchdog started stopping everything. */
let interrupted = false
/** Pids of every node process this run started, checked after the final stop. */
export const startedPids = new Set<number>()
/** Node processes still running after the final stop (killed with SIGKILL then). */
export let leftBehind: number[] = []
/** More to stop at the end (another benchmark's own processes), after our nodes. */
const moreCleanups: (() => Promise<void>)[] = []
export const onCleanup = (fn: () => Promise<void>) => void moreCleanups.push(fn)

export function track<T extends NodeHandle | NodeHandle[]>(handles: T): T {
  for (const node of Array.isArray(handles) ? handles : [handles]) startedPids.add(node.proc.pid)
  return handles
}

/** Whether `pid` is still a live (not zombie) process whose command line contains `script`. */
export function isRunning(pid: number, script: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return false
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(script)
  } catch {
    return false
  }
}

export function killQuietly(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal)
  } catch {
    // gone meanwhile
  }
}

let cleaning: Promise<void> | null = null

/** Closes every socket, stops every node and whatever `onCleanup` added; once. */
async function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await closeAll([...openSockets], 3000).catch(() => {})
    for (const node of runningNodes()) startedPids.add(node.proc.pid)
    await stopAll(8000).catch(() => {})
    for (const fn of moreCleanups) await fn().catch(() => {})
    // Every node this run started must be gone; anything left (it should not be) is killed.
    await sleep(100)
    leftBehind = [...startedPids].filter((pid) => isRunning(pid, 'src/index.ts'))
    for (const pid of leftBehind) killQuietly(pid)
  })()
  return cleaning
}

async function abort(why: string, code: number): Promise<never> {
  interrupted = true
  console.error(`\n${why}: stopping every process this benchmark started`)
  await cleanup()
  process.exit(code)
}

/** SIGINT/SIGTERM stop everything; so does a watchdog: a wedged node must not hold a run forever. */
function guard(watchdogS: number): void {
  process.on('SIGINT', () => void abort('SIGINT', 130))
  process.on('SIGTERM', () => void abort('SIGTERM', 143))
  setTimeout(() => void abort(`watchdog: still running after ${watchdogS} s`, 124), watchdogS * 1000).unref()
}

/** A description of the machine, and how many idle connections `ulimit -n` leaves room for. */
function machine(wantedIdle: number): { lines: string[]; idle: number } {
  const fdLimit = Number(shell('ulimit -n')) || 1024
  const cpuModel = cpus()[0]?.model ?? 'unknown CPU'
  const lines = [
    `machine: nproc ${shell('nproc') || cpus().length} (${cpuModel.trim()}), Linux ${release()}, ` +
      `bun ${Bun.version}, ulimit -n ${fdLimit}, ${fmt(Number(shell("awk '/MemTotal/ {print $2}' /proc/meminfo")) / 2 ** 20)} GiB RAM`,
    'the nodes and this client process share those cores; the client runs every WebSocket connection',
  ]
  // One fd per client socket here and one on the node; leave room for everything else.
  const idle = Math.max(0, Math.min(wantedIdle, fdLimit - 200))
  if (idle !== wantedIdle) lines.push(`note: ulimit -n is ${fdLimit}: idle connections lowered from ${wantedIdle} to ${idle}`)
  return { lines, idle }
}

/**
 * The frame of a benchmark run: interrupt and watchdog guards, the machine lines, a progress log,
 * the final cleanup, then the report and the exit status (1 only if `body` failed).
 */
export async function benchmark(
  name: string,
  watchdogS: number,
  wantedIdle: number,
  body: (log: (line: string) => void, idle: number) => Promise<void>,
  report: (machineLines: string[], totalMs: number) => void,
): Promise<void> {
  const started = now()
  guard(watchdogS)
  const { lines, idle } = machine(wantedIdle)
  let failed = false
  try {
    console.log(lines.join('\n'))
    await body((line) => console.log(`[${fmt((now() - started) / 1000)} s] ${line}`), idle)
  } catch (error) {
    failed = true
    if (!interrupted) console.error(`\n${name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
  } finally {
    await cleanup()
  }
  if (!interrupted) {
    report(lines, now() - started)
    process.exit(failed ? 1 : 0)
  }
}

// ---------------------------------------------------------------- main

let clusterStopMs = NaN

async function main(): Promise<void> {
  const o = parseOptions(Bun.argv.slice(2), HELP, { 'join-samples': { type: 'string' } }).options
  let a: ScenarioResult | null = null
  let b: ScenarioResult | null = null
  let mem: MemoryResult | null = null
  const run = async (log: (line: string) => void, idle: number) => {
    log('A: starting 1 node')
    const single = track(await startNode({ name: 'A-node1', args: BENCH_NODE_ARGS }))
    log(`A: ${o.clients} clients, ${o.senders * o.messages} messages`)
    a = await runScenario('A', [single], o)
    log(`A: done; ${summary(a)}`)
    await single.stop(5000)

    log('B: starting a 3-node cluster')
    const cluster = track(await startCluster(3, { args: BENCH_NODE_ARGS }))
    log(`B: ${o.clients} clients over 3 nodes, ${o.senders * o.messages} messages`)
    b = await runScenario('B', cluster, o)
    log(`B: done; ${summary(b)}`)
    // All three leave at once (SIGTERM); a node's own leave timeout is 5 s, so give it more than that.
    const stopStart = now()
    await stopAll(8000)
    clusterStopMs = now() - stopStart
    log(`B: cluster stopped in ${fmt(clusterStopMs / 1000, 2)} s`)

    if (idle > 0) {
      log(`memory: opening ${idle} idle connections on a fresh node`)
      mem = await runMemory(idle)
      log('memory: done')
    }
  }
  await benchmark('benchmark', 240, o.idle, run, (lines, totalMs) => report(o, lines, a, b, mem, totalMs))
}

if (import.meta.main) await main()

// `make bench`: this project (3 nodes) against the one-process Bun ceiling (a bare Bun.serve that
// publishes to a topic) and Socket.IO + Redis adapter (3 nodes), in one run, on one machine:
//
//   join storm      N connections opened to one node as fast as the generator can; joins/s, then
//                   the time until every node's /api/users and every client's list hold all of
//                   them; then all N disconnect at once: the time until the lists are empty
//   memory          RSS per idle connection on the node holding them, per remote user on the others
//   idle CPU        per node, with no clients and with the N idle connections
//   fan-out         the highest msg/s (a ladder of rates) at which C clients all receive every
//                   message with p99 < 100 ms and none refused or lost, and the latency at it
//   generator CPU   the load generator's own CPU (its worker processes and this one), so a reader
//                   can tell when the generator is the bottleneck
//
// Sizes come from the environment (defaults fit a few minutes on 2 cores):
//   SCALE_JOIN_USERS=2000  SCALE_JOIN_WIDTH=500  SCALE_FANOUT_CLIENTS=300  SCALE_SENDERS=30
//   SCALE_WORKERS=2  SCALE_STEP_MS=1500  SCALE_P99_MS=100  SCALE_SYSTEMS=ours,ceiling,sio
//   SCALE_TRACK_MAX=2500 (storm clients whose lists are kept exactly; beyond it, that many are sampled)
//   SCALE_WATCHDOG_S=600  SCALE_NODES=3 (nodes of ours and of Socket.IO: 5 and 7 show how the cost grows with N)
// e.g. SCALE_JOIN_USERS=20000 SCALE_WORKERS=4 make bench. It asserts nothing about timings.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, REPO_ROOT, startCluster, stopAll, type NodeHandle } from '../test/support/cluster'
import { chatUrl } from '../test/support/ws-client'
import { children, childrenStillRunning, findRedis, socketIoCommand, spawnChild, startedChildren, stopChild, type Child } from './children'
import { BENCH_NODE_ARGS, benchmark, cpuSeconds, fmt, int, killQuietly, leftBehind, now, onCleanup, rssKiB, shell, sleep, startedPids, table, track } from './cluster-chat'
import { HISTOGRAM_BIN_MS, HISTOGRAM_BINS, type Group, type Receipts, type Reply, type Request, type ServerKind, type Target, type Traffic } from './scale/protocol'

// ---------------------------------------------------------------- settings

function envInt(name: string, fallback: number, min: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < min) {
    console.error(`${name} needs a whole number >= ${min}, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return n
}

const SYSTEMS: ServerKind[] = (process.env.SCALE_SYSTEMS ?? 'ours,ceiling,sio').split(',').map((s) => s.trim()) as ServerKind[]
for (const s of SYSTEMS) {
  if (!['ours', 'ceiling', 'sio'].includes(s)) {
    console.error(`SCALE_SYSTEMS: unknown system ${JSON.stringify(s)} (known: ours, ceiling, sio)`)
    process.exit(2)
  }
}
const S = {
  joinUsers: envInt('SCALE_JOIN_USERS', 2000, 1),
  joinWidth: envInt('SCALE_JOIN_WIDTH', 500, 1),
  fanoutClients: envInt('SCALE_FANOUT_CLIENTS', 300, 1),
  senders: envInt('SCALE_SENDERS', 30, 1),
  workers: envInt('SCALE_WORKERS', 2, 1),
  stepMs: envInt('SCALE_STEP_MS', 1500, 200),
  p99Ms: envInt('SCALE_P99_MS', 100, 1),
  trackMax: envInt('SCALE_TRACK_MAX', 2500, 0),
  watchdogS: envInt('SCALE_WATCHDOG_S', 600, 10),
  idleMs: 3000,
}
/** Offered rates of the fan-out ladder, msg/s; it stops at the first that fails. */
const LADDER = [100, 200, 350, 500, 750, 1000, 1400, 2000, 2800, 4000, 5600, 8000]
const NODES = envInt('SCALE_NODES', 3, 1)
/** Users who join node 1 one at a time, each timed until every node's observer lists it. */
const PROBES = 20

// ---------------------------------------------------------------- open files

/**
 * Every connection is a file on both ends: the node holding the storm needs N of them, and so do
 * the workers between them. Raises this process's soft limit to the hard one (children inherit
 * it); if that is not enough, lowers the storm and says so.
 */
function raiseFileLimit(): string[] {
  const notes: string[] = []
  const hard = Number(shell('ulimit -Hn'))
  const soft = Number(shell('ulimit -n'))
  if (soft < hard) {
    const raised = Bun.spawnSync(['prlimit', `--pid=${process.pid}`, `--nofile=${hard}:${hard}`], { stderr: 'pipe' })
    if (!raised.success) notes.push(`could not raise the open-file limit from ${soft} to ${hard} (prlimit: ${raised.stderr.toString().trim()})`)
  }
  const limit = Number(shell('ulimit -n')) || soft
  const need = S.joinUsers + S.fanoutClients + 300
  if (need > limit) {
    const lowered = Math.max(100, limit - S.fanoutClients - 300)
    notes.push(
      `!! the storm needs ${int(need)} open files in the node that holds it, and the limit here is ${int(limit)} ` +
        `(hard limit ${int(hard)}; raising it needs root with CAP_SYS_RESOURCE, e.g. \`ulimit -Hn 65536\` before make bench): ` +
        `SCALE_JOIN_USERS lowered from ${int(S.joinUsers)} to ${int(lowered)}`,
    )
    S.joinUsers = lowered
  }
  notes.unshift(`open-file limit ${int(limit)} (hard ${int(hard)})`)
  return notes
}

// ---------------------------------------------------------------- workers

interface Worker {
  pid: number
  proc: Bun.Subprocess
  pending: Map<number, (reply: Reply) => void>
}

const workers: Worker[] = []
let nextRequest = 1
/** Load phases are numbered across the whole run: a worker keeps every phase's receipts. */
let nextPhase = 1

async function startWorkers(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    let ready!: () => void
    const started = new Promise<void>((resolve) => (ready = resolve))
    const pending = new Map<number, (reply: Reply) => void>()
    const proc = Bun.spawn(['bun', 'run', join(REPO_ROOT, 'bench/scale/worker.ts')], {
      cwd: REPO_ROOT,
      stdin: 'ignore',
      stdout: 'inherit',
      stderr: 'inherit',
      ipc(reply: Reply) {
        if (reply.id === 0) return ready()
        pending.get(reply.id)?.(reply)
        pending.delete(reply.id)
      },
    })
    startedChildren.add(proc.pid)
    workers.push({ pid: proc.pid, proc, pending })
    await Promise.race([started, sleep(15_000).then(() => Promise.reject(new Error(`worker ${i} did not start within 15 s`)))])
  }
}

/** A request without its id (the pool numbers it). */
type Body = Request extends infer R ? (R extends Request ? Omit<R, 'id'> : never) : never

function ask(w: Worker, body: Body): Promise<Extract<Reply, { ok: true }>> {
  const id = nextRequest++
  return new Promise((resolve, reject) => {
    w.pending.set(id, (reply) => (reply.ok ? resolve(reply) : reject(new Error(`worker ${w.pid}: ${reply.error}`))))
    w.proc.send({ ...body, id } as Request)
  })
}

const askAll = (body: Body | ((w: number) => Body)) =>
  Promise.all(workers.map((w, i) => ask(w, typeof body === 'function' ? body(i) : body)))

/** Deals targets out to the workers round-robin and opens them; wall time until all are open. */
async function openAll(kind: ServerKind, group: Group, targets: Target[], width: number): Promise<{ ms: number; retries: number }> {
  const share = workers.map((_, w) => targets.filter((_, i) => i % workers.length === w))
  const start = now()
  const replies = (await askAll((w) => ({ type: 'open', kind, group, targets: share[w]!, width: Math.max(1, Math.ceil(width / workers.length)) }))) as Array<
    Extract<Reply, { type: 'opened' }>
  >
  return { ms: now() - start, retries: sum(replies.map((r) => r.retries)) }
}

async function listsAt(group: Group, expected: number): Promise<{ tracked: number; atExpected: number; min: number; max: number }> {
  const replies = (await askAll({ type: 'lists', group, expected })) as Array<Extract<Reply, { type: 'lists' }>>
  return {
    tracked: replies.reduce((s, r) => s + r.tracked, 0),
    atExpected: replies.reduce((s, r) => s + r.atExpected, 0),
    min: Math.min(...replies.map((r) => r.sizes.min)),
    max: Math.max(...replies.map((r) => r.sizes.max)),
  }
}

async function trafficNow(): Promise<Traffic> {
  const replies = (await askAll({ type: 'traffic' })) as Array<Extract<Reply, { type: 'traffic' }>>
  const total: Traffic = { frames: 0, bytes: 0, byType: {} }
  for (const { traffic } of replies) {
    total.frames += traffic.frames
    total.bytes += traffic.bytes
    for (const [type, t] of Object.entries(traffic.byType)) {
      const into = (total.byType[type] ??= { frames: 0, bytes: 0 })
      into.frames += t.frames
      into.bytes += t.bytes
    }
  }
  return total
}

/** CPU of processes over a stretch of time, in % of one core each. */
class CpuMeter {
  private readonly start: number[]
  private readonly t0 = now()
  constructor(private readonly pids: number[]) {
    this.start = pids.map(safeCpu)
  }
  pct(): number[] {
    const ms = now() - this.t0
    return this.pids.map((pid, i) => ((safeCpu(pid) - this.start[i]!) * 1e5) / ms)
  }
}

function safeCpu(pid: number): number {
  try {
    return cpuSeconds(pid)
  } catch {
    return NaN
  }
}

const generatorPids = () => [process.pid, ...workers.map((w) => w.pid)]
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0)

/** Polls `check` every 20 ms (plus its own time) until it holds; the time it took, or NaN at the deadline. */
async function timeUntil(check: () => Promise<boolean>, deadlineMs: number): Promise<number> {
  const start = now()
  while (now() - start < deadlineMs) {
    if (await check().catch(() => false)) return now() - start
    await sleep(20)
  }
  return NaN
}

// ---------------------------------------------------------------- the servers under test

interface Servers {
  kind: ServerKind
  /** Where a client of node i connects. */
  url(node: number, username: string): string
  nodeCount: number
  /** Server processes, node 1 first (redis-server last for Socket.IO). */
  pids: number[]
  /** Users each node lists (/api/users), for ours; null for the baselines, which keep no list. */
  userCounts: (() => Promise<number[]>) | null
  stop(): Promise<void>
}

async function startServers(kind: ServerKind, redisServer: string | null, buildDir: string): Promise<Servers> {
  if (kind === 'ours') {
    const nodes: NodeHandle[] = track(await startCluster(NODES, { args: BENCH_NODE_ARGS }))
    return {
      kind,
      nodeCount: NODES,
      url: (n, username) => chatUrl(nodes[n]!.httpUrl, username),
      pids: nodes.map((n) => n.proc.pid),
      userCounts: () => Promise.all(nodes.map((n) => n.users().then((u) => u.count as number))),
      stop: () => stopAll(8000),
    }
  }
  if (kind === 'ceiling') {
    const port = await freePort()
    const child = await spawnChild('ceiling', ['bun', 'run', join(REPO_ROOT, 'bench/scale/ceiling-server.ts'), '--port', String(port)], `ready ${port}`)
    return { kind, nodeCount: 1, url: (_, u) => `ws://127.0.0.1:${port}/ws/chat?username=${encodeURIComponent(u)}`, pids: [child.pid], userCounts: null, stop: () => stopChild(child) }
  }
  if (!redisServer) throw new Error('redis-server is missing')
  const redisPort = await freePort()
  const redis = await spawnChild('redis', [redisServer, '--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], 'Ready to accept connections')
  const command = socketIoCommand('node', buildDir)
  const ports = await Promise.all(Array.from({ length: NODES }, () => freePort()))
  const nodes: Child[] = await Promise.all(
    ports.map((port, n) => spawnChild(`sio${n + 1}`, [...command, '--port', String(port), '--redis', `redis://127.0.0.1:${redisPort}`, '--name', `sio${n + 1}`], `ready ${port}`)),
  )
  return {
    kind,
    nodeCount: NODES,
    url: (n) => `http://127.0.0.1:${ports[n]}`,
    pids: [...nodes.map((c) => c.pid), redis.pid],
    userCounts: null,
    stop: async () => {
      await Promise.all(nodes.map((c) => stopChild(c)))
      await stopChild(redis)
    },
  }
}

// ---------------------------------------------------------------- one system

interface Step {
  rate: number
  sent: number
  expected: number
  received: number
  p50: number
  p99: number
  passed: boolean
  generatorCpuPct: number
  generatorMaxWorkerPct: number
  serverCpuPct: number[]
  sendLagMaxMs: number
}

interface SystemResult {
  kind: ServerKind
  nodeCount: number
  idleCpuNoClients: number[]
  /** One join to node 1 -> every node's observer lists it (connect included), ms, sorted; ours only. */
  joinVisibleMs: number[]
  storm: {
    users: number
    openMs: number
    /** Handshakes refused (the node shedding) and tried again. */
    retries: number
    /** Last welcome to every list holding every user (ours only). */
    consistentMs: number
    tracked: number
    traffic: Traffic
    generatorCpuPct: number
    generatorMaxWorkerPct: number
    /** Busiest worker while the lists settled (they parse every presence frame of the tracked clients). */
    generatorSettleMaxWorkerPct: number
    serverCpuS: number[]
    leaveMs: number
  }
  rssBeforeKiB: number[]
  rssAfterKiB: number[]
  idleCpuWithUsers: number[]
  steps: Step[]
}

/** Percentile of a merged latency histogram, in ms. */
function histogramPercentile(h: Uint32Array, total: number, p: number): number {
  if (total === 0) return NaN
  const rank = Math.ceil((p / 100) * total)
  let seen = 0
  for (let bin = 0; bin < h.length; bin++) {
    seen += h[bin]!
    if (seen >= rank) return (bin + 1) * HISTOGRAM_BIN_MS
  }
  return Infinity
}

async function fanoutStep(servers: Servers, phase: number, rate: number): Promise<Step> {
  const clients = S.fanoutClients
  const senders = Math.min(S.senders, clients)
  const genCpu = new CpuMeter(generatorPids())
  const serverCpu = new CpuMeter(servers.pids)
  // Each worker's senders send its share of the rate.
  const sendersOf = (w: number) => Math.floor(senders / workers.length) + (w < senders % workers.length ? 1 : 0)
  const sentReplies = (await askAll((w) => ({ type: 'send', phase, perSecond: (rate * sendersOf(w)) / senders, durationMs: S.stepMs, senders: sendersOf(w) }))) as Array<
    Extract<Reply, { type: 'sent' }>
  >
  const sent = sum(sentReplies.map((r) => r.sent))
  const expected = sent * clients
  // Until everything arrived, or nothing moved for 1 s.
  let received = 0
  let last = -1
  let lastMove = now()
  let receipts: Receipts[] = []
  for (;;) {
    receipts = ((await askAll({ type: 'receipts', phase })) as Array<Extract<Reply, { type: 'receipts' }>>).map((r) => r.receipts)
    received = sum(receipts.map((r) => r.received))
    if (received >= expected) break
    if (received !== last) {
      last = received
      lastMove = now()
    } else if (now() - lastMove > 1000) break
    await sleep(50)
  }
  const gen = genCpu.pct()
  const h = new Uint32Array(HISTOGRAM_BINS)
  for (const r of receipts) for (const [bin, n] of r.histogram) h[bin]! += n
  const p99 = histogramPercentile(h, received, 99)
  return {
    rate,
    sent,
    expected,
    received,
    p50: histogramPercentile(h, received, 50),
    p99,
    passed: received === expected && p99 < S.p99Ms,
    generatorCpuPct: sum(gen),
    generatorMaxWorkerPct: Math.max(...gen.slice(1)),
    serverCpuPct: serverCpu.pct(),
    sendLagMaxMs: Math.max(...sentReplies.map((r) => r.lagMaxMs)),
  }
}

async function runSystem(kind: ServerKind, log: (line: string) => void, redisServer: string | null, buildDir: string): Promise<SystemResult> {
  log(`${kind}: starting`)
  const servers = await startServers(kind, redisServer, buildDir)
  try {
    const nodeIndexes = Array.from({ length: servers.nodeCount }, (_, i) => i)
    await sleep(1500) // start-up garbage, first GC
    const idleCpuNoClients = await measureIdle(servers.pids)

    // Fan-out ladder first, on fresh servers: a storm's aftermath (its garbage, its buffers) would
    // weigh on the latencies.
    log(`${kind}: fan-out ladder, ${S.fanoutClients} clients`)
    await openAll(kind, 'fanout', Array.from({ length: S.fanoutClients }, (_, i) => ({ url: servers.url(i % servers.nodeCount, `f${i}`), username: `f${i}`, track: false })), 50)
    await fanoutStep(servers, nextPhase++, 100) // warm-up (also lets the joins settle), not reported
    const steps: Step[] = []
    for (const rate of LADDER) {
      const step = await fanoutStep(servers, nextPhase++, rate)
      steps.push(step)
      log(`${kind}: ${int(rate)} msg/s: p99 ${fmt(step.p99, 1)} ms, ${int(step.received)}/${int(step.expected)} delivered, generator ${fmt(step.generatorCpuPct, 0)}% CPU`)
      if (!step.passed) break
      await sleep(300)
    }
    await askAll({ type: 'close', group: 'fanout' })
    await sleep(1000) // their leaves

    // Observers: one per node, kept open through the storm (ours: their lists must follow it).
    const observers = kind === 'ours' ? nodeIndexes.length : 0
    if (observers) await openAll(kind, 'observer', nodeIndexes.map((n) => ({ url: servers.url(n, `obs${n}`), username: `obs${n}`, track: true })), observers)
    await sleep(500)
    const joinVisibleMs = observers ? await joinsVisible(servers, observers) : []
    const rssBeforeKiB = servers.pids.map(rssKiB)

    // Join storm: N users to node 1, with up to `joinWidth` handshakes in flight.
    const N = S.joinUsers
    const every = N <= S.trackMax ? 1 : Math.max(1, Math.floor(N / Math.max(1, S.trackMax)))
    const storm: Target[] = Array.from({ length: N }, (_, i) => ({ url: servers.url(0, `s${i}`), username: `s${i}`, track: kind === 'ours' && i % every === 0 }))
    log(`${kind}: join storm, ${int(N)} connections to node 1`)
    const traffic0 = await trafficNow()
    const genCpu = new CpuMeter(generatorPids())
    const serverCpu0 = servers.pids.map(safeCpu)
    const retries0 = (await openAll(kind, 'storm', [], 1)).retries
    const opened = await openAll(kind, 'storm', storm, S.joinWidth)
    const openMs = opened.ms
    const generatorStorm = genCpu.pct()
    const total = N + observers
    let consistentMs = NaN
    let tracked = 0
    const genSettle = new CpuMeter(generatorPids())
    if (servers.userCounts) {
      const counts = servers.userCounts
      // The clients' lists first (the workers answer from memory); the nodes' /api/users (a JSON
      // of every user) only once those are complete, so the polling does not load the nodes.
      consistentMs = await timeUntil(async () => {
        const [s, o] = await Promise.all([listsAt('storm', total), listsAt('observer', total)])
        tracked = s.tracked + o.tracked
        if (s.atExpected !== s.tracked || o.atExpected !== o.tracked) return false
        return (await counts()).every((c) => c === total)
      }, 120_000)
    }
    const generatorSettle = genSettle.pct()
    // Let the storm's broadcasts stop arriving before reading RSS and idle CPU.
    for (let last = -1, t = await trafficNow(); t.bytes !== last; t = await trafficNow()) {
      last = t.bytes
      await sleep(500)
    }
    const serverCpuS = servers.pids.map((pid, i) => safeCpu(pid) - serverCpu0[i]!)
    const traffic1 = await trafficNow()
    const rssAfterKiB = servers.pids.map(rssKiB)
    const idleCpuWithUsers = await measureIdle(servers.pids)

    // Everyone leaves at once.
    log(`${kind}: ${int(N)} disconnect at once`)
    await askAll({ type: 'close', group: 'storm' })
    const leaveStart = now()
    let leaveMs = NaN
    if (servers.userCounts) {
      const counts = servers.userCounts
      leaveMs = await timeUntil(async () => (await listsAt('observer', observers)).atExpected === observers && (await counts()).every((c) => c === observers), 120_000)
    }
    void leaveStart

    await askAll({ type: 'close', group: 'observer' })
    return {
      kind,
      nodeCount: servers.nodeCount,
      idleCpuNoClients,
      joinVisibleMs,
      storm: {
        users: N,
        openMs,
        retries: opened.retries - retries0,
        consistentMs: Number.isFinite(consistentMs) ? Math.max(0, consistentMs) : NaN,
        tracked,
        traffic: diffTraffic(traffic1, traffic0),
        generatorCpuPct: sum(generatorStorm),
        generatorMaxWorkerPct: Math.max(...generatorStorm.slice(1)),
        generatorSettleMaxWorkerPct: Math.max(...generatorSettle.slice(1)),
        serverCpuS,
        leaveMs,
      },
      rssBeforeKiB,
      rssAfterKiB,
      idleCpuWithUsers,
      steps,
    }
  } finally {
    await servers.stop()
  }
}

/**
 * PROBES users join node 1 one at a time, each timed from opening its socket until every node's
 * observer lists it (a join's presence crossing the cluster), 100 ms apart; then they leave.
 * Polled every 2 ms.
 */
async function joinsVisible(servers: Servers, observers: number): Promise<number[]> {
  const times: number[] = []
  for (let i = 0; i < PROBES; i++) {
    // A quiet room: past the last one's presence window (50 ms), so each is told at once.
    await sleep(100)
    const start = now()
    await openAll(servers.kind, 'probe', [{ url: servers.url(0, `probe${i}`), username: `probe${i}`, track: false }], 1)
    while ((await listsAt('observer', observers + i + 1)).atExpected !== observers) {
      if (now() - start > 10_000) throw new Error(`probe${i} was not listed everywhere within 10 s`)
      await sleep(2)
    }
    times.push(now() - start)
  }
  await askAll({ type: 'close', group: 'probe' })
  await timeUntil(async () => (await listsAt('observer', observers)).atExpected === observers, 10_000)
  return times.sort((a, b) => a - b)
}

async function measureIdle(pids: number[]): Promise<number[]> {
  const meter = new CpuMeter(pids)
  await sleep(S.idleMs)
  return meter.pct()
}

function diffTraffic(a: Traffic, b: Traffic): Traffic {
  const byType: Traffic['byType'] = {}
  for (const [type, t] of Object.entries(a.byType)) {
    const before = b.byType[type] ?? { frames: 0, bytes: 0 }
    byType[type] = { frames: t.frames - before.frames, bytes: t.bytes - before.bytes }
  }
  return { frames: a.frames - b.frames, bytes: a.bytes - b.bytes, byType }
}

// ---------------------------------------------------------------- report

const TITLES: Record<ServerKind, string> = { ours: `this project (${NODES} nodes)`, ceiling: 'Bun ceiling (1 process)', sio: `Socket.IO + Redis (${NODES} nodes)` }

function report(machine: string[], notes: string[], results: SystemResult[], totalMs: number): void {
  const out = ['', '='.repeat(100), 'scale: join storm, memory, idle CPU and fan-out; ours against the Bun ceiling and Socket.IO + Redis', '='.repeat(100)]
  out.push(...machine, ...notes)
  out.push(
    `storm: ${int(S.joinUsers)} connections to node 1, ${S.joinWidth} handshakes in flight, over ${S.workers} generator workers; ` +
      `fan-out: ${S.fanoutClients} clients spread over the nodes, ${S.senders} senders, ${fmt(S.stepMs / 1000)} s per rate, pass = none refused or lost and p99 < ${S.p99Ms} ms`,
    `machine load before the run (1/5/15 min): ${shell('cut -d" " -f1-3 /proc/loadavg')}`,
  )
  const col = (fn: (r: SystemResult) => string) => results.map(fn)
  const pcts = (xs: number[]) => xs.map((x) => fmt(x, 1)).join(' / ')
  const best = (r: SystemResult) => [...r.steps].reverse().find((s) => s.passed)
  const MiB = (b: number) => fmt(b / 2 ** 20, 1)
  const rows: string[][] = [
    ['', ...col((r) => TITLES[r.kind])],
    [`one join -> listed on every node, ms (median / worst of ${PROBES})`, ...col((r) => (r.joinVisibleMs.length ? `${fmt(r.joinVisibleMs[Math.floor(r.joinVisibleMs.length / 2)]!, 1)} / ${fmt(r.joinVisibleMs.at(-1)!, 1)}` : '-'))],
    ['join storm: joins/s to one node', ...col((r) => int(r.storm.users / (r.storm.openMs / 1000)))],
    ['  time to open all, s (handshakes refused and retried)', ...col((r) => `${fmt(r.storm.openMs / 1000, 2)} (${int(r.storm.retries)})`)],
    ['  last welcome -> every node and every tracked list holds all, ms', ...col((r) => (r.kind === 'ours' ? `${fmt(r.storm.consistentMs, 0)} (${int(r.storm.tracked)} lists)` : 'no lists'))],
    ['  busiest generator worker while the lists settled, % of a core', ...col((r) => (r.kind === 'ours' ? fmt(r.storm.generatorSettleMaxWorkerPct, 0) : '-'))],
    ['  all disconnect at once -> every list empty, ms', ...col((r) => (r.kind === 'ours' ? fmt(r.storm.leaveMs, 0) : 'no lists'))],
    ['  frames / MiB pushed to the clients by the storm', ...col((r) => `${int(r.storm.traffic.frames)} / ${MiB(r.storm.traffic.bytes)}`)],
    [
      '  of which presence / system / users, MiB',
      ...col((r) => ['presence', 'system', 'users'].map((t) => MiB(r.storm.traffic.byType[t]?.bytes ?? 0)).join(' / ')),
    ],
    ['  server CPU s during the storm, per process', ...col((r) => r.storm.serverCpuS.map((c) => fmt(c, 2)).join(' / '))],
    ['  generator CPU % of a core (all / busiest worker)', ...col((r) => `${fmt(r.storm.generatorCpuPct, 0)} / ${fmt(r.storm.generatorMaxWorkerPct, 0)}`)],
    ['RSS per idle connection, holding node, KiB', ...col((r) => fmt((r.rssAfterKiB[0]! - r.rssBeforeKiB[0]!) / r.storm.users, 2))],
    [
      'RSS per remote user, other nodes, KiB',
      ...col((r) => (r.kind === 'ours' ? r.rssAfterKiB.slice(1).map((a, i) => fmt((a - r.rssBeforeKiB[i + 1]!) / r.storm.users, 2)).join(' / ') : '-')),
    ],
    ['  RSS before / after, MiB, per process', ...col((r) => r.rssAfterKiB.map((a, i) => `${fmt(r.rssBeforeKiB[i]! / 1024, 0)}/${fmt(a / 1024, 0)}`).join(' '))],
    ['idle CPU % per process, no clients', ...col((r) => pcts(r.idleCpuNoClients))],
    ['idle CPU % per process, storm connected', ...col((r) => pcts(r.idleCpuWithUsers))],
    [`sustainable fan-out msg/s (p99 < ${S.p99Ms} ms, ${S.fanoutClients} clients)`, ...col((r) => (best(r) ? int(best(r)!.rate) : `< ${LADDER[0]}`))],
    ['  deliveries/s at it', ...col((r) => (best(r) ? int(best(r)!.rate * S.fanoutClients) : '-'))],
    ['  p50 / p99 at it, ms', ...col((r) => (best(r) ? `${fmt(best(r)!.p50, 1)} / ${fmt(best(r)!.p99, 1)}` : '-'))],
    ['  server CPU % per process at it', ...col((r) => (best(r) ? pcts(best(r)!.serverCpuPct) : '-'))],
    // All server processes' CPU over the deliveries made: how a message's cost grows with the node count.
    ['  server CPU µs per delivery, all processes', ...col((r) => (best(r) ? fmt((sum(best(r)!.serverCpuPct) / 100) * 1e6 / (best(r)!.rate * S.fanoutClients), 2) : '-'))],
    ['  generator CPU % of a core at it (all / busiest worker)', ...col((r) => (best(r) ? `${fmt(best(r)!.generatorCpuPct, 0)} / ${fmt(best(r)!.generatorMaxWorkerPct, 0)}` : '-'))],
    ['  first failing rate: msg/s, p99 ms, not delivered (refused as overloaded, or lost)', ...col((r) => {
      const f = r.steps.find((s) => !s.passed)
      return f ? `${int(f.rate)}, ${fmt(f.p99, 0)}, ${int(f.expected - f.received)}` : `none up to ${int(LADDER.at(-1)!)}`
    })],
  ]
  out.push('', table(rows))
  out.push('', 'ladder (msg/s: p99 ms, generator CPU %):')
  for (const r of results) out.push(`  ${r.kind}: ${r.steps.map((s) => `${int(s.rate)}: ${fmt(s.p99, 1)}${s.passed ? '' : ' FAIL'} (${fmt(s.generatorCpuPct, 0)}%)`).join(', ')}`)
  const warnings: string[] = []
  for (const r of results) {
    const f = r.steps.find((s) => !s.passed)
    if (f && f.generatorMaxWorkerPct > 85) warnings.push(`${r.kind}: at ${int(f.rate)} msg/s a generator worker used ${fmt(f.generatorMaxWorkerPct, 0)}% of a core: the generator may be what failed (try SCALE_WORKERS)`)
    if (r.storm.generatorSettleMaxWorkerPct > 85) warnings.push(`${r.kind}: while the lists settled a generator worker used ${fmt(r.storm.generatorSettleMaxWorkerPct, 0)}% of a core: the time to consistent lists may be the generator's`)
    if (r.storm.generatorMaxWorkerPct > 85) warnings.push(`${r.kind}: during the storm a generator worker used ${fmt(r.storm.generatorMaxWorkerPct, 0)}% of a core: joins/s may be the generator's`)
  }
  warnings.push(...failures.map((f) => `FAILED ${f}`))
  if (warnings.length) out.push('', ...warnings.map((w) => `!! ${w}`))
  out.push(
    '',
    'all processes share the machine\'s cores: figures are relative, not capacity claims',
    `processes started: ${startedPids.size} of our nodes, ${startedChildren.size} others; still running after the final stop: ${leftBehind.length + othersLeft.length}`,
    `total run time ${fmt(totalMs / 1000)} s`,
  )
  console.log(out.join('\n'))
}

// ---------------------------------------------------------------- main

let othersLeft: number[] = []
const results: SystemResult[] = []
const failures: string[] = []
const notes = raiseFileLimit()
const redisServer = SYSTEMS.includes('sio') ? findRedis() : null
if (SYSTEMS.includes('sio') && !redisServer) {
  console.error("scale cannot run Socket.IO: redis-server is missing and scripts/deps.sh --bench could not install it; as root: apt-get install -y redis-server (or SCALE_SYSTEMS=ours,ceiling)")
  process.exit(1)
}
const buildDir = mkdtempSync(join(tmpdir(), 'scale-'))
onCleanup(async () => {
  try {
    for (const w of workers) killQuietly(w.pid, 'SIGTERM')
    await Promise.race([Promise.all(workers.map((w) => w.proc.exited)), sleep(3000)])
    await Promise.all([...children.values()].map((child) => stopChild(child)))
    othersLeft = childrenStillRunning(['redis-server', 'socketio', 'ceiling-server', 'scale/worker'])
  } finally {
    rmSync(buildDir, { recursive: true, force: true })
  }
})

await benchmark(
  'scale',
  S.watchdogS,
  0,
  async (log) => {
    await startWorkers(S.workers)
    for (const kind of SYSTEMS) {
      try {
        results.push(await runSystem(kind, log, redisServer, buildDir))
      } catch (error) {
        // One system failing leaves the others' figures standing; the report says which failed.
        failures.push(`${kind}: ${error instanceof Error ? error.message : String(error)}`)
        log(`${kind}: FAILED: ${failures.at(-1)}`)
      }
    }
    if (failures.length === SYSTEMS.length) throw new Error('every system failed')
  },
  (machine, totalMs) => report(machine, notes, results, totalMs),
)

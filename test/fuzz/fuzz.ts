// The live fuzzer: a real 3-node cluster on free loopback ports, driven for a while on its cluster,
// WebSocket and HTTP ports at once with random and mutated input from one seed, while checker users
// chat through it. At the end every node must be alive and answering, the members must agree on
// the member list and the leader, and the checker must have lost nothing.
//
// The nodes run with a cluster secret (random per run). Cluster-port inputs go both on connections
// that never authenticate (refused, counted in `authFailures`, and never heard by the cluster) and
// on ones that run the genuine handshake and then lie (closed, counted in `invalid`); see
// cluster-kinds.ts. The nodes' counters are compared with what the fuzzer saw refused.
//
// Bounds: `lanes` actions at a time (each holds at most a few connections), `inputsPerSecond`,
// `bytesPerSecond`, and every wait has a deadline. Only 127.0.0.1 is ever dialled: the non-member
// identities the fuzzer claims are ports it listens on itself, so nodes that answer them reach us.
import { randomBytes } from 'node:crypto'
import { FrameDecoder, DEFAULT_MAX_FRAME_BYTES } from '../../src/cluster/codec'
import { HANDSHAKE_TIMEOUT_MS } from '../../src/cluster/tcp/inbound'
import { DEFAULT_SYSTEM_NAME, freePort, startCluster, waitForConvergence, type NodeHandle } from '../support/cluster'
import { Checker } from './checker'
import { clusterKinds } from './cluster-kinds'
import { LOOPBACK, type HandshakeConfig } from './cluster-conn'
import type { ClusterTally, FuzzContext, Impostor, Kind, KindStats } from './context'
import { httpKinds } from './http-kinds'
import type { ClusterFacts } from './inputs'
import { TokenBucket } from './limits'
import { Rng } from './rng'
import { wsKinds } from './ws-kinds'

export const ALL_KINDS: Kind[] = [...clusterKinds, ...wsKinds, ...httpKinds]

export interface FuzzOptions {
  seconds: number
  seed: number
  /** Kind names (or prefixes such as `ws.`) to leave out. */
  exclude?: string[]
  /** Kind names (or prefixes) to run; default all. */
  only?: string[]
  lanes?: number
  inputsPerSecond?: number
  bytesPerSecond?: number
  checkerUsers?: number
  checkerIntervalMs?: number
  settleTimeoutMs?: number
  /** Progress lines. */
  log?: (line: string) => void
  /**
   * Findings already reported elsewhere (an open issue): still printed, under "known", but they do
   * not fail the run. Each pattern must name where the finding is tracked.
   */
  knownFindings?: RegExp[]
  /** Set by a signal handler: stop early, still clean up. */
  abort?: AbortSignal
}

export interface FuzzResult {
  seed: number
  /** Findings that fail the run: a dead node, disagreement, lost checker messages, unexpected reactions. */
  failures: string[]
  /** Findings matching `knownFindings`. */
  known: string[]
  kinds: Record<string, KindStats>
  checker: { sent: number; delivered: number; expected: number }
  /** Frames (by type) and connections the nodes sent to addresses authenticated non-members claimed. */
  impostorReceived: Record<string, number>
  /** The same for addresses only unauthenticated connections claimed: must stay empty. */
  outsiderReceived: Record<string, number>
  tally: ClusterTally
  /** Sums over the nodes of their transport counters' growth during the run. */
  counters: { authFailures: number; invalid: number }
  /** Leader and term before and after the run (not judged: an election under load is allowed). */
  leadership: { before: string; after: string }
  loadCpuPercent: number
  nodeCpuPercent: number[]
  rejoins: number
  wallSeconds: number
  summary: string
}

const ANOMALIES_MAX = 40
/** Log lines that mean a node caught something that escaped a handler. */
const SUSPICIOUS_LOG = /threw|http error|TypeError|RangeError|ReferenceError|Unhandled|uncaught|panic|Maximum call stack/i

const matches = (name: string, patterns: string[]) => patterns.some((p) => name === p || (p.endsWith('.') && name.startsWith(p)) || (p.endsWith('*') && name.startsWith(p.slice(0, -1))))

export function selectKinds(options: Pick<FuzzOptions, 'only' | 'exclude'>): Kind[] {
  const unknown = [...(options.only ?? []), ...(options.exclude ?? [])].filter((p) => !ALL_KINDS.some((k) => matches(k.name, [p])))
  if (unknown.length > 0) throw new Error(`unknown fuzz kind(s): ${unknown.join(', ')}; known: ${ALL_KINDS.map((k) => k.name).join(', ')}`)
  return ALL_KINDS.filter((k) => (!options.only || matches(k.name, options.only)) && !matches(k.name, options.exclude ?? []))
}

function cpuTicks(pid: number): number | null {
  try {
    const stat = require('node:fs').readFileSync(`/proc/${pid}/stat`, 'utf8') as string
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return Number(fields[11]) + Number(fields[12]) // utime + stime, in clock ticks (100/s)
  } catch {
    return null
  }
}

async function factsOf(nodes: NodeHandle[], systemName: string, checkerNames: string[]): Promise<ClusterFacts> {
  const infos = await Promise.all(nodes.map((n) => n.info().catch(() => null)))
  const facts: ClusterFacts = { systemName, nodes: [], term: 0, commitIndex: 0, checkerNames }
  for (const [i, node] of nodes.entries()) {
    const info = infos[i]
    const inc = typeof info?.incarnation === 'string' ? info.incarnation : 'unknown'
    facts.nodes.push({ address: node.address, incarnation: inc, id: `${node.address}#${inc}`, clusterPort: node.clusterPort, httpPort: node.httpPort })
    facts.term = Math.max(facts.term, Number(info?.term) || 0)
    facts.commitIndex = Math.max(facts.commitIndex, Number(info?.commitIndex) || 0)
  }
  return facts
}

/** Listeners on ports the fuzzer owns, used as non-member addresses; they count what nodes send them. */
function startImpostors(n: number, systemName: string, received: Record<string, number>) {
  const listeners: { stop(closeActive?: boolean): void }[] = []
  const impostors: Impostor[] = []
  return {
    impostors,
    async start() {
      for (let i = 0; i < n; i++) {
        const port = await freePort()
        listeners.push(
          Bun.listen<{ decoder: FrameDecoder }>({
            hostname: LOOPBACK,
            port,
            socket: {
              open(socket) {
                socket.data = { decoder: new FrameDecoder(DEFAULT_MAX_FRAME_BYTES) }
                received['(connection)'] = (received['(connection)'] ?? 0) + 1
              },
              data(socket, chunk) {
                try {
                  for (const value of socket.data.decoder.push(chunk)) {
                    const type = String((value as { type?: unknown } | null)?.type ?? '?').slice(0, 30)
                    received[type] = (received[type] ?? 0) + 1
                  }
                } catch {
                  socket.terminate()
                }
              },
            },
          }),
        )
        const address = `bun://${systemName}@${LOOPBACK}:${port}`
        impostors.push({ address, id: `${address}#0` })
      }
    },
    stop() {
      for (const l of listeners) l.stop(true)
    },
  }
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzResult> {
  const log = options.log ?? (() => {})
  const kinds = selectKinds(options)
  if (kinds.length === 0) throw new Error('no fuzz kinds selected')
  const seed = options.seed >>> 0
  const root = new Rng(seed)
  const systemName = DEFAULT_SYSTEM_NAME
  // The secret is the nodes' and the insiders'; outsiders never finish a handshake with it.
  const secret = `fuzz-${seed}-${randomBytes(16).toString('hex')}`
  const handshake: HandshakeConfig = { systemName, secret }
  const lanes = options.lanes ?? 6
  const checkerNames = Array.from({ length: options.checkerUsers ?? 3 }, (_, i) => `checker${i + 1}-${seed.toString(36)}`)
  const stats: Record<string, KindStats> = Object.fromEntries(kinds.map((k) => [k.name, { inputs: 0, bytes: 0, connections: 0, outcomes: {} }]))
  const failures: string[] = []
  const anomalies = new Map<string, number>()
  const impostorReceived: Record<string, number> = {}
  const outsiderReceived: Record<string, number> = {}
  const tally: ClusterTally = { unauthConnections: 0, unauthRefused: 0, authedConnections: 0, authedRefused: 0 }
  const open = new Set<() => void>()
  let stopping = false
  const stopped = () => stopping || options.abort?.aborted === true

  log(`fuzz: seed ${seed}, ${options.seconds} s, kinds ${kinds.map((k) => k.name).join(' ')}`)
  const started = performance.now()
  const nodes = await startCluster(3, { env: { CLUSTER_SECRET: secret } })
  const sinks = startImpostors(3, systemName, impostorReceived)
  const outsiderSinks = startImpostors(3, systemName, outsiderReceived)
  const checker = new Checker(checkerNames, options.checkerIntervalMs ?? 100)
  let result: FuzzResult | undefined
  try {
    await sinks.start()
    await outsiderSinks.start()
    let facts = await factsOf(nodes, systemName, checkerNames)
    const firstIncarnations = facts.nodes.map((n) => n.incarnation)
    log(`fuzz: cluster up (${nodes.map((n) => `${n.name} cluster ${n.clusterPort}`).join(', ')}), leader term ${facts.term}`)
    await checker.start(nodes)
    const countersBefore = await transportCounters(nodes)
    const leaderBefore = await leadership(nodes)

    const inputs = new TokenBucket(options.inputsPerSecond ?? 150, 20)
    const bytes = new TokenBucket(options.bytesPerSecond ?? 2 * 1024 * 1024, 512 * 1024)
    const cpuStart = process.cpuUsage()
    const nodeTicksStart = nodes.map((n) => cpuTicks(n.proc.pid))
    const fuzzStart = performance.now()
    const deadline = fuzzStart + options.seconds * 1000

    // Refresh what the inputs are built from; watch for dead nodes as we go.
    const watch = setInterval(() => {
      void factsOf(nodes, systemName, checkerNames).then((f) => (facts = f))
      for (const node of nodes) if (node.proc.exitCode !== null || node.proc.signalCode !== null) stopping = true
    }, 1000)

    const runLane = async (lane: number) => {
      const rng = root.fork(lane)
      while (!stopped() && performance.now() < deadline) {
        const kind = rng.weighted(kinds.map((k) => [k.weight, k] as const))
        if (!(await inputs.take(1, stopped))) break
        const ctx: FuzzContext = {
          rng,
          facts: () => facts,
          handshake,
          impostors: sinks.impostors,
          outsiders: outsiderSinks.impostors,
          tally,
          handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
          spend: (n) => bytes.take(n, stopped),
          stopped,
          stats: stats[kind.name]!,
          anomaly: (text) => {
            const key = `${kind.name}: ${text}`
            anomalies.set(key, (anomalies.get(key) ?? 0) + 1)
          },
          track: (close) => {
            open.add(close)
            return () => open.delete(close)
          },
          refusalWaitMs: 5000,
        }
        try {
          await kind.run(ctx)
        } catch (error) {
          ctx.anomaly(`fuzzer action threw: ${error instanceof Error ? error.message : String(error)}`)
        }
      }
    }
    const progress = setInterval(() => {
      const sent = Object.values(stats).reduce((s, k) => s + k.inputs, 0)
      log(`fuzz: ${Math.round((performance.now() - fuzzStart) / 1000)} s, ${sent} inputs, checker sent ${checker.sent}, ${anomalies.size} kinds of anomaly`)
    }, 5000)
    try {
      await Promise.all(Array.from({ length: lanes }, (_, i) => runLane(i)))
    } finally {
      clearInterval(progress)
      clearInterval(watch)
      stopping = true
      for (const close of open) close()
    }
    const fuzzSeconds = (performance.now() - fuzzStart) / 1000
    const cpu = process.cpuUsage(cpuStart)
    const loadCpuPercent = ((cpu.user + cpu.system) / 1e6 / fuzzSeconds) * 100
    const nodeCpuPercent = nodes.map((n, i) => {
      const end = cpuTicks(n.proc.pid)
      const start = nodeTicksStart[i]
      return end === null || start == null ? Number.NaN : ((end - start) / 100 / fuzzSeconds) * 100
    })
    if (options.abort?.aborted) failures.push('interrupted')

    // The verdict. 1: every process alive and answering.
    for (const node of nodes) {
      if (node.proc.exitCode !== null || node.proc.signalCode !== null) failures.push(`${node.name} exited (${node.proc.exitCode ?? node.proc.signalCode})`)
    }
    const answering = await Promise.all(
      nodes.map(async (node) => {
        const t = performance.now() + 5000
        while (performance.now() < t) {
          if (await node.info().then(() => true, () => false)) return true
          await Bun.sleep(100)
        }
        return false
      }),
    )
    for (const [i, ok] of answering.entries()) if (!ok) failures.push(`${nodes[i]!.name} does not answer /api/cluster-info`)
    // 2: the checker lost nothing (judged before the settle, so a slow settle cannot hide a loss).
    const report = await checker.finish(15_000)
    for (const p of report.closes) failures.push(`checker: ${p}`)
    for (const p of report.problems.slice(0, 20)) failures.push(`checker: ${p}`)
    if (report.problems.length > 20) failures.push(`checker: … ${report.problems.length - 20} more problems`)
    // 3: the members agree on the member list and the leader.
    if (answering.every(Boolean)) {
      try {
        await waitForConvergence(nodes, { timeoutMs: options.settleTimeoutMs ?? 20_000 })
      } catch (error) {
        failures.push(`members do not agree: ${(error as Error).message.split('\n').slice(0, 2).join(' ')}`)
      }
    }
    // Chat that users saw from an address that is not a member: injected by a non-member peer.
    const memberAddresses = new Set(nodes.map((n) => n.address))
    const injected = checker.chatSeen().filter((f) => !memberAddresses.has(f.nodeAddress))
    if (injected.length > 0) failures.push(`chat from a non-member reached users ${injected.length} time(s), e.g. ${JSON.stringify(injected[0]).slice(0, 200)}`)
    // What the cluster kinds saw refused, against what the nodes counted: every unauthenticated
    // connection a node closed is one authFailure, every authenticated one it closed one invalid.
    const countersAfter = await transportCounters(nodes)
    const counters = { authFailures: countersAfter.authFailures - countersBefore.authFailures, invalid: countersAfter.invalid - countersBefore.invalid }
    if (countersBefore.ok && countersAfter.ok) {
      if (counters.authFailures < tally.unauthRefused) failures.push(`nodes counted ${counters.authFailures} authFailures, but closed ${tally.unauthRefused} unauthenticated fuzz connections`)
      if (counters.invalid < tally.authedRefused) failures.push(`nodes counted ${counters.invalid} invalid, but closed ${tally.authedRefused} authenticated fuzz connections`)
      // Upper bounds: a refusal is counted once, and only the fuzzer's connections are refused.
      if (counters.authFailures > tally.unauthConnections + tally.authedConnections) failures.push(`nodes counted ${counters.authFailures} authFailures for ${tally.unauthConnections + tally.authedConnections} fuzz connections`)
      if (counters.invalid > tally.authedConnections) failures.push(`nodes counted ${counters.invalid} invalid for ${tally.authedConnections} authenticated fuzz connections`)
    } else failures.push('could not read every node\'s transport counters')
    if (Object.keys(outsiderReceived).length > 0) failures.push(`nodes reached out to addresses only unauthenticated connections claimed: ${JSON.stringify(outsiderReceived)}`)
    const leaderAfter = await leadership(nodes)
    const finalFacts = await factsOf(nodes, systemName, checkerNames)
    const rejoins = finalFacts.nodes.filter((n, i) => n.incarnation !== firstIncarnations[i]).length
    if (rejoins > 0) failures.push(`${rejoins} node(s) were removed and rejoined as a new incarnation during the run`)
    // 4: reactions the nodes must not have.
    for (const [text, n] of [...anomalies].slice(0, ANOMALIES_MAX)) failures.push(`${text}${n > 1 ? ` (×${n})` : ''}`)
    if (anomalies.size > ANOMALIES_MAX) failures.push(`… ${anomalies.size - ANOMALIES_MAX} more kinds of anomaly`)
    for (const node of nodes) {
      // A refused peer connection is logged with its reason (which may quote a caught decode error):
      // expected, unless the validator itself threw ("cannot check frame").
      const lines = node.logs().split('\n').filter((l) => /cannot check frame/.test(l) || (SUSPICIOUS_LOG.test(l) && !/refused connection from|closed connection from/.test(l)))
      if (lines.length > 0) failures.push(`${node.name} logged ${lines.length} suspicious line(s), first: ${lines[0]!.slice(0, 300)}`)
    }

    const known = failures.filter((f) => options.knownFindings?.some((p) => p.test(f)))
    result = {
      seed,
      failures: failures.filter((f) => !known.includes(f)),
      known,
      kinds: stats,
      checker: { sent: checker.sent, delivered: report.delivered, expected: report.expected },
      impostorReceived,
      outsiderReceived,
      tally,
      counters,
      leadership: { before: leaderBefore, after: leaderAfter },
      loadCpuPercent,
      nodeCpuPercent,
      rejoins,
      wallSeconds: (performance.now() - started) / 1000,
      summary: '',
    }
    result.summary = summarize(result, kinds, nodes)
    return result
  } finally {
    for (const close of open) close()
    await checker.close().catch(() => {})
    sinks.stop()
    outsiderSinks.stop()
    await Promise.all(nodes.map((n) => n.stop(3000)))
    if (!result) log(`fuzz: run failed before its verdict; replay with --seed ${seed}`)
  }
}

function summarize(r: FuzzResult, kinds: Kind[], nodes: NodeHandle[]): string {
  const lines: string[] = []
  lines.push(`seed ${r.seed} (replay: bun run fuzz --seconds N --seed ${r.seed})`)
  lines.push('inputs by kind:')
  for (const k of kinds) {
    const s = r.kinds[k.name]!
    const outcomes = Object.entries(s.outcomes).sort(([a], [b]) => a.localeCompare(b)).map(([o, n]) => `${o}=${n}`).join(' ')
    lines.push(`  ${k.name.padEnd(22)} ${String(s.inputs).padStart(6)} inputs ${String(s.connections).padStart(6)} conns ${(s.bytes / 1024).toFixed(0).padStart(7)} KiB  ${outcomes}`)
  }
  const total = Object.values(r.kinds).reduce((a, s) => a + s.inputs, 0)
  lines.push(`total inputs: ${total}`)
  lines.push(`impostor addresses (authenticated non-members) received from nodes: ${JSON.stringify(r.impostorReceived)}`)
  lines.push(`outsider addresses (never authenticated) received from nodes: ${JSON.stringify(r.outsiderReceived)}`)
  const t = r.tally
  lines.push(`cluster connections: ${t.unauthConnections} unauthenticated (${t.unauthRefused} closed by a node; nodes counted ${r.counters.authFailures} authFailures), ${t.authedConnections} authenticated (${t.authedRefused} closed by a node; nodes counted ${r.counters.invalid} invalid)`)
  lines.push(`leader before: ${r.leadership.before}; after: ${r.leadership.after}`)
  lines.push(`node process restarts: 0 (processes that exited: ${nodes.filter((n) => n.proc.exitCode !== null || n.proc.signalCode !== null).length}); membership rejoins: ${r.rejoins}`)
  lines.push(`checker: ${r.checker.sent} sent, ${r.checker.delivered}/${r.checker.expected} deliveries`)
  lines.push(`CPU: load generator ${r.loadCpuPercent.toFixed(0)}%, nodes ${r.nodeCpuPercent.map((c) => `${c.toFixed(0)}%`).join(' / ')}; wall ${r.wallSeconds.toFixed(1)} s`)
  if (r.known.length > 0) lines.push(`known findings (tracked elsewhere, not failing this run):\n${r.known.map((f) => `  - ${f}`).join('\n')}`)
  lines.push(r.failures.length === 0 ? 'verdict: PASS' : `verdict: FAIL (${r.failures.length})\n${r.failures.map((f) => `  - ${f}`).join('\n')}`)
  return lines.join('\n')
}

/** authFailures and invalid summed over the nodes' /api/cluster-info transport counters. */
async function transportCounters(nodes: NodeHandle[]): Promise<{ ok: boolean; authFailures: number; invalid: number }> {
  const infos = await Promise.all(nodes.map((n) => n.info().catch(() => null)))
  return {
    ok: infos.every((i) => typeof i?.transport?.authFailures === 'number' && typeof i?.transport?.invalid === 'number'),
    authFailures: infos.reduce((sum, i) => sum + (Number(i?.transport?.authFailures) || 0), 0),
    invalid: infos.reduce((sum, i) => sum + (Number(i?.transport?.invalid) || 0), 0),
  }
}

/** The leader and term each node reports, for the summary. */
async function leadership(nodes: NodeHandle[]): Promise<string> {
  const infos = await Promise.all(nodes.map((n) => n.info().catch(() => null)))
  return infos.map((i) => (i ? `${String(i.leader ?? 'none').replace(/^bun:\/\/[^@]*@/, '')}@term${i.term}` : '?')).join(' ')
}

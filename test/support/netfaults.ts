// Fault scenarios on real processes in network namespaces (./netns.ts), shared by the e2e suite
// (test/e2e/netfaults.test.ts, short) and the measurement script (scripts/netfaults.ts, long).
// Each scenario returns what it measured; the caller decides what must hold.
//
// Users chat with numbered messages (`u2#17`) throughout; an observer polls every node's
// /api/cluster-info and records leaders, terms, member changes and when the cluster is one view
// again (every member Up and reachable, one leader, one commit index on every node).
import { REPO_ROOT, startNode, waitFor, waitForConvergence, type NodeHandle } from './cluster'
import { createLab, type Lab } from './netns'
import { MovingUser } from './moving-user'

const CLUSTER_PORT = 7355
const HTTP_PORT = 8080
const POLL_MS = 25

export interface LabCluster {
  lab: Lab
  nodes: NodeHandle[]
  /** 1-based number of the node `address` names, or 0. */
  indexOf(address: string | null): number
  stop(): Promise<void>
}

/** `n` nodes, each in its own namespace, seeded with one another; resolves once they converge. */
export async function startLabCluster(n: number, args: string[] = []): Promise<LabCluster> {
  const lab = createLab(n)
  const nodes: NodeHandle[] = []
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.stop(3000)))
    lab.destroy()
  }
  try {
    const seeds = Array.from({ length: n }, (_, i) => `${lab.address(i + 1)}:${CLUSTER_PORT}`)
    // Fresh namespaces: every port is free in each, so fixed ports are safe.
    const options = (i: number) => ({
      host: lab.address(i),
      prefix: lab.exec(i),
      clusterPort: CLUSTER_PORT,
      httpPort: HTTP_PORT,
      seeds,
      name: `node${i}`,
      args,
      env: { CLUSTER_SECRET: 'netfaults-test-secret-0123456789abcdef' },
    })
    nodes.push(await startNode(options(1)))
    nodes.push(...(await Promise.all(Array.from({ length: n - 1 }, (_, k) => startNode(options(k + 2))))))
    await waitForConvergence(nodes, { timeoutMs: 20_000 })
  } catch (error) {
    await stop()
    throw error
  }
  return { lab, nodes, indexOf: (address) => nodes.findIndex((node) => node.address === address) + 1, stop }
}

// ---------------------------------------------------------------- users

export interface Tally {
  sent: number
  lost: number
  duplicated: number
  reordered: number
  /** Refusals for now (rate, load) the users were told of; they sent those messages again, as the page does. */
  refusals: number
}

/**
 * One user per node sending numbered messages as the page does (MovingUser: a clientMsgId, kept
 * until acknowledged, sent again after a refusal for now); counts what every other user received.
 * A message refused and sent again is not lost: lost is said and never received.
 */
export class Chatters {
  private readonly users: MovingUser[] = []
  private readonly sent: number[] = []
  private timer: ReturnType<typeof setInterval> | null = null

  static async start(nodes: NodeHandle[], intervalMs = 100): Promise<Chatters> {
    const chatters = new Chatters()
    const tag = Math.random().toString(36).slice(2, 6)
    for (const [i, node] of nodes.entries()) {
      const user = new MovingUser(`u${i + 1}${tag}`, node.httpUrl)
      await user.connect()
      chatters.users.push(user)
      chatters.sent.push(0)
    }
    chatters.timer = setInterval(() => chatters.users.forEach((user, i) => user.client.isClosed() || user.send(`${user.username}#${++chatters.sent[i]!}`)), intervalMs)
    return chatters
  }

  /** Stops sending, waits (up to `settleMs`) for every message to be acknowledged and to arrive, closes, and counts. */
  async finish(settleMs = 5000): Promise<Tally> {
    if (this.timer) clearInterval(this.timer)
    const arrived = () => this.users.every((_, r) => this.users.every((__, s) => r === s || this.numbers(r, s).includes(this.sent[s]!)))
    await waitFor(() => this.users.every((u) => u.pending === 0) && arrived(), { timeoutMs: settleMs, intervalMs: 50 }).catch(() => {})
    const tally: Tally = { sent: 0, lost: 0, duplicated: 0, reordered: 0, refusals: 0 }
    for (const [s, user] of this.users.entries()) (tally.sent += this.sent[s]!), (tally.refusals += user.refusals)
    for (const [r] of this.users.entries()) {
      for (const [s] of this.users.entries()) {
        if (r === s) continue
        const seen = this.numbers(r, s)
        const distinct = new Set(seen)
        tally.lost += this.sent[s]! - distinct.size
        tally.duplicated += seen.length - distinct.size
        let max = 0
        for (const k of seen) {
          if (k < max) tally.reordered++
          max = Math.max(max, k)
        }
      }
    }
    await Promise.all(this.users.map((user) => user.stop()))
    return tally
  }

  private numbers(receiver: number, sender: number): number[] {
    const prefix = `${this.users[sender]!.username}#`
    return this.users[receiver]!.chats.filter((f) => typeof f.message === 'string' && f.message.startsWith(prefix)).map((f) => Number((f.message as string).slice(prefix.length)))
  }
}

// ---------------------------------------------------------------- observer

interface Snapshot {
  at: number
  /** Per node: its info, or null when it did not answer. */
  infos: (any | null)[]
}

/** Polls every node's view; tells leader changes, member changes and when the views are one again. */
export class Observer {
  private readonly snapshots: Snapshot[] = []
  private running = true
  private readonly loop: Promise<void>
  private readonly firstMembers: string

  constructor(
    private readonly nodes: NodeHandle[],
    first: any[],
  ) {
    this.firstMembers = memberIds(first[0])
    this.loop = (async () => {
      while (this.running) {
        const at = performance.now()
        const infos = await Promise.all(nodes.map((node) => node.info().catch(() => null)))
        this.snapshots.push({ at, infos })
        await Bun.sleep(Math.max(0, POLL_MS - (performance.now() - at)))
      }
    })()
  }

  static async start(nodes: NodeHandle[]): Promise<Observer> {
    return new Observer(nodes, await Promise.all(nodes.map((node) => node.info())))
  }

  async stop(): Promise<void> {
    this.running = false
    await this.loop
  }

  /** Distinct non-null leaders any node reported, in order of first sight. */
  leaders(): string[] {
    const seen: string[] = []
    for (const s of this.snapshots) for (const info of s.infos) if (info?.leader && !seen.includes(info.leader)) seen.push(info.leader)
    return seen
  }

  /** Highest term any node reported minus the lowest: elections that happened. */
  termsAdvanced(): number {
    const terms = this.snapshots.flatMap((s) => s.infos.filter(Boolean).map((i) => i.term as number))
    return terms.length ? Math.max(...terms) - Math.min(...terms) : 0
  }

  /** Whether any node ever showed a member set (ids with incarnations) other than the first one, or a member not Up. */
  memberChanges(): number {
    let changes = 0
    for (const s of this.snapshots) for (const info of s.infos) if (info && (memberIds(info) !== this.firstMembers || info.members.some((m: any) => m.status !== 'Up'))) changes++
    return changes
  }

  /** Snapshots in which node `n` (1-based) showed members other than the first set (its own status aside). */
  changesSeenBy(n: number, from: number, to: number): number {
    return this.snapshots.filter((s) => s.at >= from && s.at <= to && s.infos[n - 1] && memberIds(s.infos[n - 1]) !== this.firstMembers).length
  }

  /** Time from `since` until the first snapshot in which the cluster is one view again (null: never). */
  oneViewAfter(since: number): number | null {
    for (const s of this.snapshots) if (s.at >= since && oneView(s.infos, this.nodes.length)) return s.at - since
    return null
  }
}

function memberIds(info: any): string {
  return (info?.members ?? [])
    .map((m: any) => `${m.address}#${m.incarnation}`)
    .sort()
    .join(',')
}

/** Every node answers, shows `n` members all Up and reachable, the same leader and commit index, and the same member ids. */
export function oneView(infos: (any | null)[], n: number): boolean {
  if (infos.some((info) => !info)) return false
  const first = infos[0]
  return infos.every(
    (info) =>
      info.status === 'Up' &&
      info.leader &&
      info.leader === first.leader &&
      info.commitIndex === first.commitIndex &&
      info.members.length === n &&
      info.members.every((m: any) => m.status === 'Up' && m.reachable) &&
      memberIds(info) === memberIds(first),
  )
}

// ---------------------------------------------------------------- scenarios

export interface FaultResult {
  name: string
  tally: Tally
  leaders: number
  elections: number
  memberChanges: number
  /** ms from the heal (or the load's end, see `after`) to one view again (null: not within the wait). */
  healMs: number | null
  /** What `healMs` counts from: `heal`, or `the load` (its end). */
  after: 'heal' | 'the load'
  /** Snapshots in which the isolated node showed another member set while cut off. */
  isolatedChanged?: number
}

/** Waits until the cluster is one view (after a previous run's disturbance) and returns the leader's number. */
async function settled(c: LabCluster): Promise<number> {
  await waitFor(async () => oneView(await Promise.all(c.nodes.map((n) => n.info().catch(() => null))), c.nodes.length), { timeoutMs: 30_000, message: 'cluster did not settle' })
  return c.indexOf((await c.nodes[0]!.info()).leader)
}

export type Pair = 'followers' | 'leader-follower'

/** Cuts one link for `cutMs` while users chat, heals it, and measures. */
export async function cutLink(c: LabCluster, pair: Pair, cutMs: number, healWaitMs = 10_000): Promise<FaultResult> {
  const leader = await settled(c)
  const followers = c.nodes.map((_, i) => i + 1).filter((i) => i !== leader)
  const [a, b] = pair === 'followers' ? [followers[0]!, followers[1]!] : [leader, followers[0]!]
  return fault(c, `${pair} ${a}↔${b} cut ${cutMs} ms`, () => c.lab.cut(a, b), () => c.lab.heal(a, b), cutMs, healWaitMs)
}

/** Cuts the leader off from every other node for `cutMs`, heals, and measures. */
export async function isolateLeader(c: LabCluster, cutMs: number, healWaitMs = 15_000): Promise<FaultResult> {
  const leader = await settled(c)
  const result = await fault(c, `leader ${leader} isolated ${cutMs} ms`, () => c.lab.isolate(leader), () => c.lab.healAll(), cutMs, healWaitMs, leader)
  return result
}

async function fault(c: LabCluster, name: string, cut: () => void, heal: () => void, cutMs: number, healWaitMs: number, isolated?: number): Promise<FaultResult> {
  const chatters = await Chatters.start(c.nodes)
  const observer = await Observer.start(c.nodes)
  let healedAt = 0
  let cutAt = 0
  try {
    await Bun.sleep(500) // chat flowing before the fault
    cutAt = performance.now()
    cut()
    await Bun.sleep(cutMs) // the fault's length is the scenario, not a wait for a condition
    heal()
    healedAt = performance.now()
    await waitFor(() => observer.oneViewAfter(healedAt) !== null, { timeoutMs: healWaitMs }).catch(() => {})
    await Bun.sleep(500) // chat flowing after the heal too
  } finally {
    heal()
    await observer.stop()
  }
  const tally = await chatters.finish()
  return {
    name,
    tally,
    leaders: observer.leaders().length,
    elections: observer.termsAdvanced(),
    memberChanges: observer.memberChanges(),
    healMs: observer.oneViewAfter(healedAt),
    after: 'heal',
    ...(isolated ? { isolatedChanged: observer.changesSeenBy(isolated, cutAt, healedAt) } : {}),
  }
}

/** What loads the leader's node: one client flooding as fast as it can, or 500 clients each at the rate limit (20/s). */
export type Load = 'flood' | 'many'

/**
 * Loads the leader's node for `seconds` from the root namespace (over the bridge, as clients on
 * the LAN) with bench/load-client.ts while users chat, and measures: overload must cost no member
 * and no message. The flood needs `--rate-limit 0` on the nodes (else the rate limit closes it at
 * once), 500 clients `--max-connections-per-ip` over 500 (they share the root's address).
 */
export async function overloadLeader(c: LabCluster, load: Load, seconds: number): Promise<FaultResult & { loadSent: number }> {
  const leader = await settled(c)
  const chatters = await Chatters.start(c.nodes)
  const observer = await Observer.start(c.nodes)
  const url = c.nodes[leader - 1]!.httpUrl
  const client = (clients: number, rate: string, tag: string) =>
    Bun.spawn(['bun', 'run', `${REPO_ROOT}/bench/load-client.ts`, url, String(clients), rate, String(seconds), tag], { stdout: 'pipe', stderr: 'inherit' })
  // Names of their own: a name closed for flooding is kept out for a while, and the next run's flooder is another client.
  const tag = Math.random().toString(36).slice(2, 6)
  const procs: Bun.Subprocess[] = []
  let loadSent = 0
  let endedAt = 0
  try {
    await Bun.sleep(500) // chat flowing before the load
    procs.push(...(load === 'flood' ? [client(1, 'flood', `flood${tag}`)] : [client(250, '20', `la${tag}`), client(250, '20', `lb${tag}`)]))
    await Promise.all(procs.map((p) => p.exited))
    endedAt = performance.now()
    for (const p of procs) loadSent += JSON.parse((await new Response(p.stdout as ReadableStream).text()).trim() || '{"sent":0}').sent
    await Bun.sleep(500) // chat flowing after the load too
  } finally {
    for (const p of procs) p.kill()
    await observer.stop()
  }
  const tally = await chatters.finish(15_000)
  return { name: `leader ${leader} loaded (${load}) ${seconds} s`, tally, leaders: observer.leaders().length, elections: observer.termsAdvanced(), memberChanges: observer.memberChanges(), healMs: observer.oneViewAfter(endedAt), after: 'the load', loadSent }
}

export function formatResult(r: FaultResult): string {
  const heal = r.healMs === null ? 'never' : `${Math.round(r.healMs)} ms`
  const iso = r.isolatedChanged === undefined ? '' : `, isolated side changed ${r.isolatedChanged}`
  return `${r.name}: users sent ${r.tally.sent} (${r.tally.refusals} refusals, sent again), lost ${r.tally.lost}, dup ${r.tally.duplicated}, reordered ${r.tally.reordered}; leaders ${r.leaders}, elections ${r.elections}, member-change snapshots ${r.memberChanges}; one view ${heal} after ${r.after}${iso}`
}

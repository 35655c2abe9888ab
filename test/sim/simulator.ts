// A deterministic simulator for the membership core, after TigerBeetle's VOPR: N nodes run the
// real Membership class on a simulated network and clock, every random choice comes from one
// seeded PRNG, and invariants are checked across all nodes after every step (one message
// delivery or one tick). One seed reproduces a whole run: `bun run sim --seed N --verbose`.
//
// Each seed picks (swarm testing: some faults are off in some seeds, so rare mixes happen):
//   - 1..7 addresses; node 0 is the first seed, starts at tick 0 with `bootstrap: true`, the
//     others start at random times; every node lists addresses 0..k as seeds.
//   - message drop, duplication, delay (1..delayMax ticks, sometimes up to LONG_DELAY_TICKS_MAX,
//     so messages overtake each other; messages due in one tick arrive in random order);
//   - partitions: symmetric splits, an isolated node, one-way (asymmetric) cuts, single links.
//     A message is lost if its link is cut when it arrives. Several may overlap;
//   - pauses: a node freezes (no ticks, its messages wait) for up to PAUSE_TICKS_MAX, like a
//     GC or VM stall;
//   - clock drift: each incarnation ticks at its own rate in [0.7, 1.4] of real time, so some
//     skip ticks and some tick twice in one real tick;
//   - crashes: the node loses everything (there is no persistence). It may restart later at the
//     same address as a new incarnation with `bootstrap: false`, or stay dead;
//   - graceful leaves, and later rejoins of an address that left.
//   Half of the crashes, pauses, leaves and isolations aim at the current leader. A node that
//   learns it was removed without asking to leave restarts as a new incarnation after a short
//   delay, as the shell does.
//
// Limits that keep a run within what Raft tolerates (a run that breaks them proves nothing):
//   - A crash or leave is refused unless every configuration that could still be in force keeps
//     a live majority: the committed one and the latest one in each live log, each taken with
//     the victim and every recently lost would-be joiner added (an in-flight join_request can
//     still add them). With no persistence a lost majority is unrecoverable by design, and a
//     member is a voter from the moment its addition is in the log. Leaving nodes count as lost.
//     A node cut off by a partition also counts as lost: the failure detector may remove it as
//     down, and removing a live member from an odd-sized configuration whose reachable part is a
//     bare majority costs one unit of fault tolerance (if a reachable member then crashes before
//     the removal commits, the cluster is stuck for good; seed 4538 before this rule).
//   - Only the first incarnation of node 0 may bootstrap; it is not crashed or made to leave
//     before something is committed.
//   - Seed-based discovery needs a reachable member among the seeds. When the seeds name every
//     address anything goes; when they name only some, node 0 is never crashed, paused,
//     partitioned or made to leave (it still loses, duplicates and delays messages).
//   - Drift is bounded so that a healthy heartbeat (10 ticks) always lands well inside the
//     shortest election timeout (50 ticks).
//
// Phases: a fault phase of 1000..6000 ticks, then a liveness phase: every partition heals,
// pauses end, and no message is dropped or duplicated (delay 1..3 ticks); no new crash, pause,
// leave or partition, while pending restarts and rejoins still happen. From SETTLE_TICKS after
// the faults stop and within LIVENESS_TICKS_MAX of it, all live nodes must agree on one leader
// and one committed member list that is exactly the live incarnations (every crashed, left or
// removed incarnation gone), all `Up` in view(), with no change pending, no leave unfinished
// and no restart due; and that must still hold STABLE_TICKS later, in the same term.
//
// Invariants, checked after every step against every incarnation that ever ran (Checker):
//   Election Safety (one leader per term), one vote per term, terms never decrease;
//   State Machine Safety (a node's committed prefix equals the one global committed history),
//   committed entries never undone (commitIndex never decreases, the prefix never changes);
//   Log Matching (same index and term: same entry, same preceding term), terms non-decreasing
//   along a log; Leader Append-Only; Leader Completeness (a new leader holds every entry
//   committed in an earlier term); past the committed history at most one add or remove in any
//   log (§4.1); only incarnations that sent a join_request or bootstrapped are ever added, and
//   each id is added at most once per log. Every AUDIT_EVERY_TICKS ticks each live node's whole
//   committed prefix is compared again. A tick before the node's nextDeadline() does nothing but
//   count: no message, and the same role, term, vote, log, commit and view (the shell sleeps
//   through such ticks).
import { DEFAULT_COMPACTION, Membership, type Compaction, type MembershipOptions, type Role, type StateMachine } from '../../src/cluster/membership'
import { addressOf, nodeId } from '../../src/cluster/address'
import type { Change, Entry, RaftMessage } from '../../src/cluster/messages'
import { DEFAULT_TIMING } from '../../src/cluster/timing'

/** The shell's own defaults, in ticks: the simulator runs what production runs. */
export const TIMING = DEFAULT_TIMING

export const NODES_MAX = 7
export const FAULT_TICKS_MIN = 1000
export const FAULT_TICKS_MAX = 6000
export const LONG_DELAY_TICKS_MAX = 200
export const PAUSE_TICKS_MAX = 200
export const PARTITION_TICKS_MAX = 1500
export const PARTITIONS_MAX = 2
export const LIVENESS_TICKS_MAX = 3000
export const STABLE_TICKS = 300
/**
 * Healthy ticks before convergence is judged: a check-quorum round that began during the faults
 * may still depose a leader (two election timeouts at the slowest clock rate).
 */
export const SETTLE_TICKS = 300
const AUDIT_EVERY_TICKS = 256
/** A lost would-be joiner may still be added while its join_request can be in flight. */
const ZOMBIE_TICKS = LONG_DELAY_TICKS_MAX + 50

export function membershipOptions(
  address: string,
  incarnation: string,
  seeds: string[],
  bootstrap: boolean,
  random: () => number,
): MembershipOptions {
  return { self: { address, incarnation, httpUrl: `http://${address}:3000` }, seeds, bootstrap, ...TIMING, random }
}

/** mulberry32: one 32-bit state, fast, and plenty for scheduling faults. */
export class Prng {
  private state: number
  constructor(seed: number) {
    this.state = seed >>> 0
  }
  /** Uniform in [0, 1). */
  next = (): number => {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  /** Uniform integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }
  chance(p: number): boolean {
    return this.next() < p
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!
  }
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1))
      const t = items[i]!
      items[i] = items[j]!
      items[j] = t
    }
    return items
  }
}

// ---- checker: invariants across every node, after every step ----

/** What the checker reads from a node: the public fields of Membership. */
export interface Observed {
  readonly selfId: string
  readonly role: Role
  readonly term: number
  readonly votedFor: string | null
  /** The log after the compacted prefix: entries[i] is at index logStart + 1 + i. */
  readonly entries: readonly Entry[]
  readonly commitIndex: number
  readonly logStart?: number
}

export class InvariantViolation extends Error {
  constructor(
    readonly invariant: string,
    readonly detail: string,
  ) {
    super(`${invariant}: ${detail}`)
    this.name = 'InvariantViolation'
  }
}

interface Shadow {
  start: number
  entries: readonly Entry[]
  commitIndex: number
  role: Role
  term: number
  votedFor: string | null
}

/** A log as the checker reads it: entries by absolute index, nothing before the compacted prefix. */
class LogView {
  constructor(
    readonly start: number,
    readonly entries: readonly Entry[],
  ) {}
  get last(): number {
    return this.start + this.entries.length
  }
  at(index: number): Entry | undefined {
    return index > this.start ? this.entries[index - this.start - 1] : undefined
  }
}

export class Checker {
  /** Every entry known to be committed (index i + 1): the one history all nodes must agree with. */
  readonly committed: Entry[] = []
  /** The term of the node that first committed each entry: the term it was committed in. */
  readonly committedInTerm: number[] = []
  /** The leader of each term, across all incarnations ever. */
  readonly leaderOfTerm = new Map<number, string>()
  /** Incarnations that sent a join_request or bootstrapped: the only ids a log may add. */
  readonly mayJoin = new Set<string>()
  onCommit: ((index: number, entry: Entry, by: string) => void) | null = null
  private readonly atIndexTerm = new Map<string, { entry: Entry; prevTerm: number }>()
  private readonly shadows = new Map<string, Shadow>()
  private readonly digests: number[] = [0]

  /** The digest (see SimMachine) of the committed history up to `index`. */
  digestAt(index: number): number | undefined {
    while (this.digests.length <= Math.min(index, this.committed.length)) {
      const i = this.digests.length
      this.digests.push(mix(this.digests[i - 1]!, showChange(this.committed[i - 1]!.change)))
    }
    return this.digests[index]
  }

  /** Ids added by some committed entry: a log that compacted them away still must not add them again. */
  private readonly addedAt = new Map<string, number>()

  /** Checks one node after it took a step (its state is compared with what it was before). */
  observe(n: Observed): void {
    let s = this.shadows.get(n.selfId)
    if (!s) this.shadows.set(n.selfId, (s = { start: 0, entries: [], commitIndex: 0, role: 'follower', term: 0, votedFor: null }))
    if (n.term < s.term) fail('Terms never decrease', `${n.selfId} went from term ${s.term} to ${n.term}`)
    if (n.term === s.term && s.votedFor !== null && n.votedFor !== s.votedFor) {
      fail('One vote per term', `${n.selfId} voted for ${s.votedFor} and then ${n.votedFor} in term ${n.term}`)
    }
    if (n.role === 'leader') {
      const leader = this.leaderOfTerm.get(n.term)
      if (leader === undefined) this.leaderOfTerm.set(n.term, n.selfId)
      else if (leader !== n.selfId) fail('Election Safety', `two leaders in term ${n.term}: ${leader} and ${n.selfId}`)
    }
    const log = n.entries
    const changed =
      (n.logStart ?? 0) !== s.start ||
      log.length !== s.entries.length ||
      log[log.length - 1] !== s.entries[s.entries.length - 1] ||
      n.commitIndex !== s.commitIndex ||
      n.role !== s.role ||
      n.term !== s.term
    if (changed) this.checkLog(n, s)
    s.role = n.role
    s.term = n.term
    s.votedFor = n.votedFor
  }

  /** A node applied committed entry `index` to its state machine. */
  applied(by: string, index: number, entry: Entry, term: number): void {
    this.commit(by, index, entry, term)
  }

  private commit(by: string, i: number, entry: Entry, term: number): void {
    if (i <= this.committed.length) {
      if (!sameEntry(this.committed[i - 1]!, entry)) {
        fail('State Machine Safety', `${by} commits ${show(entry)} at index ${i}, already committed there: ${show(this.committed[i - 1]!)}`)
      }
      return
    }
    if (i !== this.committed.length + 1) fail('State Machine Safety', `${by} commits index ${i} before ${this.committed.length + 1} is known committed`)
    this.committed.push(entry)
    this.committedInTerm.push(term)
    if (entry.change.type === 'add') this.addedAt.set(nodeId(entry.change.member.address, entry.change.member.incarnation), i)
    this.onCommit?.(i, entry, by)
  }

  /** Re-checks a node's whole committed prefix (what its log still holds), not only what changed. */
  audit(n: Observed): void {
    const log = new LogView(n.logStart ?? 0, n.entries)
    for (let i = log.start + 1; i <= n.commitIndex; i++) {
      if (!sameEntry(this.committed[i - 1]!, log.at(i)!)) {
        fail('State Machine Safety', `${n.selfId} holds ${show(log.at(i)!)} at committed index ${i}, committed is ${show(this.committed[i - 1]!)}`)
      }
    }
  }

  private checkLog(n: Observed, s: Shadow): void {
    const log = new LogView(n.logStart ?? 0, n.entries)
    const before = new LogView(s.start, s.entries)
    if (log.start > n.commitIndex) fail('Only committed entries are compacted', `${n.selfId} compacted to ${log.start} with commit ${n.commitIndex}`)
    if (n.commitIndex > log.last) fail('Commit within the log', `${n.selfId} commitIndex ${n.commitIndex} > log length ${log.last}`)
    if (n.commitIndex < s.commitIndex) {
      fail('Committed entries are never undone', `${n.selfId} commitIndex went from ${s.commitIndex} to ${n.commitIndex}`)
    }
    // d: the first index (absolute) where the log differs from before, over what both still hold.
    let d = Math.max(log.start, before.start) + 1
    const common = Math.min(log.last, before.last)
    while (d <= common && log.at(d) === before.at(d)) d++
    if (d <= s.commitIndex && d > log.start && d <= before.last) {
      const now = log.at(d)
      fail('Committed entries are never undone', `${n.selfId} changed committed entry ${d}: ${show(before.at(d)!)} -> ${now ? show(now) : 'nothing'}`)
    }
    if (d <= before.last && d > log.start && s.role === 'leader' && n.role === 'leader' && s.term === n.term) {
      fail('Leader Append-Only', `leader ${n.selfId} of term ${n.term} rewrote its log from index ${d}`)
    }
    for (let i = Math.max(d, log.start + 1); i <= log.last; i++) {
      const entry = log.at(i)!
      const prev = log.at(i - 1)
      const prevTerm = i === 1 ? 0 : prev ? prev.term : entry.term
      if (entry.term < prevTerm || entry.term > n.term) {
        fail('Log terms', `${n.selfId} (term ${n.term}) has term ${entry.term} at index ${i} after term ${prevTerm}`)
      }
      const key = `${i}:${entry.term}`
      const seen = this.atIndexTerm.get(key)
      if (!seen) {
        if (prev || i === 1) this.atIndexTerm.set(key, { entry: deepFreeze(entry), prevTerm })
      } else if (!sameEntry(seen.entry, entry) || (prev !== undefined && seen.prevTerm !== prevTerm)) {
        fail('Log Matching', `${n.selfId} has ${show(entry)} after term ${prevTerm} at index ${i}, another log has ${show(seen.entry)} after term ${seen.prevTerm}`)
      }
      const change = entry.change
      if (change.type === 'add') {
        const id = nodeId(change.member.address, change.member.incarnation)
        if (!this.mayJoin.has(id)) fail('Only nodes that asked to join are added', `${n.selfId} adds ${id} at index ${i}`)
        // Compacted away, an earlier addition still counts: a committed one at another index is a second.
        const committedAt = this.addedAt.get(id)
        if (committedAt !== undefined && committedAt <= log.start && committedAt !== i) fail('An id is added at most once', `${n.selfId} adds ${id} at ${i}, committed at ${committedAt}`)
        for (let j = log.start + 1; j < i; j++) {
          const c = log.at(j)!.change
          if (c.type === 'add' && nodeId(c.member.address, c.member.incarnation) === id) {
            fail('An id is added at most once', `${n.selfId} adds ${id} at ${j} and ${i}`)
          }
        }
      }
    }
    // State Machine Safety: every node's committed prefix is the one global history. Entries a
    // snapshot installed were committed elsewhere first; entries compacted in the very step that
    // committed them were seen as they were applied (applied()); the rest are compared here.
    for (let i = Math.max(s.commitIndex, log.start) + 1; i <= n.commitIndex; i++) this.commit(n.selfId, i, log.at(i)!, n.term)
    if (log.start > this.committed.length) fail('Only committed entries are compacted', `${n.selfId} holds a snapshot at ${log.start}, never committed anywhere`)
    // Leader Completeness: a new leader holds every entry committed in an earlier term (those its
    // log still holds; a compacted prefix is committed by construction). (A leader of an older
    // term may still be elected late, by delayed votes, after later terms committed.)
    if (n.role === 'leader' && (s.role !== 'leader' || s.term !== n.term)) {
      for (let i = log.start + 1; i <= this.committed.length; i++) {
        if (this.committedInTerm[i - 1]! >= n.term) continue
        if (!log.at(i) || !sameEntry(this.committed[i - 1]!, log.at(i)!)) {
          fail('Leader Completeness', `new leader ${n.selfId} of term ${n.term} lacks committed entry ${i} ${show(this.committed[i - 1]!)}`)
        }
      }
    }
    // Single-server changes (§4.1): past the committed history, at most one add or remove.
    let changes = 0
    const pending: Entry[] = []
    for (let i = Math.max(this.committed.length, log.start) + 1; i <= log.last; i++) {
      const t = log.at(i)!.change.type
      if (t === 'add' || t === 'remove') changes++
      pending.push(log.at(i)!)
    }
    if (changes > 1) {
      fail('One membership change at a time', `${n.selfId} has ${changes} uncommitted changes after index ${this.committed.length}: ${pending.map(show).join(', ')}`)
    }
    s.start = log.start
    s.entries = log.entries.slice()
    s.commitIndex = n.commitIndex
  }
}

function fail(invariant: string, detail: string): never {
  throw new InvariantViolation(invariant, detail)
}

function sameEntry(a: Entry, b: Entry): boolean {
  return a === b || (a.term === b.term && showChange(a.change) === showChange(b.change))
}

export function showChange(c: Change): string {
  if (c.type === 'noop') return 'noop'
  if (c.type === 'app') return `app ${JSON.stringify(c.data)?.slice(0, 80)}`
  if (c.type === 'add') return `add ${nodeId(c.member.address, c.member.incarnation)}`
  return `remove ${c.id} (${c.reason})`
}

const show = (e: Entry) => `[t${e.term} ${showChange(e.change)}]`

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/**
 * What a tick that only counts leaves as it was (see nextDeadline): what the view is made of, and
 * more. Primitives in an array, not a string: built after every tick, a string doubled the time.
 */
function quietState(m: Membership): unknown[] {
  return [m.role, m.term, m.leaderId, m.votedFor, m.logStart, m.lastIndex(), m.commitIndex, m.electionsStarted, m.removed, ...m.unreachableIds]
}

const sameState = (a: unknown[], b: unknown[]) => a.length === b.length && a.every((x, i) => x === b[i])

// ---- the simulated cluster ----

export class SimulationFailure extends Error {
  constructor(
    readonly seed: number,
    readonly invariant: string,
    readonly detail: string,
    readonly tick: number,
    replay = replayCommand(seed),
  ) {
    super(`seed ${seed}: ${invariant} violated at ${replay.includes('--whole') ? 'ms' : 'tick'} ${tick}: ${detail}\nreplay: ${replay}`)
    this.name = 'SimulationFailure'
  }
}

export const replayCommand = (seed: number) => `bun run sim --seed ${seed} --verbose`

export interface SimStats {
  seed: number
  addresses: number
  incarnations: number
  ticks: number
  steps: number
  elections: number
  commits: number
  delivered: number
  dropped: number
  duplicated: number
  partitions: number
  pauses: number
  crashes: number
  leaves: number
  rejoins: number
  /** Ticks from the end of the fault phase until the cluster converged. */
  convergedAfter: number
}

export interface SimOptions {
  /** Receives the trace (role and term changes, commits, faults) when set. */
  trace?: (line: string) => void
  /** Builds each node; tests pass a deliberately broken subclass to prove the checkers bite. */
  create?: (options: MembershipOptions) => Membership
}

interface Config {
  addresses: number
  seeds: string[]
  /** Seeds name only some addresses: node 0 is spared every fault but message loss. */
  anchor: boolean
  faultTicks: number
  startAt: number[]
  dropRate: number
  duplicateRate: number
  delayMax: number
  longDelayRate: number
  partitionRate: number
  pauseRate: number
  crashRate: number
  leaveRate: number
  drift: boolean
  /** Chance per node and tick (during the faults) of proposing application entries. */
  proposeRate: number
  compaction: Compaction
}

class SimNode {
  alive = true
  leaving = false
  lostAt = Infinity
  pausedUntil = 0
  clock: number
  role: Role = 'follower'
  term = 0
  /** Log length after the last step, to trace a leader's proposals. */
  proposed = 0
  appSeq = 0
  /** Ticks still due to be quiet (nextDeadline), and the state they must keep; null after any other step. */
  quiet: { ticks: number; state: unknown[] } | null = null
  constructor(
    readonly slot: Slot,
    readonly m: Membership,
    readonly rate: number,
    phase: number,
  ) {
    this.clock = phase
  }
  get id(): string {
    return this.m.selfId
  }
}

interface Slot {
  index: number
  address: string
  incarnations: number
  node: SimNode | null
  /** When the next incarnation starts, if one is due. */
  startAt: number | null
}

interface Partition {
  name: string
  cuts: [number, number][]
  until: number
}

type Queue = Map<number, RaftMessage[]>

export function runSeed(seed: number, options: SimOptions = {}): SimStats {
  return new Simulation(seed, options).run()
}

class Simulation {
  private readonly rng: Prng
  /** Application traffic only: a seed's faults are the same with and without it. */
  private readonly appRng: Prng
  private readonly cfg: Config
  private readonly checker = new Checker()
  private readonly slots: Slot[] = []
  private readonly slotOf = new Map<string, Slot>()
  private readonly everyNode: SimNode[] = []
  private readonly byId = new Map<string, SimNode>()
  private readonly queue: Queue = new Map()
  private partitions: Partition[] = []
  private cut: boolean[][] = []
  private now = 0
  private healed = false
  private readonly trace: ((line: string) => void) | null
  private readonly create: (options: MembershipOptions) => Membership
  private readonly stats: SimStats

  constructor(
    private readonly seed: number,
    options: SimOptions,
  ) {
    this.rng = new Prng(seed)
    this.appRng = new Prng(seed ^ 0x5eed5eed)
    this.trace = options.trace ?? null
    this.create = options.create ?? ((o) => new Membership(o))
    this.cfg = this.chooseConfig()
    for (let i = 0; i < this.cfg.addresses; i++) {
      const slot: Slot = { index: i, address: `n${i}`, incarnations: 0, node: null, startAt: this.cfg.startAt[i]! }
      this.slots.push(slot)
      this.slotOf.set(slot.address, slot)
    }
    this.cut = this.slots.map(() => this.slots.map(() => false))
    this.stats = {
      seed, addresses: this.cfg.addresses, incarnations: 0, ticks: 0, steps: 0, elections: 0, commits: 0, delivered: 0,
      dropped: 0, duplicated: 0, partitions: 0, pauses: 0, crashes: 0, leaves: 0, rejoins: 0, convergedAfter: 0,
    }
    if (this.trace) {
      this.checker.onCommit = (index, entry, by) => this.log(`commit ${index}: ${show(entry)} (first on ${by})`)
      const c = this.cfg
      this.log(
        `seed ${seed}: ${c.addresses} addresses, seeds ${c.seeds.join(',')}${c.anchor ? ' (n0 spared)' : ''}, fault phase ${c.faultTicks} ticks; ` +
          `drop ${pct(c.dropRate)} dup ${pct(c.duplicateRate)} delay 1..${c.delayMax} long ${pct(c.longDelayRate)}; per tick: ` +
          `partition ${pct(c.partitionRate)} pause ${pct(c.pauseRate)} crash ${pct(c.crashRate)} leave ${pct(c.leaveRate)}; drift ${c.drift ? 'on' : 'off'}; ` +
          `starts ${c.startAt.join(',')}`,
      )
    }
  }

  private chooseConfig(): Config {
    const r = this.rng
    const addresses = r.int(1, NODES_MAX)
    const allSeeds = addresses <= 2 || r.chance(0.6)
    const seedCount = allSeeds ? addresses : r.int(1, addresses - 1)
    const faultTicks = r.int(FAULT_TICKS_MIN, FAULT_TICKS_MAX)
    const sometimes = (p: number, value: () => number) => (r.chance(p) ? value() : 0)
    const startAt = Array.from({ length: addresses }, (_, i) =>
      i === 0 ? 0 : r.chance(0.5) ? r.int(0, 150) : r.int(0, Math.floor(faultTicks * 0.7)),
    )
    return {
      addresses,
      seeds: Array.from({ length: seedCount }, (_, i) => `n${i}`),
      anchor: !allSeeds,
      faultTicks,
      startAt,
      dropRate: sometimes(0.7, () => r.next() * 0.2),
      duplicateRate: sometimes(0.5, () => r.next() * 0.1),
      delayMax: r.pick([1, 2, 5, 10, 30]),
      longDelayRate: sometimes(0.4, () => r.next() * 0.02),
      partitionRate: sometimes(0.7, () => r.next() / 150),
      pauseRate: sometimes(0.6, () => r.next() / 200),
      crashRate: sometimes(0.7, () => r.next() / 200),
      leaveRate: sometimes(0.5, () => r.next() / 600),
      drift: r.chance(0.6),
      // Drawn from the application PRNG: some seeds carry no application entries at all.
      proposeRate: this.appRng.chance(0.7) ? this.appRng.next() * 0.05 : 0,
      compaction: this.appRng.chance(0.2) ? DEFAULT_COMPACTION : { snapshotEvery: this.appRng.int(3, 60), keepEntries: this.appRng.int(0, 20) },
    }
  }

  run(): SimStats {
    const end = this.cfg.faultTicks
    let convergedAt = -1
    let convergedTerm = 0
    for (this.now = 0; ; this.now++) {
      if (this.now === end) this.heal()
      if (this.now < end) this.injectFaults()
      this.startDue()
      this.deliverDue()
      this.tickAll()
      if (this.now % AUDIT_EVERY_TICKS === 0) this.audit()
      if (this.now < end + SETTLE_TICKS) continue
      if (convergedAt < 0) {
        const why = this.notConverged()
        if (why === null) {
          convergedAt = this.now
          convergedTerm = this.leaderTerm()
          this.stats.convergedAfter = this.now - end
          this.log(`converged ${this.now - end} ticks after the faults stopped`)
        } else if (this.now - end >= LIVENESS_TICKS_MAX) {
          this.failure('Liveness', `not converged ${LIVENESS_TICKS_MAX} ticks after the faults stopped: ${why}`)
        }
      } else if (this.now - convergedAt >= STABLE_TICKS) {
        const why = this.notConverged()
        if (why !== null) this.failure('Liveness (stable)', `converged at tick ${convergedAt}, then lost it: ${why}`)
        if (this.leaderTerm() !== convergedTerm) {
          this.failure('Liveness (stable)', `term changed from ${convergedTerm} to ${this.leaderTerm()} on a healthy network`)
        }
        break
      }
    }
    this.audit()
    this.stats.ticks = this.now
    this.stats.elections = this.checker.leaderOfTerm.size
    this.stats.commits = this.checker.committed.length
    return this.stats
  }

  // ---- nodes ----

  private startDue(): void {
    for (const slot of this.slots) {
      if (slot.startAt === null || slot.startAt > this.now || slot.node) continue
      slot.startAt = null
      const incarnation = ++slot.incarnations
      const bootstrap = slot.index === 0 && incarnation === 1
      const rate = this.cfg.drift ? 0.7 + this.rng.next() * 0.7 : 1
      const machine = new SimMachine(`${slot.address}#${incarnation}`, this.checker, (invariant, detail) => this.failure(invariant, detail))
      const m = this.create({ ...membershipOptions(slot.address, String(incarnation), this.cfg.seeds, bootstrap, this.rng.next), app: machine, compaction: this.cfg.compaction })
      machine.term = () => m.term
      const node = new SimNode(slot, m, rate, this.rng.next())
      slot.node = node
      this.everyNode.push(node)
      this.byId.set(node.id, node)
      this.stats.incarnations++
      if (bootstrap) this.checker.mayJoin.add(node.id)
      this.log(`${node.id} starts${bootstrap ? ' (may bootstrap)' : ''}, clock rate ${rate.toFixed(2)}`)
    }
  }

  /** Called after every step of a node: send what it produced, check, and trace. */
  private afterStep(node: SimNode, produced = node.m.takeMessages()): void {
    this.stats.steps++
    node.quiet = null
    for (const out of produced) this.send(out.message)
    try {
      this.checker.observe(node.m)
    } catch (error) {
      if (error instanceof InvariantViolation) this.failure(error.invariant, error.detail)
      throw error
    }
    const m = node.m
    if (this.trace && m.role === 'leader' && m.lastIndex() > node.proposed) {
      for (let i = Math.max(node.proposed, m.lastIndex() - 1, m.logStart) + 1; i <= m.lastIndex(); i++) {
        const entry = m.entryAt(i)!
        if (entry.term === m.term && entry.change.type !== 'noop') this.log(`${node.id} proposes ${i}: ${show(entry)}`)
      }
    }
    node.proposed = m.lastIndex()
    if (m.role !== node.role || m.term !== node.term) {
      if (m.role !== node.role) this.log(`${node.id} ${node.role} -> ${m.role} in term ${m.term}${m.role === 'leader' ? `, ${this.describeLog(m)}` : ''}`)
      node.role = m.role
      node.term = m.term
    }
    if (m.removed && node.alive) this.lose(node, 'removed')
  }

  private lose(node: SimNode, how: 'crashed' | 'removed'): void {
    node.alive = false
    node.lostAt = this.now
    const slot = node.slot
    slot.node = null
    if (how === 'crashed') {
      // Most crashed nodes come back as a new incarnation; some stay dead for good.
      if (this.rng.chance(0.8)) slot.startAt = this.now + this.rng.int(1, 700)
      this.log(`${node.id} crashes${slot.startAt === null ? ' for good' : `, restarts at tick ${slot.startAt}`}`)
    } else if (node.leaving) {
      if (!this.healed && this.rng.chance(0.3)) slot.startAt = this.now + this.rng.int(50, 600)
      this.log(`${node.id} has left${slot.startAt === null ? '' : `; its address rejoins at tick ${slot.startAt}`}`)
    } else {
      // The shell restarts a node that was removed without asking to leave.
      slot.startAt = this.now + this.rng.int(0, 50)
      this.stats.rejoins++
      this.log(`${node.id} learns it was removed; rejoins at tick ${slot.startAt}`)
    }
  }

  private tickAll(): void {
    const order = this.rng.shuffle(this.slots.slice())
    for (const slot of order) {
      const node = slot.node
      if (!node || node.pausedUntil > this.now) continue
      node.clock += node.rate
      while (node.clock >= 1 && node.alive) {
        node.clock -= 1
        // The deadline is asked once per stretch of ticks with no other step between (it is
        // what the shell does, and asking before every tick made the simulator half as fast).
        let quiet = node.quiet
        if (!quiet) {
          const deadline = node.m.nextDeadline()
          quiet = deadline > 1 ? { ticks: deadline - 1, state: quietState(node.m) } : null
        }
        node.m.tick()
        const produced = node.m.takeMessages()
        if (quiet) {
          const after = quietState(node.m)
          if (produced.length > 0 || !sameState(after, quiet.state)) {
            const did = produced.length > 0 ? `sent ${produced.map((o) => o.message.type).join(', ')}` : `changed ${quiet.state.join('|')} to ${after.join('|')}`
            this.failure('Deadline', `${node.id} (${node.m.role}) had ${quiet.ticks} ticks to go before its deadline but its next tick ${did}`)
          }
        }
        this.afterStep(node, produced)
        if (quiet && --quiet.ticks > 0) node.quiet = quiet
      }
      // Application entries (their own PRNG, so seeds without them replay as they always did).
      if (!this.healed && node.alive && this.cfg.proposeRate > 0 && this.appRng.chance(this.cfg.proposeRate)) {
        const count = this.appRng.int(1, 3)
        node.m.propose(Array.from({ length: count }, () => `${node.id}:${++node.appSeq}`))
        this.afterStep(node)
      }
    }
  }

  // ---- network ----

  private send(message: RaftMessage): void {
    if (message.type === 'join_request') this.checker.mayJoin.add(message.from)
    if (!this.healed && this.rng.chance(this.cfg.dropRate)) {
      this.stats.dropped++
      return
    }
    this.schedule(message, this.now + this.delay())
    if (!this.healed && this.rng.chance(this.cfg.duplicateRate)) {
      this.stats.duplicated++
      this.schedule(message, this.now + this.delay())
    }
  }

  private delay(): number {
    if (this.healed) return this.rng.int(1, 3)
    if (this.rng.chance(this.cfg.longDelayRate)) return this.rng.int(1, LONG_DELAY_TICKS_MAX)
    return this.rng.int(1, this.cfg.delayMax)
  }

  private schedule(message: RaftMessage, at: number): void {
    const bucket = this.queue.get(at)
    if (bucket) bucket.push(message)
    else this.queue.set(at, [message])
  }

  private deliverDue(): void {
    const bucket = this.queue.get(this.now)
    if (!bucket) return
    this.queue.delete(this.now)
    for (const message of this.rng.shuffle(bucket)) {
      const from = this.slotOf.get(addressOf(message.from))!
      const to = this.slotOf.get(addressOf(message.to))
      if (!to || this.cut[from.index]![to.index]) {
        this.stats.dropped++
        continue
      }
      const node = to.node
      if (!node) continue // nobody listens at that address now
      if (node.pausedUntil > this.now) {
        this.schedule(message, node.pausedUntil)
        continue
      }
      this.stats.delivered++
      node.m.step(message)
      this.afterStep(node)
    }
  }

  // ---- faults ----

  private injectFaults(): void {
    const r = this.rng
    if (this.partitions.some((p) => p.until <= this.now)) {
      for (const p of this.partitions) if (p.until <= this.now) this.log(`partition ${p.name} heals`)
      this.setPartitions(this.partitions.filter((p) => p.until > this.now))
    }
    if (r.chance(this.cfg.partitionRate)) this.partition()
    if (r.chance(this.cfg.pauseRate)) this.pause()
    if (r.chance(this.cfg.crashRate)) this.crash()
    if (r.chance(this.cfg.leaveRate)) this.leave()
  }

  private heal(): void {
    this.healed = true
    this.setPartitions([])
    for (const node of this.liveNodes()) node.pausedUntil = Math.min(node.pausedUntil, this.now)
    this.log('faults stop: partitions heal, no more loss, duplication, pauses, crashes or leaves')
  }

  /** Nodes that faults may hit (node 0 is spared when it is the only seed sure to be live). */
  private faultable(): SimNode[] {
    return this.liveNodes().filter((n) => !(this.cfg.anchor && n.slot.index === 0))
  }

  private partition(): void {
    if (this.partitions.length >= PARTITIONS_MAX || this.slots.length < 2) return
    const r = this.rng
    const pool = this.slots.filter((s) => !(this.cfg.anchor && s.index === 0)).map((s) => s.index)
    if (pool.length < 2) return
    r.shuffle(pool)
    const leader = this.liveNodes().find((n) => n.m.role === 'leader')?.slot.index
    if (leader !== undefined && pool.includes(leader) && r.chance(0.5)) pool.unshift(...pool.splice(pool.indexOf(leader), 1))
    const kind = r.pick(['split', 'isolate', 'one-way', 'link'] as const)
    const sizeA = kind === 'split' || kind === 'one-way' ? r.int(1, pool.length - 1) : 1
    const a = pool.slice(0, sizeA)
    const b = kind === 'link' ? pool.slice(sizeA, sizeA + 1) : pool.slice(sizeA)
    const cuts: [number, number][] = []
    const bothWays = kind === 'split' || kind === 'isolate' || (kind === 'link' && r.chance(0.5))
    for (const x of a) {
      for (const y of b) {
        cuts.push([x, y])
        if (bothWays) cuts.push([y, x])
      }
    }
    const names = (side: number[]) => `{${side.map((i) => `n${i}`).join(',')}}`
    const name = `${kind} ${names(a)}${bothWays ? ' | ' : ' -/-> '}${names(b)}`
    const until = Math.min(this.now + r.int(20, PARTITION_TICKS_MAX), this.cfg.faultTicks)
    this.stats.partitions++
    this.log(`partition ${name} until tick ${until}`)
    this.setPartitions([...this.partitions, { name, cuts, until }])
  }

  private setPartitions(partitions: Partition[]): void {
    this.partitions = partitions
    for (const row of this.cut) row.fill(false)
    for (const p of partitions) for (const [x, y] of p.cuts) this.cut[x]![y] = true
  }

  /** Half of the time a fault hits the leader, if it may: that is what forces elections. */
  private victim(candidates: SimNode[]): SimNode | null {
    if (candidates.length === 0) return null
    const leader = candidates.find((n) => n.m.role === 'leader')
    return leader && this.rng.chance(0.5) ? leader : this.rng.pick(candidates)
  }

  private pause(): void {
    const node = this.victim(this.faultable().filter((n) => n.pausedUntil <= this.now))
    if (!node) return
    node.pausedUntil = Math.min(this.now + this.rng.int(5, PAUSE_TICKS_MAX), this.cfg.faultTicks)
    this.stats.pauses++
    this.log(`${node.id} pauses until tick ${node.pausedUntil}`)
  }

  private crash(): void {
    const node = this.victim(this.faultable())
    if (!node || !this.mayLose(node)) return
    this.stats.crashes++
    this.lose(node, 'crashed')
  }

  private leave(): void {
    const node = this.victim(this.faultable().filter((n) => !n.leaving))
    if (!node || !this.mayLose(node)) return
    node.leaving = true
    node.m.leave()
    node.quiet = null
    this.stats.leaves++
    this.log(`${node.id} asks to leave`)
  }

  /**
   * Whether `victim` may crash or leave: every configuration that could still be in force keeps
   * a live majority, even if the victim, or a would-be joiner lost lately, is added after all.
   */
  private mayLose(victim: SimNode): boolean {
    if (this.checker.committed.length === 0 && victim.slot.index === 0) return false
    // A node cut off by a partition may be removed as down, legitimately, so it counts as lost.
    const cutOff = new Set<number>()
    for (const p of this.partitions) for (const [x, y] of p.cuts) cutOff.add(x).add(y)
    const lost = (id: string) => {
      const n = this.byId.get(id)
      return !n || !n.alive || n.leaving || n === victim || cutOff.has(n.slot.index)
    }
    const maybeAdded = [victim.id]
    for (const n of this.everyNode) {
      if (!n.alive && this.now - n.lostAt <= ZOMBIE_TICKS && this.checker.mayJoin.has(n.id)) maybeAdded.push(n.id)
    }
    const configs: Iterable<string>[] = [this.committedMembers()]
    for (const n of this.liveNodes()) configs.push(n.m.membersAt(n.m.entries.length).keys())
    for (const config of configs) {
      const ids = new Set(config)
      for (const id of maybeAdded) ids.add(id)
      let live = 0
      for (const id of ids) if (!lost(id)) live++
      if (live * 2 <= ids.size) return false
    }
    return true
  }

  private committedMembers(): Set<string> {
    const members = new Set<string>()
    for (const { change: c } of this.checker.committed) {
      if (c.type === 'add') members.add(nodeId(c.member.address, c.member.incarnation))
      if (c.type === 'remove') members.delete(c.id)
    }
    return members
  }

  // ---- liveness ----

  private liveNodes(): SimNode[] {
    const live: SimNode[] = []
    for (const slot of this.slots) if (slot.node) live.push(slot.node)
    return live
  }

  private leaderTerm(): number {
    return this.liveNodes().find((n) => n.m.role === 'leader')?.m.term ?? -1
  }

  /** Why the cluster has not converged yet, or null when it has. */
  private notConverged(): string | null {
    const pending = this.slots.find((s) => s.startAt !== null)
    if (pending) return `n${pending.index} is still to start (tick ${pending.startAt})`
    const live = this.liveNodes()
    if (live.length === 0) return 'no live node'
    const leaving = live.find((n) => n.leaving)
    if (leaving) return `${leaving.id} is still leaving`
    const leader = live.find((n) => n.m.role === 'leader')
    if (!leader) return 'no leader'
    const expected = live.map((n) => n.id).sort().join(' ')
    for (const n of live) {
      const m = n.m
      if (m.leaderId !== leader.id || m.term !== leader.m.term) {
        return `${n.id} follows ${m.leaderId} in term ${m.term}, not ${leader.id} in term ${leader.m.term}`
      }
      if (m.commitIndex !== leader.m.commitIndex || m.lastIndex() !== m.commitIndex) {
        return `${n.id} has commitIndex ${m.commitIndex} and log length ${m.lastIndex()}, the leader ${leader.m.commitIndex}`
      }
      const members = [...m.membersAt(m.commitIndex).keys()].sort().join(' ')
      if (members !== expected) return `${n.id} has members [${members}], live are [${expected}]`
    }
    for (const n of live) {
      const view = n.m.view()
      if (view.status !== 'Up') return `${n.id} sees itself ${view.status}`
      const notUp = view.members.find((v) => v.status !== 'Up')
      if (notUp) return `${n.id} sees ${notUp.id} ${notUp.status}`
    }
    return null
  }

  // ---- reporting ----

  private audit(): void {
    try {
      for (const node of this.liveNodes()) this.checker.audit(node.m)
    } catch (error) {
      if (error instanceof InvariantViolation) this.failure(error.invariant, error.detail)
      throw error
    }
  }

  private failure(invariant: string, detail: string): never {
    if (this.trace) {
      this.log(`FAILED ${invariant}: ${detail}`)
      for (const slot of this.slots) {
        const n = slot.node
        if (n) this.log(`  ${n.id}: ${n.m.role} term ${n.m.term} leader ${n.m.leaderId} commit ${n.m.commitIndex} ${this.describeLog(n.m)}`)
        else this.log(`  ${slot.address}: down${slot.startAt === null ? '' : `, starts at tick ${slot.startAt}`}`)
      }
    }
    throw new SimulationFailure(this.seed, invariant, detail, this.now)
  }

  private describeLog(m: Membership): string {
    const tail = m.entries.slice(-40)
    const first = m.lastIndex() - tail.length + 1
    return `log ${m.logStart > 0 ? `(snapshot at ${m.logStart}) ` : ''}${tail.length < m.entries.length ? '... ' : ''}${tail.map((e, i) => `${first + i}:${show(e)}`).join(' ')}`
  }

  private log(line: string): void {
    this.trace?.(`t=${String(this.now).padStart(5)} ${line}`)
  }
}

const pct = (x: number) => `${(x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 0)}%`

/**
 * The application side of a simulated node: checks that committed entries are applied exactly
 * once each, in log order with no gap (a snapshot may skip ahead), and that its state (a digest
 * of everything applied) equals the one committed history's at that index, also after a
 * snapshot was installed.
 */
class SimMachine implements StateMachine {
  private applied = 0
  private digest = 0

  constructor(
    private readonly id: string,
    private readonly checker: Checker,
    private readonly fail: (invariant: string, detail: string) => never,
  ) {}

  /** The node's term, for the checker (set once the node exists). */
  term: () => number = () => 0

  apply(index: number, entry: Entry): void {
    if (index !== this.applied + 1) this.fail('Applied once, in order', `${this.id} applies ${index} after ${this.applied}`)
    try {
      this.checker.applied(this.id, index, entry, this.term())
    } catch (error) {
      if (error instanceof InvariantViolation) this.fail(error.invariant, error.detail)
      throw error
    }
    this.applied = index
    this.digest = mix(this.digest, showChange(entry.change))
    this.check('apply')
  }

  snapshot(): unknown {
    return { applied: this.applied, digest: this.digest }
  }

  restore(index: number, snapshot: unknown): void {
    const s = (snapshot ?? { applied: 0, digest: 0 }) as { applied: number; digest: number }
    if (s.applied !== index) this.fail('Snapshot at its index', `${this.id} restores a state of ${s.applied} as ${index}`)
    if (index < this.applied && index > 0) this.fail('Applied once, in order', `${this.id} restores ${index} after applying ${this.applied}`)
    this.applied = s.applied
    this.digest = s.digest
    this.check('restore')
  }

  private check(what: string): void {
    if (this.applied === 0) return
    // Applied inside the step that commits it, before the checker has seen that commit: checked
    // against history once known (restores always are: a snapshot is of what was committed).
    const expected = this.checker.digestAt(this.applied)
    if (expected !== undefined && expected !== this.digest) this.fail('State machines agree', `${this.id} after ${what} at ${this.applied} has digest ${this.digest}, the committed history ${expected}`)
  }
}

function mix(digest: number, text: string): number {
  let h = digest ^ 0x9e3779b9
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return h >>> 0
}

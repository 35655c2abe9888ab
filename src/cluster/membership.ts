// The membership algorithm: Raft (leader election, log replication, single-server membership
// changes, log compaction with snapshots) applied to one replicated log whose entries are member
// additions and removals and the application's own entries (the chat transcript), applied in log
// order to an injected state machine. Pure and deterministic: messages and ticks go in through
// step() and tick(); messages to send and the current view come out. No sockets, clocks, timers
// or Math.random: the shell injects `random` and turns milliseconds into ticks.
import { MAX_TERM, type Change, type Entry, type MemberInfo, type RaftMessage } from './messages'
import { addressOf, nodeId } from './address'
import { checkTiming, type Timing } from './timing'

export interface MembershipOptions extends Timing {
  self: MemberInfo
  /** Seed addresses to ask for a join, in order. */
  seeds: string[]
  /** Found a new cluster when no seed answers for bootstrapTicks (only the first seed should). */
  bootstrap: boolean
  /** Uniform in [0, 1). */
  random: () => number
  /** Where committed entries go, in log order; none: a membership-only log. */
  app?: StateMachine
  /** Committed entries between snapshots, and entries kept behind a snapshot for followers a little behind. */
  compaction?: Compaction
}

/**
 * The application's replicated state: every committed entry is applied once, in log order, on
 * every node (membership changes too, so the application can follow who is a member). Must be
 * deterministic: the same entries give the same state everywhere.
 */
export interface StateMachine {
  apply(index: number, entry: Entry): void
  /** The state after the last applied entry; the core keeps it as it is and sends it to followers. */
  snapshot(): unknown
  /** Replaces the state with one taken at `index`; (0, null) is the empty state of a new log. */
  restore(index: number, snapshot: unknown): void
}

export interface Compaction {
  snapshotEvery: number
  keepEntries: number
}

// A snapshot every 4,096 committed entries, and 1,024 entries kept behind it: a follower that
// fell that far behind gets the snapshot instead (one frame, see the application's size limit).
export const DEFAULT_COMPACTION: Compaction = { snapshotEvery: 4096, keepEntries: 1024 }

const NO_APP: StateMachine = { apply() {}, snapshot: () => null, restore() {} }

/** The compacted prefix of the log: what its entries up to `index` added up to. */
interface Base {
  index: number
  term: number
  members: Map<string, MemberInfo>
  added: Set<string>
  removed: Set<string>
}

/** A snapshot as sent to a follower: the base at `index` and the application's state there. */
export interface Snapshot {
  index: number
  lastTerm: number
  members: MemberInfo[]
  added: string[]
  removed: string[]
  app: unknown
}

export type Role = 'follower' | 'precandidate' | 'candidate' | 'leader'
export type MemberStatus = 'Joining' | 'Up' | 'Leaving' | 'Down' | 'Removed'

export interface MemberView extends MemberInfo {
  id: string
  status: MemberStatus
  reachable: boolean
  leader: boolean
}

export interface MembershipView {
  selfId: string
  role: Role
  term: number
  leaderId: string | null
  commitIndex: number
  /** Status of this node itself: Joining until its addition is in the log, Removed at the end. */
  status: MemberStatus
  members: MemberView[]
}

export interface Outbound {
  to: string
  message: RaftMessage
}

type RaftOf<T extends RaftMessage['type']> = Extract<RaftMessage, { type: T }>

interface Progress {
  /** The next index to send: past what is in flight, not only past what was acknowledged. */
  next: number
  match: number
  /** The commit index last sent: a follower learns of a commit at once, not at the next heartbeat. */
  sentCommit: number
  /** The follower matched `match` and takes new entries as they come; false: probing back for where it matches. */
  replicating: boolean
  lastHeard: number
  /** Heard from since the last check-quorum round. */
  active: boolean
}

const MAX_ENTRIES_PER_APPEND = 64
/** Entries sent to a follower and not yet acknowledged; more wait for its answers. */
const MAX_IN_FLIGHT = 1024
/** Uncommitted entries a leader holds; proposals beyond it are dropped (their origin asks again). */
const MAX_UNCOMMITTED = 8192
/** Joiners the leader has probed and is waiting to hear back from; more are simply asked again later. */
const PENDING_PROBES_MAX = 16
/** How far ahead of ours a term from a leader outside our configuration may be. */
const MAX_TERM_JUMP = 2 ** 20

export class Membership {
  readonly selfId: string
  role: Role = 'follower'
  term = 0
  votedFor: string | null = null
  leaderId: string | null = null
  /**
   * The replicated log after the compacted prefix (named so it is not mistaken for a logger):
   * entries[i] is at index `logStart + 1 + i`.
   */
  readonly entries: Entry[] = []
  commitIndex = 0
  /** The latest snapshot taken or installed; sent to a follower the log no longer reaches. */
  snapshot: Snapshot | null = null
  /** Set once this incarnation's removal is known; it never takes part again. */
  removed = false
  /** Elections this incarnation started (real ones, not pre-votes): a metric. */
  electionsStarted = 0

  private outbox: Outbound[] = []
  /** New entries or a new commit not yet sent to followers (see takeMessages). */
  private replicateDue = false
  private now = 0
  private electionElapsed = 0
  private electionTimeout: number
  private heartbeatElapsed = 0
  private retryElapsed = 0
  private silenceElapsed = 0
  private seedCursor = 0
  private leaving = false
  private votes = new Map<string, boolean>()
  private progress = new Map<string, Progress>()
  private termStart = 0
  private unreachable: string[] = []
  /** Leader only: joiners sent a probe, by id, with the token they must echo. */
  private probes = new Map<string, string>()
  private base: Base = { index: 0, term: 0, members: new Map(), added: new Set(), removed: new Set() }
  /** Indexes of the member changes in `entries`, in order: the configuration is read from these alone. */
  private configIndexes: number[] = []
  private configCache: { key: string; members: Map<string, MemberInfo> }[] = []
  private readonly app: StateMachine
  private readonly compaction: Compaction

  constructor(private readonly o: MembershipOptions) {
    // The configuration was checked at parse time; failing here is a programmer error.
    const timing = checkTiming(o)
    if (!timing.ok) throw new Error(`invalid membership options: ${timing.error}`)
    this.selfId = nodeId(o.self.address, o.self.incarnation)
    this.electionTimeout = this.randomElectionTimeout()
    this.app = o.app ?? NO_APP
    this.compaction = o.compaction ?? DEFAULT_COMPACTION
    this.app.restore(0, null)
  }

  /** Members the leader finds unreachable (its own failure detector, or the last one it told us). */
  get unreachableIds(): readonly string[] {
    return this.unreachable
  }

  /** Index of the last compacted entry (0: nothing compacted); `entries` starts after it. */
  get logStart(): number {
    return this.base.index
  }

  /** The entry at `index`, if the log still holds it. */
  entryAt(index: number): Entry | undefined {
    return index > this.base.index ? this.entries[index - this.base.index - 1] : undefined
  }

  /**
   * Appends application entries: at once on the leader; otherwise they are sent to the leader.
   * False when there is no leader to take them (or the leader holds too many uncommitted): the
   * caller keeps them and proposes again later. Entries may be lost on the way (a leader that
   * fails before committing them); the application tells by what it sees applied.
   */
  /** Whether what is proposed now goes into the log: this node leads, or it is a member that knows a leader. */
  get takesProposals(): boolean {
    return !this.removed && (this.role === 'leader' || (this.leaderId !== null && this.isCommittedMember()))
  }

  propose(data: unknown[]): boolean {
    if (this.removed || data.length === 0) return false
    if (this.role === 'leader') return this.appendApp(data)
    if (this.leaderId === null || !this.isCommittedMember()) return false
    for (let i = 0; i < data.length; i += 1024) this.send(this.leaderId, { type: 'proposal', entries: data.slice(i, i + 1024) })
    return true
  }

  /**
   * Messages produced since the last call; the caller sends them. New entries and commits are
   * sent to followers here, once for everything that happened since the last call: a shell that
   * calls this once per event-loop turn sends one append per follower for a whole burst.
   */
  takeMessages(): Outbound[] {
    if (this.replicateDue) {
      this.replicateDue = false
      if (this.role === 'leader' && !this.removed) this.replicate()
    }
    const out = this.outbox
    this.outbox = []
    return out
  }

  /** Asks to leave the cluster gracefully; done when `removed` becomes true. */
  leave(): void {
    this.leaving = true
    this.retryElapsed = this.o.joinRetryTicks
  }

  /**
   * `n` ticks of time, exactly as `n` calls of one tick each would be. The shell sleeps until
   * nextDeadline() and then owes the core every tick it slept through.
   */
  tick(n = 1): void {
    for (let i = 0; i < n && !this.removed; i++) this.tickOnce()
  }

  /**
   * How many ticks from now the first tick that may do something comes: send a message, change
   * the role, the term, the view or the log, or remove this node. The ticks before it only count,
   * so the shell can sleep until then instead of waking every tick (an idle node then wakes for
   * its heartbeats, not 100 times a second). Never later than that tick; it may be earlier (the
   * shell then sleeps again). A step may bring it closer: ask again after every step.
   */
  nextDeadline(): number {
    if (this.removed) return Infinity
    // Each `due` is the tick at which a counter that grows by one a tick reaches its limit.
    const due = (elapsed: number, limit: number) => Math.max(1, limit - elapsed)
    let next = this.leaving ? due(this.retryElapsed, this.o.joinRetryTicks) : Infinity
    if (this.role === 'leader') {
      next = Math.min(next, due(this.heartbeatElapsed, this.o.heartbeatTicks), due(this.electionElapsed, this.o.electionTicksMin), this.failureDeadline())
    } else if (this.isVoter()) {
      next = Math.min(next, due(this.electionElapsed, this.electionTimeout))
      if (!this.leaving) {
        // Asking to join: every tick while our addition is not committed, else from the tick
        // at which downTicks pass without a word from a leader.
        const from = this.isCommittedMember() ? due(this.silenceElapsed, this.o.downTicks) : 1
        next = Math.min(next, this.joinRequestDeadline(from))
      }
    } else if (!this.leaving) {
      if (this.o.bootstrap && this.lastIndex() === 0) {
        const alone = this.o.seeds.every((s) => s === this.o.self.address)
        next = Math.min(next, alone ? 1 : due(this.silenceElapsed, this.o.bootstrapTicks))
      }
      next = Math.min(next, this.joinRequestDeadline(1))
    }
    return next
  }

  /** The tick at which askToJoin sends, when it is called on every tick from tick `from` on. */
  private joinRequestDeadline(from: number): number {
    if (this.o.seeds.every((s) => s === this.o.self.address)) return Infinity // askToJoin sends to nobody, counts nothing
    return from + Math.max(0, this.o.joinRetryTicks - this.retryElapsed - 1)
  }

  /**
   * Leader: the first tick at which detectFailures may decide differently from the last time:
   * a member's silence crosses the unreachable or the down timeout, or an answer (a step) changed
   * what the unreachable list would be. While a member is silent past the down timeout its
   * removal waits on conditions steps change (commits, answers), so that is looked at every tick.
   */
  private failureDeadline(): number {
    const others = this.voters().filter((id) => id !== this.selfId)
    let next = Infinity
    const unreachableNext: string[] = []
    for (const id of others) {
      const p = this.progress.get(id)
      if (!p) return 1 // detectFailures would make its progress
      const silentFor = this.now + 1 - p.lastHeard // at the next tick
      if (silentFor > this.o.downTicks) return 1
      if (silentFor > this.o.unreachableTicks) unreachableNext.push(id)
      else next = Math.min(next, this.o.unreachableTicks + 1 - silentFor + 1)
      next = Math.min(next, this.o.downTicks + 1 - silentFor + 1)
    }
    if (unreachableNext.join(',') !== this.unreachable.join(',')) return 1
    return next
  }

  private tickOnce(): void {
    this.now++
    if (this.role === 'leader') this.tickLeader()
    else if (this.isVoter()) this.tickVoter()
    // Not (or no longer) in the member list: keep asking. A member whose removal is committed
    // answers not_member, which is how a node removed behind its back finds out.
    else this.tickJoiner()
    if (this.leaving && ++this.retryElapsed >= this.o.joinRetryTicks) {
      this.retryElapsed = 0
      this.requestLeave()
    }
  }

  step(m: RaftMessage): void {
    if (this.removed) return
    // A message for an earlier incarnation at this address is not ours.
    if (m.to !== this.selfId && m.to !== this.o.self.address) return
    if (m.from === this.selfId) return
    // The transport's schemas cap these already; the core does not rely on it: past 2^53 a
    // float's `term + 1 === term`, and a term nobody could reach would end every election.
    if (!withinLimits(m)) return
    // Only a voter may campaign. A vote request from outside the configuration we know, whatever
    // its term, is not believed: it would otherwise raise our term and depose the leader. (A node
    // with an empty log knows no configuration yet, and a leader that added it may need its vote.)
    if (m.type === 'vote_request' && this.lastIndex() > 0 && !this.isMemberId(m.from)) return
    // A leader we do not know yet can be real (our log lags behind its addition), but not one
    // that claims a million elections happened since the term we know.
    if (m.type === 'append_entries' && this.isVoter() && !this.isMemberId(m.from) && m.term > this.term + MAX_TERM_JUMP) return
    // A leaving leader hands over with timeout_now right after its own removal commits.
    if (this.isRemovedId(m.from) && m.type !== 'timeout_now') {
      if (m.type !== 'not_member') this.send(m.from, { type: 'not_member' })
      return
    }
    if ('term' in m && !this.checkTerm(m)) return
    switch (m.type) {
      case 'join_request':
        return this.onJoinRequest(m)
      case 'leave_request':
        return this.onLeaveRequest(m)
      case 'leader_hint':
        this.silenceElapsed = 0
        if (this.isCommittedMember() || this.leaving) return
        if (m.leader && m.leader !== addressOf(m.from)) this.send(m.leader, { type: 'join_request', member: this.o.self })
        // The leader reached us over its own link: answer its probe so it adds us.
        else if (m.probe !== undefined && m.leader === addressOf(m.from)) this.send(m.from, { type: 'join_request', member: this.o.self, probe: m.probe })
        return
      case 'not_member':
        // Only sent once the sender's committed log removed this id, and ids are never re-added.
        this.removed = true
        return
      case 'append_entries':
        return this.onAppendEntries(m)
      case 'append_response':
        return this.onAppendResponse(m)
      case 'vote_request':
        return this.onVoteRequest(m)
      case 'vote_response':
        return this.onVoteResponse(m)
      case 'proposal':
        // From a member only: a joiner or a stranger does not write into the transcript.
        if (this.role === 'leader' && this.isMemberId(m.from) && this.isCommittedMember()) this.appendApp(m.entries)
        return
      case 'install_snapshot':
        return this.onInstallSnapshot(m)
      case 'timeout_now':
        // Only from the leader we follow, in its term (checkTerm ignores a newer one): anyone
        // else asking us to start an election is not handing over anything.
        if (this.isVoter() && m.from === this.leaderId && m.term === this.term) this.campaign(false, true)
        return
      default:
        return assertNever(m)
    }
  }

  /**
   * Everything view() is made of, in one cheap string: when it is unchanged, so is the view.
   * The shell calls it after every tick (100 a second) instead of building the view each time.
   */
  viewKey(): string {
    // Application entries change nothing in the view: only member changes and whether they are committed.
    const lastConfig = this.configIndexes.at(-1) ?? 0
    let uncommitted = 0
    for (let k = this.configIndexes.length - 1; k >= 0 && this.configIndexes[k]! > this.commitIndex; k--) uncommitted++
    return `${this.role}|${this.term}|${this.leaderId}|${this.base.index}|${lastConfig}|${this.termAt(lastConfig)}|${uncommitted}|${this.removed}|${this.unreachable.join(',')}`
  }

  view(): MembershipView {
    const members: MemberView[] = []
    const effective = this.membersAt(this.lastIndex())
    const committed = this.membersAt(this.commitIndex)
    const status = new Map<string, MemberStatus>()
    for (const i of this.configIndexes) {
      if (i <= this.commitIndex) continue
      const c = this.entryAt(i)!.change
      if (c.type === 'add') status.set(nodeId(c.member.address, c.member.incarnation), 'Joining')
      if (c.type === 'remove') status.set(c.id, c.reason === 'down' ? 'Down' : 'Leaving')
    }
    const listed = new Map([...committed, ...effective])
    for (const [id, info] of listed) {
      members.push({
        ...info,
        id,
        status: status.get(id) ?? 'Up',
        reachable: !this.unreachable.includes(id),
        leader: id === this.leaderId,
      })
    }
    members.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0))
    const selfStatus: MemberStatus = this.removed
      ? 'Removed'
      : effective.has(this.selfId) || committed.has(this.selfId)
        ? (status.get(this.selfId) ?? 'Up')
        : 'Joining'
    return {
      selfId: this.selfId,
      role: this.role,
      term: this.term,
      leaderId: this.leaderId,
      commitIndex: this.commitIndex,
      status: selfStatus,
      members,
    }
  }

  /**
   * The member list as of `index` (at least the compacted prefix): the same on every node that
   * holds the log up to there. Read from the member changes alone, so application entries cost
   * nothing here; a configuration is named by its last change (index and term) and cached.
   */
  membersAt(index: number): Map<string, MemberInfo> {
    let k = this.configIndexes.length
    while (k > 0 && this.configIndexes[k - 1]! > index) k--
    const last = k === 0 ? this.base.index : this.configIndexes[k - 1]!
    const key = `${this.base.index}:${last}:${this.termAt(last)}`
    const hit = this.configCache.find((c) => c.key === key)
    if (hit) return hit.members
    const members = new Map(this.base.members)
    for (let j = 0; j < k; j++) applyChange(members, this.entryAt(this.configIndexes[j]!)!.change)
    this.configCache = [{ key, members }, ...this.configCache].slice(0, 3)
    return members
  }

  // ---- time ----

  private tickLeader(): void {
    if (++this.heartbeatElapsed >= this.o.heartbeatTicks) {
      this.heartbeatElapsed = 0
      this.broadcastAppend()
    }
    // Check-quorum: a leader that has not heard from a majority within an election timeout
    // steps down, so a partitioned leader cannot keep serving a stale view.
    if (++this.electionElapsed >= this.o.electionTicksMin) {
      this.electionElapsed = 0
      const voters = this.voters()
      const active = voters.filter((id) => id === this.selfId || this.progress.get(id)?.active).length
      for (const p of this.progress.values()) p.active = false
      if (active * 2 <= voters.length) {
        this.becomeFollower(this.term, null)
        return
      }
    }
    this.detectFailures()
  }

  private tickVoter(): void {
    if (++this.electionElapsed >= this.electionTimeout) this.campaign(true, false)
    // Ask the seeds again while our addition is not committed (a new leader may have overwritten
    // it), or once no leader has been heard for downTicks (the cluster may have removed us, and
    // every member we know may be gone): a member that committed our removal answers not_member.
    else if (!this.leaving && (!this.isCommittedMember() || ++this.silenceElapsed >= this.o.downTicks)) this.askToJoin()
  }

  private tickJoiner(): void {
    // Not a voter yet, but the leader lease must still expire: a leader that added us and lost
    // its quorum needs our vote to come back.
    this.electionElapsed++
    if (this.leaving) return
    this.silenceElapsed++
    // With no other seed to ask there is nothing to wait for.
    const alone = this.o.seeds.every((s) => s === this.o.self.address)
    if (this.o.bootstrap && this.lastIndex() === 0 && (alone || this.silenceElapsed >= this.o.bootstrapTicks)) {
      this.bootstrap()
      return
    }
    this.askToJoin()
  }

  private askToJoin(): void {
    const seeds = this.o.seeds.filter((s) => s !== this.o.self.address)
    if (seeds.length > 0 && ++this.retryElapsed >= this.o.joinRetryTicks) {
      this.retryElapsed = 0
      this.send(seeds[this.seedCursor++ % seeds.length]!, { type: 'join_request', member: this.o.self })
    }
  }

  private bootstrap(): void {
    this.term = 1
    this.votedFor = this.selfId
    this.push({ term: 1, change: { type: 'add', member: this.o.self } })
    this.advanceCommit(1)
    this.becomeLeader()
  }

  // ---- elections (Raft §5.2, with pre-vote and check-quorum from the dissertation §9.6) ----

  private campaign(preVote: boolean, transfer: boolean): void {
    this.role = preVote ? 'precandidate' : 'candidate'
    this.leaderId = null
    this.electionElapsed = 0
    this.electionTimeout = this.randomElectionTimeout()
    if (!preVote) {
      this.term++
      this.electionsStarted++
      this.votedFor = this.selfId
    }
    this.votes = new Map([[this.selfId, true]])
    const last = this.lastIndex()
    for (const id of this.voters()) {
      if (id === this.selfId) continue
      this.send(id, {
        type: 'vote_request',
        term: preVote ? this.term + 1 : this.term,
        lastIndex: last,
        lastTerm: this.termAt(last),
        preVote,
        transfer,
      })
    }
    this.tallyVotes()
  }

  private onVoteRequest(m: RaftOf<'vote_request'>): void {
    const last = this.lastIndex()
    const upToDate = m.lastTerm > this.termAt(last) || (m.lastTerm === this.termAt(last) && m.lastIndex >= last)
    const canVote =
      this.votedFor === m.from || (this.votedFor === null && this.leaderId === null) || (m.preVote && m.term > this.term)
    if (canVote && upToDate) {
      if (!m.preVote) {
        this.votedFor = m.from
        this.electionElapsed = 0
      }
      this.send(m.from, { type: 'vote_response', term: m.term, granted: true, preVote: m.preVote })
    } else {
      this.send(m.from, { type: 'vote_response', term: this.term, granted: false, preVote: m.preVote })
    }
  }

  private onVoteResponse(m: RaftOf<'vote_response'>): void {
    const expected = this.role === 'precandidate' ? m.preVote : this.role === 'candidate' && !m.preVote
    if (!expected) return
    this.votes.set(m.from, m.granted)
    this.tallyVotes()
  }

  private tallyVotes(): void {
    const voters = this.voters()
    const granted = voters.filter((id) => this.votes.get(id) === true).length
    const rejected = voters.filter((id) => this.votes.get(id) === false).length
    if (granted * 2 > voters.length) {
      if (this.role === 'precandidate') this.campaign(false, false)
      else this.becomeLeader()
    } else if (rejected * 2 >= voters.length) {
      this.becomeFollower(this.term, null)
    }
  }

  /** Applies the term rules shared by every message; false means drop the message. */
  private checkTerm(m: RaftOf<'append_entries' | 'install_snapshot' | 'append_response' | 'vote_request' | 'vote_response' | 'timeout_now'>): boolean {
    if (m.term > this.term) {
      if (m.type === 'vote_request') {
        // Leader lease: while a live leader is heard, disruptive candidates are ignored. A
        // hand-over (transfer) may cut it short only once that leader has removed itself from
        // the configuration (a leader transfers only after its own removal), so the flag alone
        // cannot depose a healthy leader.
        const inLease = this.leaderId !== null && this.electionElapsed < this.o.electionTicksMin
        const leaderLeaving = this.leaderId !== null && !this.isMemberId(this.leaderId)
        if (inLease && !(m.transfer && leaderLeaving)) return false
        if (m.preVote) return true
      }
      if (m.type === 'vote_response' && m.preVote && m.granted) return true
      // A hand-over is only taken from the leader of our own term (see step).
      if (m.type === 'timeout_now') return false
      const leader = m.type === 'append_entries' || m.type === 'install_snapshot' ? m.from : null
      this.becomeFollower(m.term, leader)
      return true
    }
    if (m.term < this.term) {
      // A stale leader (e.g. back from a partition) learns of the newer term and steps down.
      if (m.type === 'append_entries' || m.type === 'install_snapshot') this.send(m.from, { type: 'append_response', term: this.term, success: false, matchIndex: 0 })
      if (m.type === 'vote_request' && m.preVote) this.send(m.from, { type: 'vote_response', term: this.term, granted: false, preVote: true })
      return false
    }
    return true
  }

  private becomeFollower(term: number, leaderId: string | null): void {
    if (term > this.term) {
      this.term = term
      this.votedFor = null
    }
    this.role = 'follower'
    this.leaderId = leaderId
    this.electionElapsed = 0
    this.electionTimeout = this.randomElectionTimeout()
    this.progress.clear()
    this.unreachable = []
    this.probes.clear()
  }

  private becomeLeader(): void {
    this.role = 'leader'
    this.leaderId = this.selfId
    this.electionElapsed = 0
    this.heartbeatElapsed = 0
    this.progress.clear()
    for (const id of this.voters()) if (id !== this.selfId) this.progress.set(id, this.freshProgress())
    // A new leader commits an entry of its own term before it accepts member changes (§4.1 fix).
    this.push({ term: this.term, change: { type: 'noop' } })
    this.termStart = this.lastIndex()
    this.maybeCommit()
    this.broadcastAppend()
  }

  // ---- replication (Raft §5.3) ----

  private broadcastAppend(): void {
    for (const id of this.voters()) if (id !== this.selfId) this.sendAppend(id)
  }

  /**
   * Sends what follower `id` lacks: entries from `next` on (as many as fit in flight), or the
   * snapshot when the log no longer reaches back there. A follower known to match (`match` right
   * behind `next`) is sent new entries at once, before earlier ones are acknowledged (pipelining);
   * a follower that answers with a mismatch is probed back one step at a time (see onAppendResponse).
   */
  private sendAppend(id: string): void {
    const p = this.progressOf(id)
    if (p.next <= this.base.index) {
      if (!this.snapshot) throw new Error(`log compacted to ${this.base.index} without a snapshot`)
      const s = this.snapshot
      this.send(id, { type: 'install_snapshot', term: this.term, ...s })
      p.next = s.index + 1
      p.sentCommit = this.commitIndex
      return
    }
    const prevIndex = p.next - 1
    const full = p.replicating && prevIndex - p.match >= MAX_IN_FLIGHT
    const count = full ? 0 : Math.min(MAX_ENTRIES_PER_APPEND, this.lastIndex() - prevIndex)
    const from = prevIndex - this.base.index
    this.send(id, {
      type: 'append_entries',
      term: this.term,
      prevIndex,
      prevTerm: this.termAt(prevIndex),
      entries: this.entries.slice(from, from + count),
      commit: this.commitIndex,
      unreachable: this.unreachable,
    })
    p.sentCommit = this.commitIndex
    if (p.replicating) p.next = prevIndex + count + 1
  }

  /** After new entries or a new commit: every follower with something new (or in need of the commit) hears now. */
  private replicate(): void {
    for (const id of this.voters()) {
      if (id === this.selfId) continue
      const p = this.progressOf(id)
      // A follower being probed hears again on its answer or the next heartbeat, not on every new entry.
      const takesEntries = p.replicating && p.next <= this.lastIndex() && p.next - 1 - p.match < MAX_IN_FLIGHT
      if (takesEntries || p.sentCommit < this.commitIndex) this.sendAppend(id)
    }
  }

  private onAppendEntries(m: RaftOf<'append_entries'>): void {
    if (this.role !== 'follower') this.becomeFollower(this.term, m.from)
    this.leaderId = m.from
    this.electionElapsed = 0
    this.silenceElapsed = 0
    this.unreachable = m.unreachable
    if (m.prevIndex < this.base.index) {
      // Partly behind our snapshot: that part is committed, so it matches; keep only the rest.
      const skip = this.base.index - m.prevIndex
      if (skip > m.entries.length) {
        this.send(m.from, { type: 'append_response', term: this.term, success: true, matchIndex: this.base.index })
        return
      }
      m = { ...m, prevIndex: this.base.index, prevTerm: this.base.term, entries: m.entries.slice(skip) }
    }
    if (m.prevIndex > this.lastIndex() || this.termAt(m.prevIndex) !== m.prevTerm) {
      const hint = Math.min(m.prevIndex - 1, this.lastIndex())
      this.send(m.from, { type: 'append_response', term: this.term, success: false, matchIndex: Math.max(hint, 0) })
      return
    }
    const prevIndex = m.prevIndex
    m.entries.forEach((entry, i) => {
      const index = prevIndex + 1 + i
      if (index <= this.lastIndex() && this.termAt(index) !== entry.term) {
        if (index <= this.commitIndex) throw new Error(`leader ${m.from} conflicts with committed entry ${index}`)
        this.truncateFrom(index)
      }
      if (index > this.lastIndex()) this.push(entry)
    })
    const matchIndex = m.prevIndex + m.entries.length
    this.advanceCommit(Math.min(m.commit, matchIndex))
    this.send(m.from, { type: 'append_response', term: this.term, success: true, matchIndex })
  }

  private onAppendResponse(m: RaftOf<'append_response'>): void {
    if (this.role !== 'leader' || !this.isMemberId(m.from)) return
    const p = this.progressOf(m.from)
    p.lastHeard = this.now
    p.active = true
    if (m.success) {
      if (m.matchIndex > p.match) p.match = m.matchIndex
      p.next = Math.max(p.next, p.match + 1)
      p.replicating = true
      this.maybeCommit()
      this.replicateDue = true
    } else {
      // Back to probing: whatever was in flight after the mismatch is sent again once it matches.
      p.next = Math.max(1, Math.min(p.next - 1, m.matchIndex + 1), p.match + 1)
      p.replicating = false
      this.sendAppend(m.from)
    }
  }

  private maybeCommit(): void {
    const voters = this.voters()
    for (let n = this.lastIndex(); n > this.commitIndex; n--) {
      // Only entries of the current term are committed by counting (Raft §5.4.2).
      if (this.termAt(n) !== this.term) break
      const replicas = voters.filter((id) => (id === this.selfId ? true : this.progressOf(id).match >= n)).length
      if (replicas * 2 > voters.length) {
        this.advanceCommit(n)
        break
      }
    }
  }

  private advanceCommit(index: number): void {
    if (index <= this.commitIndex) return
    const from = this.commitIndex
    this.commitIndex = index
    for (let i = from + 1; i <= index; i++) {
      const entry = this.entryAt(i)!
      const change = entry.change
      this.app.apply(i, entry)
      // Tell removed members at once (the leader stops replicating to them), so a node that is
      // leaving does not wait for an answer that nobody left would give.
      if (this.role === 'leader' && change.type === 'remove' && change.id !== this.selfId) this.send(change.id, { type: 'not_member' })
    }
    this.maybeCompact()
    if (!this.membersAt(index).has(this.selfId) && this.everAdded(this.selfId, index)) {
      // Our own removal is committed. A leaving leader hands over to its best follower first.
      if (this.role === 'leader') {
        const successor = [...this.progress.entries()]
          .filter(([id]) => this.isMemberId(id))
          .sort((a, b) => b[1].match - a[1].match)[0]
        if (successor && successor[1].match >= index) {
          this.sendAppend(successor[0])
          this.send(successor[0], { type: 'timeout_now', term: this.term })
        }
      }
      this.removed = true
    }
  }

  // ---- membership changes, one at a time (Raft dissertation §4.1) ----

  /**
   * Joining takes two steps, so the leader adds only a node it can reach: a join_request is
   * answered with a leader_hint carrying a probe token over the leader's own link to the
   * joiner's address, and only a join_request that echoes it (proof that the hint arrived there)
   * is acted on. A node whose address nobody can dial back would be a voter that never answers,
   * and enough of them would leave the cluster without a quorum.
   */
  private onJoinRequest(m: RaftOf<'join_request'>): void {
    if (this.lastIndex() === 0) return // not in a cluster: stay silent so bootstrap logic works
    if (this.role !== 'leader') {
      this.send(m.from, { type: 'leader_hint', leader: this.leaderId ? addressOf(this.leaderId) : null })
      return
    }
    const id = nodeId(m.member.address, m.member.incarnation)
    if (id !== m.from || this.membersAt(this.lastIndex()).has(id) || this.everAdded(id)) {
      this.send(m.from, { type: 'leader_hint', leader: this.o.self.address })
      return
    }
    const token = this.probes.get(id)
    if (token === undefined || m.probe !== token) {
      this.send(m.from, { type: 'leader_hint', leader: this.o.self.address, probe: this.probeFor(id) })
      return
    }
    if (!this.canChange() || !this.canAdmit()) return // the joiner retries
    this.probes.delete(id)
    const previous = [...this.membersAt(this.lastIndex()).keys()].find((other) => addressOf(other) === m.member.address)
    // A restart at the same address: drop the old incarnation first, then admit the new one.
    this.append(previous ? { type: 'remove', id: previous, reason: 'replaced' } : { type: 'add', member: m.member })
  }

  private probeFor(id: string): string {
    let token = this.probes.get(id)
    if (token === undefined) {
      if (this.probes.size >= PENDING_PROBES_MAX) this.probes.delete(this.probes.keys().next().value!)
      token = Math.floor(this.o.random() * 2 ** 48).toString(36)
      this.probes.set(id, token)
    }
    return token
  }

  /**
   * Adding a voter raises the quorum; do it only while the members heard within the last few
   * heartbeats, with the joiner (just heard), are a majority of the larger configuration, so an
   * addition can always commit and never leaves the cluster short of a quorum.
   */
  private canAdmit(): boolean {
    const voters = this.voters()
    const fresh = voters.filter((id) => id === this.selfId || this.now - this.progressOf(id).lastHeard <= 3 * this.o.heartbeatTicks).length
    return (fresh + 1) * 2 > voters.length + 1
  }

  private onLeaveRequest(m: RaftOf<'leave_request'>): void {
    if (this.role !== 'leader') {
      this.send(m.from, { type: 'leader_hint', leader: this.leaderId ? addressOf(this.leaderId) : null })
      return
    }
    if (this.membersAt(this.lastIndex()).has(m.from) && this.canChange()) {
      this.append({ type: 'remove', id: m.from, reason: 'leave' })
    }
  }

  private requestLeave(): void {
    const members = this.membersAt(this.lastIndex())
    if (members.size === 1 && members.has(this.selfId)) {
      this.removed = true // the last member: nobody to tell
      return
    }
    if (this.role === 'leader') {
      if (this.membersAt(this.lastIndex()).has(this.selfId) && this.canChange()) {
        this.append({ type: 'remove', id: this.selfId, reason: 'leave' })
      }
      return
    }
    if (!this.everAdded(this.selfId)) {
      this.removed = true // never got in: nothing to undo
      return
    }
    // Ask the leader and, every other time, the next other member in turn: a crashed leader or
    // member never answers, and one that has committed our removal answers not_member.
    const others = [...this.membersAt(this.lastIndex()).keys()].filter((id) => id !== this.selfId)
    const attempt = this.seedCursor++
    const target = this.leaderId !== null && attempt % 2 === 0 ? this.leaderId : others[(attempt >> 1) % others.length]
    if (target) this.send(target, { type: 'leave_request' })
  }

  private canChange(): boolean {
    if (this.role !== 'leader' || this.commitIndex < this.termStart) return false
    return (this.configIndexes.at(-1) ?? 0) <= this.commitIndex
  }

  private appendApp(data: unknown[]): boolean {
    // As many as fit, in order (the rest is proposed again by its origin): refusing a batch
    // larger than the room left would refuse it for ever.
    const room = MAX_UNCOMMITTED - (this.lastIndex() - this.commitIndex)
    if (room <= 0) return false
    for (const d of data.length > room ? data.slice(0, room) : data) this.push({ term: this.term, change: { type: 'app', data: d } })
    this.maybeCommit()
    this.replicateDue = true
    return true
  }

  private append(change: Change): void {
    this.push({ term: this.term, change })
    // The new configuration takes effect as soon as it is in the log.
    for (const id of this.voters()) if (id !== this.selfId && !this.progress.has(id)) this.progress.set(id, this.freshProgress())
    for (const id of [...this.progress.keys()]) if (!this.isMemberId(id)) this.progress.delete(id)
    this.maybeCommit()
    if (this.role === 'leader') this.broadcastAppend()
  }

  // ---- failure detection (leader only) ----

  private detectFailures(): void {
    const silent = (id: string, ticks: number) => this.now - this.progressOf(id).lastHeard > ticks
    const others = this.voters().filter((id) => id !== this.selfId)
    this.unreachable = others.filter((id) => silent(id, this.o.unreachableTicks))
    // Only a leader that hears from a majority right now may declare anyone down.
    const hearing = others.filter((id) => !silent(id, this.o.electionTicksMin)).length + (this.isVoter() ? 1 : 0)
    if (hearing * 2 <= this.voters().length || !this.canChange()) return
    const down = others.find((id) => silent(id, this.o.downTicks))
    if (!down) return
    // The members that remain must include a majority heard within the last few heartbeats:
    // otherwise (more failures than the one we see) the removal could never commit, and an
    // uncommitted removal cannot be taken back, which would wedge the cluster for good.
    const remaining = this.voters().filter((id) => id !== down)
    const fresh = remaining.filter((id) => id === this.selfId || !silent(id, 3 * this.o.heartbeatTicks)).length
    if (fresh * 2 > remaining.length) this.append({ type: 'remove', id: down, reason: 'down' })
  }

  // ---- helpers ----

  private send(to: string, body: DistributiveOmit<RaftMessage, 'from' | 'to'>): void {
    this.outbox.push({ to, message: { ...body, from: this.selfId, to } as RaftMessage })
  }

  private voters(): string[] {
    return [...this.membersAt(this.lastIndex()).keys()]
  }

  private isVoter(): boolean {
    return this.membersAt(this.lastIndex()).has(this.selfId)
  }

  /** Our own addition is committed (until our removal is). */
  private isCommittedMember(): boolean {
    return this.membersAt(this.commitIndex).has(this.selfId)
  }

  private isMemberId(id: string): boolean {
    return this.membersAt(this.lastIndex()).has(id)
  }

  /** True when the committed log removed `id`: that incarnation is finished for good. */
  private isRemovedId(id: string): boolean {
    if (this.base.removed.has(id)) return true
    for (const i of this.configIndexes) {
      if (i > this.commitIndex) break
      const c = this.entryAt(i)!.change
      if (c.type === 'remove' && c.id === id) return true
    }
    return false
  }

  private everAdded(id: string, upTo = this.lastIndex()): boolean {
    if (this.base.added.has(id)) return true
    for (const i of this.configIndexes) {
      if (i > upTo) break
      const c = this.entryAt(i)!.change
      if (c.type === 'add' && nodeId(c.member.address, c.member.incarnation) === id) return true
    }
    return false
  }

  private progressOf(id: string): Progress {
    let p = this.progress.get(id)
    if (!p) this.progress.set(id, (p = this.freshProgress()))
    return p
  }

  private freshProgress(): Progress {
    return { next: this.lastIndex() + 1, match: 0, sentCommit: 0, replicating: false, lastHeard: this.now, active: true }
  }

  lastIndex(): number {
    return this.base.index + this.entries.length
  }

  private termAt(index: number): number {
    if (index === this.base.index) return this.base.term
    return index < this.base.index ? -1 : (this.entries[index - this.base.index - 1]?.term ?? -1)
  }

  // ---- the log itself: appends, truncation, compaction (Raft dissertation §5) ----

  private push(entry: Entry): void {
    this.entries.push(entry)
    if (entry.change.type === 'add' || entry.change.type === 'remove') this.configIndexes.push(this.lastIndex())
  }

  /** Drops `index` and everything after it (uncommitted entries a new leader overrode). */
  private truncateFrom(index: number): void {
    this.entries.length = index - this.base.index - 1
    while ((this.configIndexes.at(-1) ?? 0) >= index) this.configIndexes.pop()
  }

  /**
   * Every `snapshotEvery` committed entries: a snapshot at the commit index, and the log before
   * it dropped except the last `keepEntries`, so a follower a little behind still gets entries.
   */
  private maybeCompact(): void {
    const { snapshotEvery, keepEntries } = this.compaction
    if (this.commitIndex - (this.snapshot?.index ?? 0) < snapshotEvery) return
    const at = this.commitIndex
    const members = this.membersAt(at)
    const added = new Set(this.base.added)
    const removed = new Set(this.base.removed)
    for (const i of this.configIndexes) {
      if (i > at) break
      const c = this.entryAt(i)!.change
      if (c.type === 'add') added.add(nodeId(c.member.address, c.member.incarnation))
      if (c.type === 'remove') removed.add(c.id)
    }
    this.snapshot = { index: at, lastTerm: this.termAt(at), members: [...members.values()], added: [...added], removed: [...removed], app: this.app.snapshot() }
    this.compactTo(at - keepEntries)
  }

  /** Folds entries up to `index` into the base. */
  private compactTo(index: number): void {
    if (index <= this.base.index) return
    const members = this.membersAt(index)
    const added = new Set(this.base.added)
    const removed = new Set(this.base.removed)
    while (this.configIndexes.length > 0 && this.configIndexes[0]! <= index) {
      const c = this.entryAt(this.configIndexes.shift()!)!.change
      if (c.type === 'add') added.add(nodeId(c.member.address, c.member.incarnation))
      if (c.type === 'remove') removed.add(c.id)
    }
    const term = this.termAt(index)
    this.entries.splice(0, index - this.base.index)
    this.base = { index, term, members: new Map(members), added, removed }
    this.configCache = []
  }

  private onInstallSnapshot(m: RaftOf<'install_snapshot'>): void {
    if (this.role !== 'follower') this.becomeFollower(this.term, m.from)
    this.leaderId = m.from
    this.electionElapsed = 0
    this.silenceElapsed = 0
    if (m.index > this.commitIndex) {
      // Keep the entries after it if our log agrees there; otherwise our log is all replaced.
      const keep = this.termAt(m.index) === m.lastTerm ? this.entries.slice(m.index - this.base.index) : []
      const configAfter = keep.length > 0 ? this.configIndexes.filter((i) => i > m.index) : []
      this.entries.length = 0
      this.entries.push(...keep)
      this.configIndexes = configAfter
      this.base = {
        index: m.index,
        term: m.lastTerm,
        members: new Map(m.members.map((info) => [nodeId(info.address, info.incarnation), info])),
        added: new Set(m.added),
        removed: new Set(m.removed),
      }
      this.configCache = []
      this.snapshot = { index: m.index, lastTerm: m.lastTerm, members: m.members, added: m.added, removed: m.removed, app: m.app }
      this.commitIndex = m.index
      this.app.restore(m.index, m.app)
      if (!this.membersAt(m.index).has(this.selfId) && this.everAdded(this.selfId, m.index)) this.removed = true
    }
    this.send(m.from, { type: 'append_response', term: this.term, success: true, matchIndex: Math.max(m.index, Math.min(this.commitIndex, this.lastIndex())) })
  }

  private randomElectionTimeout(): number {
    const { electionTicksMin: min, electionTicksMax: max } = this.o
    return min + Math.floor(this.o.random() * (max - min))
  }
}

const safe = (n: number) => Number.isSafeInteger(n) && n >= 0 && n <= MAX_TERM

/** Every term and index in `m` is a whole number no larger than MAX_TERM. */
function withinLimits(m: RaftMessage): boolean {
  switch (m.type) {
    case 'append_entries':
      return safe(m.term) && safe(m.prevIndex) && safe(m.prevTerm) && safe(m.commit) && m.entries.every((e) => safe(e.term))
    case 'append_response':
      return safe(m.term) && safe(m.matchIndex)
    case 'vote_request':
      return safe(m.term) && safe(m.lastIndex) && safe(m.lastTerm)
    case 'vote_response':
    case 'timeout_now':
      return safe(m.term)
    case 'install_snapshot':
      return safe(m.term) && safe(m.index) && safe(m.lastTerm)
    default:
      return true
  }
}

function applyChange(members: Map<string, MemberInfo>, change: Change): void {
  if (change.type === 'add') members.set(nodeId(change.member.address, change.member.incarnation), change.member)
  else if (change.type === 'remove') members.delete(change.id)
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

function assertNever(x: never): never {
  throw new Error(`unexpected message ${JSON.stringify(x)}`)
}

// The imperative shell around the membership core: one timer turns milliseconds into ticks, the
// transport carries the core's messages and the application's (chat), and view changes come out
// as ClusterListener-style events. A node removed behind its back (pause, partition) rejoins as a
// new incarnation. Every outside dependency (transport, clock, randomness, incarnation ids, log)
// comes in through `io`, so the simulator runs this very code.
import type { NodeIo } from '../io'
import { addressOf } from './address'
import { diffViews, type MemberEvent } from './events'
import { Membership, type Compaction, type MembershipView, type StateMachine } from './membership'
import { isRaftMessage, RAFT_TYPES, validateRaftMessage, type MemberInfo, type RaftMessage } from './messages'
import { TICK_MS, type Timing } from './timing'
import { ACCEPTED, type Peer, type Transport, type Verdict, type PeerStats } from './transport'
import { err, ok, type Result } from '../result'
import type { Typed, Validator } from './validate'

const HELD_MESSAGES_MAX = 10_000
/**
 * The shell does not wake every tick: it sleeps until the core's next deadline (a heartbeat, an
 * election timeout, a failure-detection threshold) and then gives it every tick that passed. An
 * idle node so wakes for its heartbeats, not 100 times a second (measured: most of its idle CPU).
 *
 * A busy event loop fires the timer late. A leader's late firing counts the ticks that passed
 * (counting firings slowed its heartbeats to one per 500 ms at 50 ms turns, and its followers held
 * elections), but at most a third of the shortest election timeout: a quorum check then always
 * spans two turns of reading the sockets, so a long stall never jumps it past replies still unread
 * in them. Another role's late firing takes only the ticks that do nothing, drops the rest of the
 * stall, and leaves the tick that acts to a timer one tick later, after the loop has read its
 * sockets: a starved follower that caught up at once would time out before reading the heartbeats
 * waiting there (measured: momentary pre-votes, no leader shown, on a loaded machine).
 */
const catchUpTicksMax = (t: Timing) => Math.max(1, Math.floor(t.electionTicksMin / 3))

export interface ClusterSettings {
  systemName: string
  /** `bun://<system>@<host>:<port>`: where this node listens and peers dial it. */
  address: string
  /** Where this node's users connect; shown to other members. */
  httpUrl: string
  seeds: string[]
  timing: Timing
  /** Snapshot and compaction of the replicated log (tests make it small to exercise it). */
  compaction?: Compaction
}

/**
 * The application's replicated state machine and the checks for what peers send of it: its log
 * entries (in proposals and appends) and its snapshots. The cluster carries them as opaque data.
 */
export interface ReplicatedApp {
  machine: StateMachine
  validateEntry: (data: unknown) => Result<unknown>
  validateSnapshot: (data: unknown) => Result<unknown>
}

/** What the node reports; given to `start`, so nothing can arrive before someone listens. */
export interface ClusterListener<A> {
  /**
   * The other members changed. `selfUp` is true when this node itself just became Up (first join
   * or a rejoin): peers may have missed what it said while it was not a member.
   */
  onMembers(peers: string[], selfUp: boolean): void
  /**
   * An application message from an authenticated peer, checked against its schema. The
   * application checks what only it can (e.g. that the peer speaks only for itself); a refusal
   * closes that peer's connection.
   */
  onMessage(peer: Peer, message: A): Verdict
  /** A new outbound connection to `address`: whatever is sent now arrives first on it. */
  onPeerConnected(address: string): void
  /** Every view change, with the events it implies (for logs and metrics). */
  onView?(view: MembershipView, events: MemberEvent[]): void
  /**
   * A peer proposes application entries (already checked against their schema): the application
   * checks that the peer speaks only for itself (`from` is its node id); a refusal closes the link.
   */
  checkProposal(peer: Peer, from: string, entries: unknown[]): Verdict
  /** After every step and tick: new entries may have been applied, the leader may have changed. */
  afterStep(): void
}

export class ClusterNode<A extends Typed> {
  private core!: Membership
  private transport!: Transport<RaftMessage | A>
  private listener!: ClusterListener<A>
  /** Started and not stopped, removed or gone after leaving. */
  private running = false
  /** The one timer, due at `at` (ms): the core's next deadline, or earlier. */
  private wake: { at: number; cancel: () => void } | null = null
  /** A late firing left the acting tick to the next one (see catchUpTicksMax). */
  private deferred = false
  /** A peer's frames were stepped and their answers are due once the read is handled (afterStep). */
  private answerPending = false
  /** When the core's clock last advanced: the ticks owed are counted from here. */
  private tickedAt = 0
  private lastView: MembershipView | undefined
  /** The core's viewKey() when lastView was built. */
  private lastViewKey = ''
  private leaving: { resolve: (left: boolean) => void; heardAt: number } | undefined
  private peers: string[] = []
  /** Messages broadcast before the member list was known; null once it is. */
  private held: A[] | null = []
  /** Application entries proposed in this turn, proposed together at its end. */
  private proposing: unknown[] = []
  private stepsPending = false

  constructor(
    private readonly settings: ClusterSettings,
    private readonly io: NodeIo,
    private readonly validateApp: Validator<A>,
    private readonly app: ReplicatedApp,
  ) {}

  get address(): string {
    return this.settings.address
  }

  async start(listener: ClusterListener<A>): Promise<void> {
    this.listener = listener
    const incarnation = this.io.newIncarnation()
    this.transport = await this.io.transport<RaftMessage | A>({
      address: this.address,
      incarnation,
      systemName: this.settings.systemName,
      // Raft messages are the cluster's own; anything else must be an application message.
      validate: (value) => (RAFT_TYPES.has((value as Typed | null)?.type as string) ? this.validateRaft(value) : this.validateApp(value)),
      log: this.io.log,
      // Heartbeats and votes go ahead of a chat backlog: a busy link must not cost a member.
      urgent: (value) => RAFT_TYPES.has((value as Typed | null)?.type as string),
      handlers: {
        onMessage: (peer, message) => this.onMessage(peer, message),
        onConnected: (address) => this.listener.onPeerConnected(address),
      },
    })
    this.core = this.newCore(incarnation, this.settings.seeds[0] === this.address)
    this.io.log(`node ${this.address} starting as incarnation ${incarnation}, seeds ${this.settings.seeds.join(', ')}`, { event: 'starting', incarnation })
    this.tickedAt = this.io.clock.now()
    this.running = true
    this.arm()
    this.publishView()
  }

  view(): MembershipView {
    return this.core.view()
  }

  /** The membership core itself, read-only: the simulator checks its invariants after every step. */
  get membership(): Membership {
    return this.core
  }

  /** Addresses of the other members: where chat and presence go. */
  peerAddresses(): string[] {
    return this.peers
  }

  get transportStats() {
    return this.transport.stats
  }

  queuedBytes(): number {
    return this.transport.queuedBytes()
  }

  peerStats(): PeerStats[] {
    return this.transport.peerStats()
  }

  /** Counters for /metrics that outlive an incarnation. */
  readonly stats = { leaderChanges: 0, rejoins: 0, electionsBefore: 0 }

  /** Elections started by every incarnation of this process. */
  get electionsStarted(): number {
    return this.stats.electionsBefore + (this.core?.electionsStarted ?? 0)
  }

  /** This incarnation's id (`address#incarnation`): the origin of what it proposes. */
  get selfId(): string {
    return this.core.selfId
  }

  get leaderId(): string | null {
    return this.core.leaderId
  }

  /** Whether a proposal now goes into the log (not while no leader is known, or while this incarnation is still joining). */
  get takesProposals(): boolean {
    return this.core.takesProposals
  }

  /**
   * Proposes application entries to the replicated log (appended here when this node leads,
   * sent to the leader otherwise) at the end of this event-loop turn, together with whatever
   * else was proposed in it. They may be lost (no leader now, a leader that fails before
   * committing them), so the application keeps them until it sees them applied.
   */
  propose(entries: unknown[]): void {
    if (!this.running) return
    for (const e of entries) this.proposing.push(e)
    this.afterStep()
  }

  send(address: string, message: A): void {
    this.transport.send([address], message)
  }

  /**
   * Sends to every other member once. Until this node first learns the member list (it is still
   * joining), messages are held and sent as soon as it does, so users of a node that just started
   * are heard by everyone.
   */
  broadcast(message: A): void {
    if (this.held === null) this.transport.send(this.peers, message)
    else if (this.held.length < HELD_MESSAGES_MAX) this.held.push(message)
    else this.io.log(`dropped a ${message.type} message: still joining and ${HELD_MESSAGES_MAX} messages are waiting`)
  }

  /**
   * Asks the leader to remove this node and waits until it is removed: at most `timeoutMs`, and
   * no longer than three heartbeats without a word from a leader (from any member, when this node
   * leads). Then nobody is left to confirm it, as when the whole cluster stops at once, and
   * waiting longer only delays the exit. True when the removal was confirmed.
   */
  async leave(timeoutMs: number): Promise<boolean> {
    if (this.core.removed) return true
    const done = new Promise<boolean>((resolve) => (this.leaving = { resolve, heardAt: this.io.clock.now() }))
    this.catchUp()
    this.core.leave()
    this.flush()
    this.arm()
    let cancel = () => {}
    const timedOut = new Promise<false>((resolve) => (cancel = this.io.clock.after(timeoutMs, () => resolve(false))))
    const left = await Promise.race([done, timedOut])
    cancel()
    return left
  }

  /** While leaving: a leader (or, leading, any member) spoke; the leave can still be confirmed. */
  private heardWhileLeaving(from: string): void {
    if (!this.leaving) return
    if (from === this.core.leaderId || this.core.role === 'leader') this.leaving.heardAt = this.io.clock.now()
  }

  private get leaveGiveUpMs(): number {
    return 3 * this.settings.timing.heartbeatTicks * TICK_MS
  }

  private leaveStalled(): boolean {
    if (!this.leaving) return false
    return this.io.clock.now() - this.leaving.heardAt > this.leaveGiveUpMs
  }

  async stop(): Promise<void> {
    this.halt()
    await this.transport?.close()
  }

  private halt(): void {
    this.running = false
    this.wake?.cancel()
    this.wake = null
  }

  private newCore(incarnation: string, bootstrap: boolean): Membership {
    const self: MemberInfo = { address: this.address, incarnation, httpUrl: this.settings.httpUrl }
    return new Membership({ self, seeds: this.settings.seeds, bootstrap, ...this.settings.timing, random: this.io.random, app: this.app.machine, compaction: this.settings.compaction })
  }

  /** A Raft message, and the application data inside it, checked against their schemas. */
  private validateRaft(value: unknown): Result<RaftMessage> {
    const checked = validateRaftMessage(value)
    if (!checked.ok) return checked
    const m = checked.value
    const entries = m.type === 'proposal' ? m.entries : m.type === 'append_entries' ? m.entries.flatMap((e) => (e.change.type === 'app' ? [e.change.data] : [])) : []
    for (const data of entries) {
      const entry = this.app.validateEntry(data)
      if (!entry.ok) return err(`${m.type}: ${entry.error}`)
    }
    if (m.type === 'install_snapshot') {
      const snapshot = this.app.validateSnapshot(m.app)
      if (!snapshot.ok) return err(`install_snapshot: ${snapshot.error}`)
    }
    return ok(m)
  }

  /**
   * Gives the core the ticks that passed and do nothing (before the deadline), so a step sees the
   * time it comes at (how long a member has been silent, whether a leader's lease is still on).
   * The tick that acts is left to the timer.
   */
  private catchUp(): void {
    const owed = this.owedTicks(this.io.clock.now())
    if (owed <= 0) return
    const quiet = Math.min(owed, this.core.nextDeadline() - 1)
    if (quiet <= 0) return
    this.core.tick(quiet)
    this.tickedAt += quiet * TICK_MS
  }

  /** Whole ticks since the core's clock last advanced (a wall clock set back restarts the count). */
  private owedTicks(now: number): number {
    if (now < this.tickedAt) this.tickedAt = now
    return Math.floor((now - this.tickedAt) / TICK_MS)
  }

  /** The timer: the core's deadline came (or an earlier one that a step has since moved on). */
  private onWake(): void {
    this.wake = null
    if (!this.running) return
    const now = this.io.clock.now()
    const owed = this.owedTicks(now)
    const deadline = this.core.nextDeadline()
    if (owed < deadline) {
      this.catchUp()
      this.deferred = false
    } else if (this.core.role === 'leader') {
      const ticks = Math.min(owed, catchUpTicksMax(this.settings.timing))
      this.core.tick(ticks)
      this.tickedAt = owed > ticks ? now : this.tickedAt + ticks * TICK_MS
    } else if (owed > deadline + 1 && !this.deferred && deadline > 1) {
      // Late: the loop was busy, and its sockets may hold what would make this tick moot.
      this.core.tick(deadline - 1)
      this.tickedAt = now
      this.deferred = true
    } else {
      const late = owed > deadline + 1
      this.core.tick(late ? deadline : owed)
      this.tickedAt = late ? now : this.tickedAt + owed * TICK_MS
      this.deferred = false
    }
    if (this.leaveStalled()) {
      this.io.log(`node ${this.address} is leaving but no leader has answered for ${this.leaveGiveUpMs} ms; giving up on a confirmation`, { level: 'warn', event: 'leave_abandoned' })
      this.halt()
      this.leaving!.resolve(false)
      this.leaving = undefined
      return
    }
    this.afterStep()
    this.arm()
  }

  /**
   * Sets the timer for the core's next deadline (and a leave's give-up time). A timer already due
   * sooner is kept: steps move a follower's election deadline on at every heartbeat, and a timer
   * that comes early costs one wake-up where re-arming would cost one per heartbeat.
   */
  private arm(): void {
    if (!this.running || this.core.removed) return
    let at = this.tickedAt + this.core.nextDeadline() * TICK_MS
    if (this.leaving) at = Math.min(at, this.leaving.heardAt + this.leaveGiveUpMs + 1)
    if (!Number.isFinite(at) || (this.wake && this.wake.at <= at)) return
    this.wake?.cancel()
    const wake = { at, cancel: () => {} }
    wake.cancel = this.io.clock.after(Math.max(0, at - this.io.clock.now()), () => this.onWake())
    this.wake = wake
  }

  private onMessage(peer: Peer, message: RaftMessage | A): Verdict {
    if (!isRaftMessage(message)) return this.listener.onMessage(peer, message as A)
    // A peer speaks only for itself: a frame claiming another sender is not a mistake a node makes.
    if (addressOf(message.from) !== peer.address) return err(`${message.type} claims to come from ${message.from.slice(0, 300)}`)
    if (!this.running) return ACCEPTED
    if (message.type === 'proposal') {
      const verdict = this.listener.checkProposal(peer, message.from, message.entries)
      if (!verdict.ok) return verdict
    }
    this.heardWhileLeaving(message.from)
    this.catchUp()
    this.core.step(message)
    this.afterStep(true)
    return ACCEPTED
  }

  /**
   * What follows a step (a tick, a message, a proposal), done once at the end of the event-loop
   * turn for every step in it: a burst of frames read in one turn is answered with one append per
   * follower, and one proposal to the leader, instead of one each. After a peer's frames
   * (`answer`), it is done as soon as their read is handled: a leader whose turn also reads
   * thousands of a flooding client's frames otherwise answered its followers only after them
   * (other nodes' users then waited 50-100 ms more for each line).
   */
  private afterStep(answer = false): void {
    if (answer && !this.answerPending) {
      this.answerPending = true
      this.io.clock.soon(() => {
        this.answerPending = false
        this.settleSteps()
      })
    }
    if (this.stepsPending) return
    this.stepsPending = true
    this.io.clock.defer(() => {
      this.stepsPending = false
      this.settleSteps()
    })
  }

  private settleSteps(): void {
    if (!this.running) return
    if (this.proposing.length > 0) {
      const entries = this.proposing
      this.proposing = []
      this.core.propose(entries)
    }
    this.flush()
    if (this.core.removed) this.onRemoved()
    this.publishView()
    this.listener.afterStep()
    this.arm()
  }

  private flush(): void {
    for (const { to, message } of this.core.takeMessages()) this.transport.send([addressOf(to)], message)
  }

  private onRemoved(): void {
    if (this.leaving) {
      this.io.log(`node ${this.address} left the cluster`)
      this.halt()
      this.leaving.resolve(true)
      this.leaving = undefined
      return
    }
    if (!this.running) return
    // Removed while alive: the cluster moved on without us. Join again as a new incarnation;
    // local WebSocket users stay connected throughout.
    const incarnation = this.io.newIncarnation()
    this.stats.rejoins++
    this.stats.electionsBefore += this.core.electionsStarted
    this.io.log(`node ${this.address} was removed from the cluster; rejoining as incarnation ${incarnation}`, { level: 'warn', event: 'rejoin', incarnation })
    this.core = this.newCore(incarnation, false)
    this.tickedAt = this.io.clock.now()
    this.deferred = false
    // The new incarnation starts from an empty view: report its events afresh rather than
    // logging every member as removed.
    this.lastView = undefined
  }

  private publishView(): void {
    const key = this.core.viewKey()
    if (this.lastView && key === this.lastViewKey) return
    this.lastViewKey = key
    const view = this.core.view()
    const events = diffViews(this.lastView, view)
    const changed = !this.lastView || events.length > 0
    this.lastView = view
    if (!changed) return
    this.stats.leaderChanges += events.filter((e) => e.type === 'leader_changed').length
    for (const e of events) this.io.log(`cluster: ${e.text}`, { event: `member_${e.type}`, member: e.id ?? null, term: view.term })
    this.listener.onView?.(view, events)
    // While a new incarnation is still joining its view is empty; keep talking to the members
    // we knew so chat and presence go on.
    if (view.members.length > 0) {
      const peers = [...new Set(view.members.map((m) => m.address))].filter((a) => a !== this.address)
      // Stop redialling (and queueing for) nodes that left; a later message dials again.
      for (const gone of this.peers) if (!peers.includes(gone)) this.transport.disconnect(gone)
      this.peers = peers
    }
    this.listener.onMembers(this.peers, events.some((e) => e.type === 'up' && e.id === view.selfId))
    if (this.held && view.members.length > 0) {
      const held = this.held
      this.held = null
      for (const message of held) this.transport.send(this.peers, message)
    }
  }
}

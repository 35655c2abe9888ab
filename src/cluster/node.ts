// The imperative shell around the membership core: a timer turns milliseconds into ticks, the
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
 * A busy event loop fires the tick timer late, and counting firings would slow the core's clock
 * with it: at one firing per 50 ms turn a leader's heartbeats went out every 500 ms and its
 * followers held elections. So a leader's late firing counts the ticks that passed, but at most a
 * third of the shortest election timeout: a quorum check then always spans two turns of reading
 * the sockets, so a long stall never jumps it past replies still unread in them. Other roles count
 * firings: a starved follower that caught up would time out before reading the heartbeats waiting
 * in its socket (measured: momentary pre-votes, no leader shown, on a loaded machine).
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
  private stopTicking: (() => void) | null = null
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
    this.stopTicking = this.io.clock.every(TICK_MS, () => this.tick())
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

  /**
   * Proposes application entries to the replicated log (appended here when this node leads,
   * sent to the leader otherwise) at the end of this event-loop turn, together with whatever
   * else was proposed in it. They may be lost (no leader now, a leader that fails before
   * committing them), so the application keeps them until it sees them applied.
   */
  propose(entries: unknown[]): void {
    if (this.stopTicking === null) return
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
    this.core.leave()
    this.flush()
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

  private leaveStalled(): boolean {
    if (!this.leaving) return false
    return this.io.clock.now() - this.leaving.heardAt > 3 * this.settings.timing.heartbeatTicks * TICK_MS
  }

  async stop(): Promise<void> {
    this.stopTicking?.()
    this.stopTicking = null
    await this.transport?.close()
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

  private tick(): void {
    const owed = Math.floor((this.io.clock.now() - this.tickedAt) / TICK_MS)
    const max = this.core.role === 'leader' ? catchUpTicksMax(this.settings.timing) : 1
    const ticks = Math.min(max, Math.max(1, owed))
    this.tickedAt = owed > max ? this.io.clock.now() : this.tickedAt + ticks * TICK_MS
    for (let i = 0; i < ticks && !this.core.removed; i++) this.core.tick()
    this.afterStep()
    if (this.leaveStalled()) {
      this.io.log(`node ${this.address} is leaving but no leader has answered for ${3 * this.settings.timing.heartbeatTicks * TICK_MS} ms; giving up on a confirmation`, { level: 'warn', event: 'leave_abandoned' })
      this.stopTicking?.()
      this.stopTicking = null
      this.leaving!.resolve(false)
      this.leaving = undefined
    }
  }

  private onMessage(peer: Peer, message: RaftMessage | A): Verdict {
    if (!isRaftMessage(message)) return this.listener.onMessage(peer, message as A)
    // A peer speaks only for itself: a frame claiming another sender is not a mistake a node makes.
    if (addressOf(message.from) !== peer.address) return err(`${message.type} claims to come from ${message.from.slice(0, 300)}`)
    if (this.stopTicking === null) return ACCEPTED
    if (message.type === 'proposal') {
      const verdict = this.listener.checkProposal(peer, message.from, message.entries)
      if (!verdict.ok) return verdict
    }
    this.heardWhileLeaving(message.from)
    this.core.step(message)
    this.afterStep()
    return ACCEPTED
  }

  /**
   * What follows a step (a tick, a message, a proposal), done once at the end of the event-loop
   * turn for every step in it: a burst of frames read in one turn is answered with one append per
   * follower, and one proposal to the leader, instead of one each.
   */
  private afterStep(): void {
    if (this.stepsPending) return
    this.stepsPending = true
    this.io.clock.defer(() => {
      this.stepsPending = false
      if (this.stopTicking === null) return
      if (this.proposing.length > 0) {
        const entries = this.proposing
        this.proposing = []
        this.core.propose(entries)
      }
      this.flush()
      if (this.core.removed) this.onRemoved()
      this.publishView()
      this.listener.afterStep()
    })
  }

  private flush(): void {
    for (const { to, message } of this.core.takeMessages()) this.transport.send([addressOf(to)], message)
  }

  private onRemoved(): void {
    if (this.leaving) {
      this.io.log(`node ${this.address} left the cluster`)
      this.stopTicking?.()
      this.stopTicking = null
      this.leaving.resolve(true)
      this.leaving = undefined
      return
    }
    if (this.stopTicking === null) return
    // Removed while alive: the cluster moved on without us. Join again as a new incarnation;
    // local WebSocket users stay connected throughout.
    const incarnation = this.io.newIncarnation()
    this.stats.rejoins++
    this.stats.electionsBefore += this.core.electionsStarted
    this.io.log(`node ${this.address} was removed from the cluster; rejoining as incarnation ${incarnation}`, { level: 'warn', event: 'rejoin', incarnation })
    this.core = this.newCore(incarnation, false)
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

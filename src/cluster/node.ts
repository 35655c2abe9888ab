// The imperative shell around the membership core: a timer turns milliseconds into ticks, the
// transport carries the core's messages, and view changes come out as ClusterListener-style
// events. A node removed behind its back (pause, partition) rejoins as a new incarnation.
import type { Config } from '../config'
import { nodeAddress } from '../config'
import { diffViews, type MemberEvent } from './events'
import { Membership, type MembershipView } from './membership'
import { addressOf, type ChatMessage, type Hello, type MemberInfo, type PeerMessage, type RaftMessage } from './messages'
import { createTcpTransport } from './tcp-transport'
import type { Transport } from './transport'

export const TICK_MS = 10
const HELD_MESSAGES_MAX = 10_000

export interface ClusterNodeHandlers {
  onView?(view: MembershipView, events: MemberEvent[]): void
  onChat?(peer: Hello, message: ChatMessage): void
  /** A new outbound connection to `address`: whatever is sent now arrives first on it. */
  onPeerConnected?(address: string): void
}

const RAFT_TYPES = new Set<string>([
  'join_request', 'leave_request', 'leader_hint', 'not_member', 'append_entries', 'append_response',
  'vote_request', 'vote_response', 'timeout_now',
])
const isRaft = (m: PeerMessage): m is RaftMessage => RAFT_TYPES.has(m.type)

export const newIncarnation = () => crypto.randomUUID().slice(0, 8)

export class ClusterNode {
  readonly address: string
  readonly httpUrl: string
  private core!: Membership
  private transport!: Transport
  private timer: ReturnType<typeof setInterval> | undefined
  private lastView: MembershipView | undefined
  private leaving: { resolve: () => void } | undefined
  private peers: string[] = []
  /** Messages broadcast before the member list was known; null once it is. */
  private held: ChatMessage[] | null = []

  constructor(
    private readonly config: Config,
    private readonly handlers: ClusterNodeHandlers,
    private readonly log: (line: string) => void,
  ) {
    this.address = nodeAddress(config.systemName, config.host, config.clusterPort)
    this.httpUrl = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${config.httpPort}`
  }

  async start(): Promise<void> {
    const incarnation = newIncarnation()
    this.transport = await createTcpTransport({
      host: this.config.host,
      port: this.config.clusterPort,
      systemName: this.config.systemName,
      address: this.address,
      incarnation,
      log: this.log,
      handlers: {
        onMessage: (peer, message) => this.onMessage(peer, message),
        onConnected: (address) => this.handlers.onPeerConnected?.(address),
      },
    })
    this.core = this.newCore(incarnation, this.config.seeds[0] === this.address)
    this.log(`node ${this.address} starting as incarnation ${incarnation}, seeds ${this.config.seeds.join(', ')}`)
    this.timer = setInterval(() => this.tick(), TICK_MS)
    this.publishView()
  }

  view(): MembershipView {
    return this.core.view()
  }

  /** Addresses of the other members: where chat and presence go. */
  peerAddresses(): string[] {
    return this.peers
  }

  send(addresses: string[], message: ChatMessage): number {
    return this.transport.send(addresses, message)
  }

  /**
   * Sends to every other member once. Until this node first learns the member list (it is still
   * joining), messages are held and sent as soon as it does, so users of a node that just started
   * are heard by everyone.
   */
  broadcast(message: ChatMessage): void {
    if (this.held === null) this.transport.send(this.peers, message)
    else if (this.held.length < HELD_MESSAGES_MAX) this.held.push(message)
    else this.log(`dropped a ${message.type} message: still joining and ${HELD_MESSAGES_MAX} messages are waiting`)
  }

  get transportStats() {
    return this.transport.stats
  }

  /** Asks the leader to remove this node and waits (up to timeoutMs) until it is removed. */
  async leave(timeoutMs: number): Promise<boolean> {
    if (this.core.removed) return true
    const done = new Promise<void>((resolve) => (this.leaving = { resolve }))
    this.core.leave()
    this.flush()
    let timeout: ReturnType<typeof setTimeout> | undefined
    const timedOut = new Promise<false>((resolve) => (timeout = setTimeout(() => resolve(false), timeoutMs)))
    const left = await Promise.race([done.then(() => true as const), timedOut])
    clearTimeout(timeout)
    return left
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    this.timer = undefined
    await this.transport.close()
  }

  private newCore(incarnation: string, bootstrap: boolean): Membership {
    const { heartbeatMs, electionTimeoutMs, unreachableAfterMs, downAfterMs, bootstrapTimeoutMs } = this.config
    const ticks = (ms: number) => Math.max(1, Math.round(ms / TICK_MS))
    const self: MemberInfo = { address: this.address, incarnation, httpUrl: this.httpUrl }
    return new Membership({
      self,
      seeds: this.config.seeds,
      bootstrap,
      heartbeatTicks: ticks(heartbeatMs),
      electionTicksMin: ticks(electionTimeoutMs),
      electionTicksMax: ticks(electionTimeoutMs * 2),
      unreachableTicks: ticks(unreachableAfterMs),
      downTicks: ticks(downAfterMs),
      bootstrapTicks: ticks(bootstrapTimeoutMs),
      joinRetryTicks: ticks(Math.min(200, electionTimeoutMs / 2)),
      random: Math.random,
    })
  }

  private tick(): void {
    this.core.tick()
    this.afterStep()
  }

  private onMessage(peer: Hello, message: PeerMessage): void {
    if (!isRaft(message)) {
      this.handlers.onChat?.(peer, message)
      return
    }
    if (this.timer === undefined) return
    if (addressOf(message.from) !== peer.address) {
      this.log(`dropped ${message.type} from ${peer.address}: it claims to come from ${message.from}`)
      return
    }
    this.core.step(message)
    this.afterStep()
  }

  private afterStep(): void {
    this.flush()
    if (this.core.removed) this.onRemoved()
    this.publishView()
  }

  private flush(): void {
    for (const { to, message } of this.core.takeMessages()) this.transport.send([addressOf(to)], message)
  }

  private onRemoved(): void {
    if (this.leaving) {
      this.log(`node ${this.address} left the cluster`)
      clearInterval(this.timer)
      this.timer = undefined
      this.leaving.resolve()
      this.leaving = undefined
      return
    }
    if (this.timer === undefined) return
    // Removed while alive: the cluster moved on without us. Join again as a new incarnation;
    // local WebSocket users stay connected throughout.
    const incarnation = newIncarnation()
    this.log(`node ${this.address} was removed from the cluster; rejoining as incarnation ${incarnation}`)
    this.core = this.newCore(incarnation, false)
    // The new incarnation starts from an empty view: report its events afresh rather than
    // logging every member as removed.
    this.lastView = undefined
  }

  private publishView(): void {
    const view = this.core.view()
    const events = diffViews(this.lastView, view)
    const changed = !this.lastView || events.length > 0
    this.lastView = view
    if (!changed) return
    for (const e of events) this.log(`cluster: ${e.text}`)
    // While a new incarnation is still joining its view is empty; keep talking to the members
    // we knew so chat and presence go on.
    if (view.members.length > 0) {
      const peers = [...new Set(view.members.map((m) => m.address))].filter((a) => a !== this.address)
      // Stop redialling (and queueing for) nodes that left; a later message dials again.
      for (const gone of this.peers) if (!peers.includes(gone)) this.transport.disconnect(gone)
      this.peers = peers
    }
    this.handlers.onView?.(view, events)
    if (this.held && view.members.length > 0) {
      const held = this.held
      this.held = null
      for (const message of held) this.transport.send(this.peers, message)
    }
  }
}

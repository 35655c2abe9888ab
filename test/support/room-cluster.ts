// Chat rooms on a real replicated log, in process: each node is a real Membership core with a
// real Transcript as its state machine, a real Outbox and a real ChatRoom, wired the way
// createChatNode and the cluster shell wire them (propose → core, every step → room.sync, view
// changes → room.setMembers, proposals from peers checked by the room). Raft and presence
// messages are delivered by this file in order, within the tick they were sent, unless a test
// cuts a link or drops a message. Time is a counter moved by TICK_MS a tick: no clock, no sleeps.
import { ChatRoom, type RoomDeps } from '../../src/chat/room'
import type { ChatMessage } from '../../src/chat/messages'
import type { ClientSocket } from '../../src/chat/sockets'
import { addressOf } from '../../src/cluster/address'
import { Membership, type Compaction, type MembershipView } from '../../src/cluster/membership'
import type { RaftMessage } from '../../src/cluster/messages'
import { DEFAULT_TIMING as TIMING, TICK_MS } from '../../src/cluster/timing'
import { validateTranscriptEntry, validateTranscriptSnapshot } from '../../src/transcript/entries'
import { Outbox } from '../../src/transcript/outbox'
import { Transcript } from '../../src/transcript/transcript'

export const addr = (n: number) => `bun://S@127.0.0.1:${2550 + n}`

export interface NodeOptions {
  lang?: 'en' | 'ko'
  maxMessageLength?: number
  historySize?: number
  historyOnJoin?: number
  maxPending?: number
  fanoutPerSecond?: number
  compaction?: Compaction
  /** Timers for the presence window (RoomDeps.after); absent, each presence change is told at once. */
  after?: (ms: number, fn: () => void) => unknown
}

/** A socket that records what it was sent, parsed. */
export class RecordingSocket implements ClientSocket {
  readonly sent: any[] = []
  subscribed = false
  closed: { code?: number; reason?: string } | null = null
  send(json: string): void {
    this.sent.push(JSON.parse(json))
  }
  close(code?: number, reason?: string): void {
    this.closed = { code, reason }
  }
  subscribe(): void {
    this.subscribed = true
  }
}

export class RoomNode {
  readonly transcript: Transcript
  readonly outbox: Outbox
  readonly room: ChatRoom
  core!: Membership
  /** Every frame published to all local users, parsed. */
  readonly published: any[] = []
  /** Frames sent to one local user (acks), parsed. */
  readonly toUser: Array<{ username: string; frame: any }> = []
  readonly disconnected: Array<{ username: string; code: number }> = []
  /** Subscribed sockets receive what is published, as the topic publish does. */
  readonly sockets = new Map<string, RecordingSocket>()
  alive = false
  peers: string[] = []
  /** Entries proposed in this turn, proposed to the core together at its end. */
  proposing: unknown[] = []
  private lastView: MembershipView | null = null
  private held: ChatMessage[] | null = []

  constructor(
    readonly net: RoomCluster,
    readonly address: string,
    readonly options: NodeOptions,
  ) {
    this.transcript = new Transcript(options.historySize ?? 10_000)
    this.outbox = new Outbox({ maxPending: options.maxPending ?? 10_000, retryMs: TIMING.electionTicksMin * TICK_MS })
    const deps: RoomDeps = {
      selfAddress: address,
      lang: options.lang ?? 'en',
      maxMessageLength: options.maxMessageLength ?? 20,
      now: () => net.now,
      publish: (json) => {
        const frame = JSON.parse(json)
        this.published.push(frame)
        for (const socket of this.sockets.values()) if (socket.subscribed) socket.sent.push(frame)
      },
      broadcast: (message) => {
        if (this.held) this.held.push(message)
        else for (const to of this.peers) net.sendChat(address, to, message)
      },
      sendTo: (to, message) => net.sendChat(address, to, message),
      disconnect: (username, code) => this.disconnected.push({ username, code }),
      fanoutPerSecond: options.fanoutPerSecond,
      sendToUser: (username, json) => this.toUser.push({ username, frame: JSON.parse(json) }),
      transcript: this.transcript,
      outbox: this.outbox,
      // As ClusterNode.propose: proposed at the end of this turn, with whatever else the turn proposed.
      propose: (entries) => {
        if (!this.alive) return
        this.proposing.push(...entries)
        net.turnPending.add(this)
      },
      selfId: () => this.core.selfId,
      leaderId: () => this.core.leaderId,
      takesProposals: () => this.core.takesProposals,
      historyOnJoin: options.historyOnJoin ?? 50,
      after: options.after,
    }
    this.room = new ChatRoom(deps)
  }

  start(incarnation: string, bootstrap: boolean): void {
    this.core = new Membership({
      self: { address: this.address, incarnation, httpUrl: `http://127.0.0.1:${8080 + Number(this.address.split(':').at(-1)) - 2550}` },
      seeds: [addr(1)],
      bootstrap,
      ...TIMING,
      random: this.net.random,
      app: this.transcript,
      compaction: this.options.compaction,
    })
    this.alive = true
  }

  /** A socket of a user of this node: once subscribed it receives what the room publishes. */
  socket(name = `s${this.sockets.size + 1}`): RecordingSocket {
    const socket = new RecordingSocket()
    this.sockets.set(name, socket)
    return socket
  }

  /** Lines delivered to this node's users (chat and system frames), in the order published. */
  lines(): any[] {
    return this.published.filter((f) => f.type === 'chat' || f.type === 'system')
  }

  chats(): string[] {
    return this.lines().filter((f) => f.type === 'chat').map((f) => f.message)
  }

  systems(): string[] {
    return this.lines().filter((f) => f.type === 'system').map((f) => f.message)
  }

  /** What the shell does after every step and tick (at the end of the turn, once for all of them). */
  afterStep(): void {
    if (this.proposing.length > 0) {
      const entries = this.proposing
      this.proposing = []
      this.core.propose(entries)
    }
    this.flush()
    this.publishView()
    this.room.sync()
  }

  flush(): void {
    for (const { to, message } of this.core.takeMessages()) this.net.sendRaft(message, to)
  }

  private publishView(): void {
    const view = this.core.view()
    const before = this.lastView
    const key = (v: MembershipView | null) => JSON.stringify(v && [v.status, v.members.map((m) => m.id)])
    if (before && key(before) === key(view)) return
    this.lastView = view
    if (view.members.length === 0) return
    this.peers = [...new Set(view.members.map((m) => m.address))].filter((a) => a !== this.address)
    this.room.setMembers(this.peers, view.status === 'Up' && before?.status !== 'Up')
    if (this.held) {
      const held = this.held
      this.held = null
      for (const message of held) for (const to of this.peers) this.net.sendChat(this.address, to, message)
    }
  }
}

export class RoomCluster {
  now = 1_000
  readonly nodes: RoomNode[] = []
  /** Return true to lose a Raft message. */
  dropRaft: (m: RaftMessage) => boolean = () => false
  private readonly cuts = new Set<string>()
  private queue: Array<{ kind: 'raft'; message: RaftMessage } | { kind: 'chat'; from: string; to: string; message: ChatMessage }> = []
  private seed = 7
  readonly random = (): number => {
    // mulberry32
    let t = (this.seed = (this.seed + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  /** `size` nodes; node 1 founds the cluster, the others join; returns once all are Up with one leader. */
  static form(size: number, options: NodeOptions = {}): RoomCluster {
    const net = new RoomCluster()
    for (let i = 1; i <= size; i++) net.nodes.push(new RoomNode(net, addr(i), options))
    net.nodes[0]!.start('i1', true)
    net.runUntil(() => net.nodes[0]!.core.role === 'leader', 10, 'bootstrap')
    for (const n of net.nodes.slice(1)) n.start('i1', false)
    net.runUntil(() => net.converged(), 100 * size, 'cluster formation')
    return net
  }

  node(n: number): RoomNode {
    return this.nodes[n - 1]!
  }

  leader(): RoomNode | undefined {
    return this.nodes.find((n) => n.alive && n.core.role === 'leader')
  }

  converged(): boolean {
    const live = this.nodes.filter((n) => n.alive)
    const leader = this.leader()
    if (!leader) return false
    return live.every((n) => n.core.view().status === 'Up' && n.core.commitIndex === leader.core.commitIndex && n.core.lastIndex() === leader.core.commitIndex && n.core.view().members.length === live.length)
  }

  /** Nodes with proposals waiting for the end of the turn. */
  readonly turnPending = new Set<RoomNode>()

  /** Raft messages sent, by type. */
  readonly sent = new Map<string, number>()

  sendRaft(message: RaftMessage, to: string): void {
    this.sent.set(message.type, (this.sent.get(message.type) ?? 0) + 1)
    this.queue.push({ kind: 'raft', message: { ...message, to } as RaftMessage })
  }

  sendChat(from: string, to: string, message: ChatMessage): void {
    this.queue.push({ kind: 'chat', from, to, message })
  }

  cut(a: string, b: string): void {
    this.cuts.add(`${a}>${b}`)
    this.cuts.add(`${b}>${a}`)
  }

  isolate(address: string): void {
    for (const n of this.nodes) if (n.address !== address) this.cut(address, n.address)
  }

  heal(): void {
    this.cuts.clear()
    this.dropRaft = () => false
  }

  crash(n: number): void {
    this.node(n).alive = false
  }

  /** Every live node ticks once, then everything sent is delivered. */
  tick(times = 1): void {
    for (let i = 0; i < times; i++) {
      this.deliver()
      this.now += TICK_MS
      for (const n of this.nodes) {
        if (!n.alive) continue
        n.core.tick()
        n.afterStep()
      }
      this.deliver()
    }
  }

  /** Ends the turn on every node with proposals waiting, then delivers everything sent, until nothing is left. */
  deliver(): void {
    for (let count = 0; this.queue.length > 0 || this.turnPending.size > 0; count++) {
      if (count > 1_000_000) throw new Error('message storm')
      if (this.turnPending.size > 0) {
        const pending = [...this.turnPending]
        this.turnPending.clear()
        for (const n of pending) if (n.alive) n.afterStep()
        continue
      }
      const item = this.queue.shift()!
      if (item.kind === 'raft') {
        const m = item.message
        const from = addressOf(m.from)
        const to = this.nodes.find((n) => n.address === addressOf(m.to))
        if (!to || !to.alive || this.cuts.has(`${from}>${to.address}`) || this.dropRaft(m)) continue
        // What the shell checks before the core sees a message: schemas of the application data, then the room's rules.
        if (m.type === 'proposal') {
          for (const e of m.entries) if (!validateTranscriptEntry(e).ok) throw new Error(`invalid entry proposed: ${JSON.stringify(e)}`)
          const verdict = to.room.checkProposal({ address: from, incarnation: m.from.split('#')[1]! }, m.from, m.entries)
          if (!verdict.ok) throw new Error(`${to.address} refused a proposal from ${m.from}: ${verdict.error}`)
        }
        if (m.type === 'install_snapshot' && !validateTranscriptSnapshot(m.app).ok) throw new Error(`invalid snapshot: ${validateTranscriptSnapshot(m.app)}`)
        to.core.step(m)
        to.afterStep()
      } else {
        const to = this.nodes.find((n) => n.address === item.to)
        if (!to || !to.alive || this.cuts.has(`${item.from}>${item.to}`)) continue
        const verdict = to.room.onPeerMessage({ address: item.from, incarnation: 'i1' }, item.message)
        // What one room sends, another accepts: the peer rules never refuse a real node.
        if (!verdict.ok) throw new Error(`room ${item.to} refused ${item.message.type} from ${item.from}: ${verdict.error}`)
      }
    }
  }

  /** Ticks until `done` holds; throws after `maxTicks` saying what it waited for. */
  runUntil(done: () => boolean, maxTicks: number, what: string): number {
    for (let t = 0; t <= maxTicks; t++) {
      if (done()) return t
      this.tick()
    }
    throw new Error(`${what} not reached within ${maxTicks} ticks`)
  }

  /** Ticks until every live node has applied what the leader committed and nothing is pending. */
  settle(maxTicks = 500): void {
    this.runUntil(() => {
      const leader = this.leader()
      if (!leader) return false
      const live = this.nodes.filter((n) => n.alive)
      return live.every((n) => n.outbox.size === 0 && n.core.commitIndex === leader.core.lastIndex() && n.transcript.applied === leader.core.lastIndex())
    }, maxTicks, 'every proposal applied on every node')
  }
}

/** A single node that founds its own cluster at once: what the gateway and HTTP tests run on. */
export function singleNode(options: NodeOptions = {}): { net: RoomCluster; node: RoomNode } {
  const net = RoomCluster.form(1, options)
  return { net, node: net.node(1) }
}

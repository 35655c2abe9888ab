// The whole-node simulator: N complete nodes (the real cluster shell, membership core, chat
// room, transcript, presence and gateway, built by src/node.ts's createChatNode; everything but
// Elysia and the TCP socket) on the in-memory transport and a virtual clock, with simulated
// WebSocket users that join, chat, leave and reconnect as the page does. One seed reproduces a
// whole run: `bun run sim --whole --seed N --verbose`.
//
// Each seed picks 3..5 nodes, all of them seeds; node 0 founds the cluster, the others start
// within the first 1.5 s. Swarm settings, drawn per seed: small log compaction (a snapshot every
// few entries, so lagging and restarted nodes install snapshots), a small history (so resumes
// can fall out of it and must be told `complete: false`), a small or no history on join. The
// fault model, in two profiles:
//   - tcp: what a real network does to TCP connections: frame delay (FIFO per connection),
//     connection resets (frames in flight lost, the sender redials), partitions (one node cut
//     off both ways, or one link cut), crashes with a restart as a new incarnation (its users'
//     sockets die and they reconnect elsewhere), graceful leaves and returns (its users are
//     closed with 1001 and reconnect elsewhere).
//   - hostile: tcp, plus frames lost, duplicated and reordered on live connections (no TCP does
//     that; it shows what the layers above assume of the transport).
// At most one node is lost (crashed, leaving, or cut off) at a time, and a new such fault waits
// until the cluster has converged again: the membership core tolerates any minority, but a run
// that loses a majority proves nothing (the membership simulator, simulator.ts, explores the
// harder schedules on the core alone).
//
// Users behave as the page does: each person (a name) sends chat, most of it with a unique
// clientMsgId (the rest plain), keeps what is not acked, and when its connection is closed under
// it (node crash, leave, name race) reconnects after a while to a live node, the same or another,
// resuming with `since`/`epoch` of the last line it read and sending again what is not acked,
// with the same clientMsgId. People also leave of their own accord and come back later (resuming,
// or as a fresh page that lost its queue), and second tabs race for names online elsewhere.
//
// Checks (checks.ts has the list): the membership invariants of simulator.ts's Checker after
// every event; after every step, every line every node applied against the one reference
// transcript; after the faults stop and the cluster converged: membership, one transcript on
// every live node, chat exactly once (acked ones at their ids) and in order, every connection's
// lines once, in order and without a gap it was not told of, presence (nodes, clients and the
// transcript's join/leave lines). Under the hostile profile the presence lists (which travel
// outside the transcript, at most once) are not judged unless `strictPresence`.
import { formatAddress } from '../../../src/cluster/address'
import type { Compaction } from '../../../src/cluster/membership'
import { NO_FAULTS, MemoryNetwork } from '../../../src/cluster/memory-transport'
import type { RaftMessage } from '../../../src/cluster/messages'
import { DEFAULT_TIMING } from '../../../src/cluster/timing'
import type { NodeIo } from '../../../src/io'
import { createChatNode, type ChatNode } from '../../../src/node'
import { Checker, InvariantViolation, Prng, SimulationFailure } from '../simulator'
import { VirtualClock } from '../virtual-clock'
import {
  checkChat,
  checkDelivery,
  checkPresence,
  checkTranscriptPresence,
  checkTranscripts,
  membershipNotConverged,
  Reference,
  type HistoryNote,
  type Problem,
  type SentChat,
} from './checks'
import { lineIds, readFrames, SimFanout, SimSocket, type ClientView, type Person, type SimUser } from './users'

export type Profile = 'tcp' | 'hostile'

export interface WholeOptions {
  profile?: Profile
  /** Judge the presence lists under the hostile profile too (they are at most once: they fail there). */
  strictPresence?: boolean
  trace?: (line: string) => void
}

export interface WholeStats {
  seed: number
  profile: Profile
  nodes: number
  virtualMs: number
  users: number
  chats: number
  acked: number
  resumes: number
  lines: number
  /** Join or leave lines that told of more than one name (gathered, or a removed node's users). */
  sharedLines: number
  deliveries: number
  snapshots: number
  incomplete: number
  crashes: number
  leaves: number
  partitions: number
  resets: number
  rejoins: number
  dropped: number
  duplicated: number
  convergedAfterMs: number
}

const JOIN_REQUEST = Buffer.from('join_request')
const STEP_MS = 10
const FAULT_MS_MIN = 1_000
const FAULT_MS_MAX = 5_000
const CONVERGE_MS_MAX = 30_000
/** After convergence: users keep chatting (and reconnecting) this long, then the run drains. */
const AFTER_MS = 800
const DRAIN_MS = 800
const USERS_PER_NODE_MAX = 8
/** The page's reconnect backoff: first try within this, doubling, capped. */
const RECONNECT_MS_MIN = 50
const RECONNECT_MS_MAX = 2_000

interface Slot {
  index: number
  address: string
  fanout: SimFanout
  node: ChatNode | null
  /** Counts processes at this address; each start is a new one. */
  processes: number
  process: number
  startAt: number | null
  incarnations: number
  /** The last transcript line of this process compared with the reference. */
  checkedTo: number
}

interface Rates {
  connect: number
  chat: number
  disconnect: number
  reset: number
  partition: number
  crash: number
  leave: number
}

interface Settings {
  compaction: Compaction
  historySize: number | undefined
  historyOnJoin: number
  /** Share of chat sent with a clientMsgId. */
  withId: number
  gatherFrom: number | undefined
}

export function runWholeSeed(seed: number, options: WholeOptions = {}): Promise<WholeStats> {
  return new WholeSimulation(seed, options).run()
}

class WholeSimulation {
  private readonly rng: Prng
  private readonly clock = new VirtualClock()
  private readonly network: MemoryNetwork
  private readonly checker = new Checker()
  private readonly reference = new Reference()
  private readonly slots: Slot[] = []
  private readonly users: SimUser[] = []
  private readonly people = new Map<string, Person>()
  private readonly sent: SentChat[] = []
  private readonly sentByText = new Map<string, SentChat>()
  private readonly sentById = new Map<string, SentChat>()
  /** When (in `order`) the sender first got an ack for a message. */
  private readonly ackedAt = new Map<SentChat, number>()
  /** What each node's transcript covered when it sent each history frame to a connection. */
  private readonly historyNotes = new Map<SimUser, HistoryNote[]>()
  private readonly profile: Profile
  private readonly rates: Rates
  private readonly settings: Settings
  private readonly faultMs: number
  /** Set while one node is lost: nothing else may be lost until the cluster converged again. */
  private lost: { slot: number; until: number; kind: 'crash' | 'isolate' | 'link' | 'leave'; peer?: number } | null = null
  private faultsOver = false
  private nextUser = 0
  private nextPerson = 0
  private nextChat = 0
  /** Orders opens and sends that happen at the same virtual instant. */
  private order = 0
  private readonly stats: WholeStats

  constructor(
    private readonly seed: number,
    private readonly options: WholeOptions,
  ) {
    this.rng = new Prng(seed)
    this.network = new MemoryNetwork(this.clock, this.rng.next)
    this.profile = options.profile ?? 'tcp'
    const r = this.rng
    const nodes = r.pick([3, 3, 4, 5])
    this.faultMs = r.int(FAULT_MS_MIN, FAULT_MS_MAX)
    const sometimes = (p: number, value: () => number) => (r.chance(p) ? value() : 0)
    this.rates = {
      connect: 0.02 + r.next() * 0.05,
      chat: 0.005 + r.next() * 0.03,
      disconnect: r.next() * 0.01,
      reset: sometimes(0.6, () => r.next() * 0.01),
      partition: sometimes(0.7, () => r.next() * 0.015),
      crash: sometimes(0.6, () => r.next() * 0.02),
      leave: sometimes(0.4, () => r.next() * 0.01),
    }
    this.settings = {
      // Small (snapshots installed often) or moderate (now and then); the default (4,096) is never reached in a run.
      compaction: r.chance(0.5) ? { snapshotEvery: r.int(4, 64), keepEntries: r.int(0, 16) } : { snapshotEvery: r.int(128, 512), keepEntries: r.int(16, 128) },
      historySize: r.chance(0.3) ? r.int(5, 200) : undefined,
      historyOnJoin: r.pick([0, 5, 50, 50]),
      // Joins and leaves gathered into shared lines (as in a room of 100 or more) in odd seeds;
      // from the seed, not the random stream, so seeds found before still replay as they were.
      gatherFrom: seed % 2 === 1 ? 1 + ((seed >> 1) % 4) : undefined,
      withId: r.pick([0.5, 0.8, 1]),
    }
    const delayMsMax = r.pick([1, 2, 5, 20, 50])
    this.network.faults = {
      delayMsMin: 1,
      delayMsMax,
      drop: this.profile === 'hostile' ? sometimes(0.7, () => r.next() * 0.05) : 0,
      duplicate: this.profile === 'hostile' ? sometimes(0.5, () => r.next() * 0.05) : 0,
      reorder: this.profile === 'hostile' ? sometimes(0.5, () => r.next() * 0.1) : 0,
    }
    // Decoding every frame a second time would cost a tenth of the run: only frames that hold the word.
    this.network.onSend = (_from, _to, frame, decode) => {
      if (Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).indexOf(JOIN_REQUEST) < 0) return
      const message = decode() as RaftMessage | null
      if (message?.type === 'join_request') this.checker.mayJoin.add(message.from)
    }
    for (let i = 0; i < nodes; i++) {
      this.slots.push({
        index: i,
        address: formatAddress({ systemName: 'Sim', host: `n${i}`, port: 2551 }),
        fanout: new SimFanout(),
        node: null,
        processes: 0,
        process: 0,
        startAt: i === 0 ? 0 : r.chance(0.5) ? r.int(0, 300) : r.int(0, 1500),
        incarnations: 0,
        checkedTo: 0,
      })
    }
    this.stats = {
      seed, profile: this.profile, nodes, virtualMs: 0, users: 0, chats: 0, acked: 0, resumes: 0, lines: 0, sharedLines: 0, deliveries: 0, snapshots: 0, incomplete: 0,
      crashes: 0, leaves: 0, partitions: 0, resets: 0, rejoins: 0, dropped: 0, duplicated: 0, convergedAfterMs: 0,
    }
    const c = this.settings.compaction
    this.log(
      `seed ${seed}: ${nodes} nodes, profile ${this.profile}, faults for ${this.faultMs} ms, delay 1..${delayMsMax} ms, ` +
        `drop ${pct(this.network.faults.drop)} dup ${pct(this.network.faults.duplicate)} reorder ${pct(this.network.faults.reorder)}, ` +
        `rates per step: ${Object.entries(this.rates).map(([k, v]) => `${k} ${pct(v)}`).join(' ')}; ` +
        `compaction every ${c.snapshotEvery} keeping ${c.keepEntries}, history ${this.settings.historySize ?? 'default'} (${this.settings.historyOnJoin} on join), ` +
        `${this.settings.gatherFrom === undefined ? 'a line per join and leave' : `joins and leaves gathered from ${this.settings.gatherFrom} users`}, ` +
        `${pct(this.settings.withId)} of chat with a clientMsgId`,
    )
  }

  async run(): Promise<WholeStats> {
    let convergedAt = -1
    let stopChatAt = Infinity
    for (let now = 0; ; now += STEP_MS) {
      await this.startDue(now)
      if (now >= this.faultMs && !this.faultsOver) this.stopFaults()
      if (!this.faultsOver) this.injectFaults(now)
      if (now < stopChatAt) this.workload(now)
      this.advance(now + STEP_MS)
      if (!this.faultsOver) continue
      if (convergedAt < 0) {
        const why = this.notConverged()
        if (why === null) {
          convergedAt = this.clock.elapsed
          stopChatAt = convergedAt + AFTER_MS
          this.stats.convergedAfterMs = convergedAt - this.faultMs
          this.log(`converged ${this.stats.convergedAfterMs} ms after the faults stopped`)
        } else if (this.clock.elapsed - this.faultMs > CONVERGE_MS_MAX) {
          this.fail('Liveness', `not converged ${CONVERGE_MS_MAX} ms after the faults stopped: ${why}`)
        }
      } else if (this.clock.elapsed >= stopChatAt + DRAIN_MS) break
    }
    const why = this.notConverged()
    if (why !== null) this.fail('Liveness (stable)', `converged, then lost it: ${why}`)
    this.check()
    this.stats.virtualMs = this.clock.elapsed
    this.stats.users = this.users.length
    this.stats.chats = this.sent.length
    this.stats.lines = this.reference.lines.size
    for (const line of this.reference.lines.values()) if (line.type === 'system' && line.usernames.length > 1) this.stats.sharedLines++
    this.stats.dropped = this.network.counters.dropped
    this.stats.duplicated = this.network.counters.duplicated
    this.stats.resets = this.network.counters.resets
    for (const slot of this.slots) await slot.node?.stop()
    return this.stats
  }

  // ---- time ----

  /** Runs the clock to `until`, checking the membership invariants after every event. */
  private advance(until: number): void {
    try {
      this.clock.runUntil(until, () => {
        for (const slot of this.slots) if (slot.node) this.checker.observe(slot.node.cluster.membership)
        if (this.found) this.fail(this.found.check, this.found.detail)
      })
    } catch (error) {
      if (error instanceof InvariantViolation) this.fail(error.invariant, error.detail)
      throw error
    }
  }

  /**
   * A violation seen inside a node's own call (a state machine applying an entry): thrown there,
   * the shell or the transport could catch it as the node's error, so it is kept and thrown as
   * soon as the event that caused it is over.
   */
  private found: Problem | null = null

  private foundInside(problem: Problem): void {
    this.found ??= problem
  }

  /** The lines a node applied since the last look, against the one reference transcript. */
  private observeTranscript(slot: Slot, node: ChatNode): void {
    const seen = this.reference.observe(`n${slot.index}`, node.transcript, slot.checkedTo)
    if (typeof seen !== 'number') this.foundInside(seen)
    else slot.checkedTo = seen
  }

  // ---- nodes ----

  private async startDue(now: number): Promise<void> {
    for (const slot of this.slots) {
      if (slot.startAt === null || slot.startAt > now || slot.node) continue
      slot.startAt = null
      slot.process = ++slot.processes
      slot.checkedTo = 0
      const first = slot.index === 0 && slot.process === 1
      const io: NodeIo = {
        transport: this.network.factory,
        clock: this.clock,
        random: this.rng.next,
        newIncarnation: () => `${slot.index}.${++slot.incarnations}`,
        log: this.options.trace ? (line) => this.log(`[n${slot.index}] ${line}`) : () => {},
      }
      const node = createChatNode(
        {
          systemName: 'Sim',
          host: `n${slot.index}`,
          clusterPort: 2551,
          httpPort: 8081,
          // The same seed list on every node, node 0 first: a restarted node 0 must find the
          // running cluster rather than found a second one (the checker catches a second founding).
          seeds: this.slots.map((s) => s.address),
          timing: DEFAULT_TIMING,
          lang: 'en',
          maxMessageLength: 2000,
          rateLimit: 20,
          rateBurst: 40,
          compaction: this.settings.compaction,
          historySize: this.settings.historySize,
          historyOnJoin: this.settings.historyOnJoin,
          gatherFrom: this.settings.gatherFrom,
        },
        io,
        slot.fanout,
      )
      // Entries compacted in the very step that committed them are seen by the checker as they are applied.
      const transcript = node.transcript
      const apply = transcript.apply.bind(transcript)
      transcript.apply = (index, entry) => {
        try {
          this.checker.applied(node.cluster.membership.selfId, index, entry, node.cluster.membership.term)
        } catch (error) {
          if (!(error instanceof InvariantViolation)) throw error
          this.foundInside({ check: error.invariant, detail: error.detail })
        }
        apply(index, entry)
        // Lines are compared as they are applied: a burst may push them out of a small history within one step.
        this.observeTranscript(slot, node)
      }
      const restore = transcript.restore.bind(transcript)
      transcript.restore = (index, snapshot) => {
        restore(index, snapshot)
        if (index > 0) this.stats.snapshots++
        this.observeTranscript(slot, node)
      }
      slot.node = node
      await node.start()
      if (first) this.checker.mayJoin.add(node.cluster.membership.selfId)
      this.log(`n${slot.index} starts (process ${slot.process}) as ${node.cluster.membership.selfId}`)
    }
  }

  /** The node process dies: its sockets and connections with it. */
  private async crash(slot: Slot, restartIn: number | null): Promise<void> {
    const node = slot.node!
    slot.node = null
    for (const user of this.users) {
      if (user.slot !== slot.index || user.process !== slot.process || !user.socket.open) continue
      user.socket.kill(1006, 'node died')
      this.closed(user, false)
    }
    await node.stop()
    slot.startAt = restartIn === null ? null : this.clock.elapsed + restartIn
    this.log(`n${slot.index} crashes${restartIn === null ? '' : `; restarts in ${restartIn} ms`}`)
  }

  // ---- users ----

  private liveSlots(): Slot[] {
    return this.slots.filter((s) => s.node)
  }

  private openUsers(): SimUser[] {
    return this.users.filter((u) => u.socket.open)
  }

  /** The person's connection now open, if any (not counting second tabs). */
  private current(person: Person): SimUser | undefined {
    const last = person.connections[person.connections.length - 1]
    return last?.socket.open ? last : undefined
  }

  private workload(now: number): void {
    const r = this.rng
    const live = this.liveSlots()
    if (live.length === 0) return
    // Pages reconnecting by themselves.
    for (const person of this.people.values()) {
      if (person.reconnectAt === null || person.reconnectAt > now || this.current(person)) continue
      person.reconnectAt = null
      this.connect(r.pick(this.liveSlots()), person, true)
    }
    const open = this.openUsers()
    if (r.chance(this.rates.connect) && open.length < USERS_PER_NODE_MAX * this.slots.length) {
      const slot = r.pick(live)
      const offline = [...this.people.values()].filter((p) => !this.current(p) && p.reconnectAt === null)
      if (open.length > 0 && r.chance(0.1)) this.connectProbe(slot, r.pick(open).username)
      else if (offline.length > 0 && r.chance(0.3)) {
        // Someone coming back: mostly the page resuming, sometimes a fresh page that lost its queue.
        const person = r.pick(offline)
        const resume = r.chance(0.8)
        if (!resume) {
          person.pending = []
          person.lastSeen = null
        }
        this.connect(slot, person, resume)
      } else {
        const person: Person = { username: `u${this.nextPerson++}`, connections: [], pending: [], lastSeen: null, reconnectAt: null, attempts: 0 }
        this.people.set(person.username, person)
        this.connect(slot, person, false)
      }
    }
    const talkers = this.openUsers().filter((u) => !u.probe)
    if (talkers.length > 0 && r.chance(this.rates.chat * Math.min(10, talkers.length))) this.chat(r.pick(talkers), now)
    const present = this.openUsers()
    if (present.length > 0 && r.chance(this.rates.disconnect * present.length)) {
      const user = r.pick(present)
      this.log(`${user.id} (${user.username}) disconnects from n${user.slot}`)
      user.closedByUser = true
      user.socket.close(1000, 'bye')
    }
  }

  private newConnection(slot: Slot, person: Person, probe: boolean, resume: SimUser['resume']): SimUser {
    const node = slot.node!
    const id = `s${this.nextUser++}`
    const notes: HistoryNote[] = []
    const socket = new SimSocket(
      slot.fanout,
      () => {
        // Elysia runs the close handler after the socket closed; only the process that owns it.
        this.clock.after(0, () => {
          if (slot.node === node) node.gateway.close(id)
        })
        this.closed(user, true)
      },
      (json) => {
        if (json.startsWith('{"type":"history"')) notes.push({ coveredFrom: node.transcript.coveredFrom, epoch: node.transcript.epoch })
        else if (json.startsWith('{"type":"ack"')) {
          const m = this.sentById.get(`${person.username}\n${(JSON.parse(json) as { clientMsgId: string }).clientMsgId}`)
          if (m && !this.ackedAt.has(m)) this.ackedAt.set(m, this.order++)
        }
      },
    )
    const user: SimUser = {
      id, username: person.username, person, probe, slot: slot.index, process: slot.process, socket, openedAt: this.clock.elapsed, order: this.order++,
      closedAt: null, closedByUser: false, resume, startId: Math.max(node.transcript.lastId, slot.checkedTo),
    }
    this.historyNotes.set(user, notes)
    this.users.push(user)
    return user
  }

  /** A person's page connects: resuming from the last line it read and sending again what is not acked, or fresh. */
  private connect(slot: Slot, person: Person, resume: boolean): void {
    const since = resume ? person.lastSeen : null
    const user = this.newConnection(slot, person, false, since)
    person.connections.push(user)
    // The page leaves out an epoch it never learnt (its first history came from a node not yet in a cluster).
    const resumeAt = since ? (since.epoch === '' ? { since: since.since } : since) : {}
    slot.node!.gateway.open(user.id, user.socket, { ok: true, value: person.username }, resumeAt)
    const outcome = user.socket.open ? (since ? `resuming after ${since.since}` : 'fresh') : `refused ${user.socket.closeCode} ${user.socket.closeReason}`
    const t = slot.node!.transcript
    this.log(`${user.id} connects to n${slot.index} as ${person.username}: ${outcome} (transcript there: applied ${t.applied}, lines ${t.coveredFrom}..${t.lastId})`)
    if (!user.socket.open) return
    person.attempts = 0
    if (since) this.stats.resumes++
    for (const m of [...person.pending]) this.send(user, m.text, m.clientMsgId)
  }

  /** A second tab takes a name online elsewhere: one of the two must give way. */
  private connectProbe(slot: Slot, username: string): void {
    const person = this.people.get(username)!
    const user = this.newConnection(slot, person, true, null)
    slot.node!.gateway.open(user.id, user.socket, { ok: true, value: username })
    this.log(`${user.id} (second tab) connects to n${slot.index} as ${username}${user.socket.open ? '' : `: refused ${user.socket.closeCode} ${user.socket.closeReason}`}`)
  }

  /** A connection closed (by its node, its user, or its node's death): the page takes note and may reconnect. */
  private closed(user: SimUser, byServer: boolean): void {
    if (user.closedAt !== null) return
    user.closedAt = this.clock.elapsed
    if (user.probe) return
    const person = user.person
    this.takeNote(person, user)
    if (user.closedByUser || person.connections[person.connections.length - 1] !== user) return
    const backoff = Math.min(RECONNECT_MS_MAX, RECONNECT_MS_MIN << Math.min(person.attempts, 6))
    person.attempts++
    person.reconnectAt = this.clock.elapsed + this.rng.int(0, backoff)
    this.log(`${user.id} (${user.username}) closed ${user.socket.closeCode} ${user.socket.closeReason}${byServer ? '' : ' (node died)'}; reconnects at ${person.reconnectAt}`)
  }

  /** What the page learnt on one connection: the last line it read, and what was acked. */
  private takeNote(person: Person, user: SimUser): void {
    const view = readFrames(user.socket.frames)
    const ids = lineIds(view)
    let epoch = person.lastSeen?.epoch ?? ''
    for (const r of view.reads) if (r.kind === 'history' && r.epoch !== '') epoch = r.epoch
    if (ids.length > 0) person.lastSeen = { since: ids[ids.length - 1]!, epoch }
    if (view.acks.length > 0) {
      const acked = new Set(view.acks.map((a) => a.clientMsgId))
      person.pending = person.pending.filter((m) => !acked.has(m.clientMsgId))
    }
  }

  private chat(user: SimUser, now: number): void {
    const slot = this.slots[user.slot]!
    if (!slot.node || slot.process !== user.process) return
    const n = this.nextChat++
    const text = `c${n}`
    const clientMsgId = this.rng.chance(this.settings.withId) ? `m${n}` : null
    const m: SentChat = { text, username: user.username, clientMsgId, sends: [] }
    this.sent.push(m)
    this.sentByText.set(text, m)
    if (clientMsgId) this.sentById.set(`${user.username}\n${clientMsgId}`, m)
    this.log(`${user.id} (${user.username}) at n${user.slot} says ${text}${clientMsgId ? ` (${clientMsgId})` : ''}`)
    const accepted = this.send(user, text, clientMsgId, now)
    if (accepted && clientMsgId) user.person.pending.push({ text, clientMsgId })
  }

  /** Sends one chat frame; false when the node refused it (an error frame answered it). */
  private send(user: SimUser, text: string, clientMsgId: string | null, now = this.clock.elapsed): boolean {
    const node = this.slots[user.slot]!.node!
    const frames = user.socket.frames.length
    // A text frame: the typed form (with a clientMsgId, or without), or plain text.
    const data = clientMsgId ? JSON.stringify({ type: 'chat', message: text, clientMsgId }) : this.rng.chance(0.5) ? JSON.stringify({ type: 'chat', message: text }) : text
    node.gateway.message(user.id, data)
    const accepted = !user.socket.frames.slice(frames).some((f) => f.startsWith('{"type":"error"'))
    this.sentByText.get(text)!.sends.push({ user, at: now, order: this.order++, accepted })
    return accepted
  }

  // ---- faults ----

  private injectFaults(now: number): void {
    const r = this.rng
    if (r.chance(this.rates.reset)) {
      const connections = this.network.connections()
      if (connections.length > 0) {
        const [from, to] = r.pick(connections)
        this.network.reset(from, to)
        this.log(`reset ${from} -> ${to}`)
      }
    }
    if (this.lost && this.lost.until <= now) this.recover()
    if (this.lost || this.notConverged() !== null) return
    const live = this.liveSlots()
    if (live.length < 3) return
    const leader = live.find((s) => s.node!.cluster.membership.role === 'leader')
    const victim = leader && r.chance(0.5) ? leader : r.pick(live)
    if (r.chance(this.rates.partition)) {
      const until = now + r.int(20, 4000)
      if (r.chance(0.5)) {
        for (const other of this.slots) if (other !== victim) this.network.cut(victim.address, other.address)
        this.lost = { slot: victim.index, until, kind: 'isolate' }
        this.log(`n${victim.index} cut off until ${until}`)
      } else {
        const peer = r.pick(this.slots.filter((s) => s !== victim))
        this.network.cut(victim.address, peer.address)
        this.lost = { slot: victim.index, until, kind: 'link', peer: peer.index }
        this.log(`link n${victim.index} | n${peer.index} cut until ${until}`)
      }
      this.stats.partitions++
    } else if (r.chance(this.rates.crash)) {
      this.stats.crashes++
      this.lost = { slot: victim.index, until: now + r.int(100, 4000), kind: 'crash' }
      void this.crash(victim, null)
    } else if (r.chance(this.rates.leave)) {
      this.stats.leaves++
      this.lost = { slot: victim.index, until: now + r.int(500, 4000), kind: 'leave' }
      this.log(`n${victim.index} leaves`)
      const node = victim.node!
      for (const user of this.users) if (user.slot === victim.index && user.process === victim.process && user.socket.open) user.socket.close(1001, 'server shutting down')
      void node.leave(5000).then(async () => {
        // Back at the end of the lost period, or at once if that has passed.
        if (victim.node === node) await this.crash(victim, this.lost?.slot === victim.index ? null : 0)
      })
    }
  }

  /** The lost node comes back: the partition heals, or the crashed or departed node restarts. */
  private recover(): void {
    const lost = this.lost!
    const slot = this.slots[lost.slot]!
    if (lost.kind === 'isolate') for (const other of this.slots) this.network.heal(slot.address, other.address)
    if (lost.kind === 'link') this.network.heal(slot.address, this.slots[lost.peer!]!.address)
    if ((lost.kind === 'crash' || lost.kind === 'leave') && !slot.node && slot.startAt === null) slot.startAt = this.clock.elapsed
    this.log(`n${lost.slot} recovers from ${lost.kind}`)
    this.lost = null
  }

  private stopFaults(): void {
    this.faultsOver = true
    if (this.lost) this.recover()
    this.network.healAll()
    this.network.faults = { ...NO_FAULTS, delayMsMax: 3 }
    this.log('faults stop: links heal, lost nodes come back, no more loss, duplication or reordering')
  }

  // ---- checks ----

  private notConverged(): string | null {
    if (this.slots.some((s) => s.startAt !== null)) return 'a node is still to start'
    return membershipNotConverged(this.liveSlots().map((s) => s.node!.cluster.membership))
  }

  private check(): void {
    const problem = this.found ?? this.findProblem()
    if (problem) this.fail(problem.check, problem.detail)
  }

  private findProblem(): Problem | null {
    const live = this.liveSlots()
    const addresses = this.slots.map((s) => s.address)
    const views = new Map<SimUser, ClientView>(this.users.map((u) => [u, readFrames(u.socket.frames)]))
    const connectedAtEnd = (user: SimUser) => user.socket.open && this.slots[user.slot]!.process === user.process && this.slots[user.slot]!.node !== null
    for (const user of this.users) for (const ack of views.get(user)!.acks) if (ack) this.stats.acked++
    for (const [user, view] of views) for (const r of view.reads) if (r.kind === 'history' && !r.complete) this.stats.incomplete++
    const presence = this.profile === 'tcp' || this.options.strictPresence === true
    return (
      checkTranscripts(live.map((s) => ({ name: `n${s.index}`, transcript: s.node!.transcript })), this.reference) ??
      checkChat(this.sent, this.users, views, this.reference, { connectedAtEnd, ackedAt: (m) => this.ackedAt.get(m) }) ??
      checkDelivery(this.users, views, this.reference, {
        historyOnJoin: this.settings.historyOnJoin,
        connectedAtEnd,
        historyNotes: (user) => this.historyNotes.get(user) ?? [],
        onDelivery: () => this.stats.deliveries++,
        presence,
      }) ??
      checkTranscriptPresence(this.reference, this.users) ??
      (presence ? checkPresence(live.map((s) => ({ address: s.address, room: s.node!.room })), this.users, views, addresses) : null)
    )
  }

  private fail(invariant: string, detail: string): never {
    this.log(`FAILED ${invariant}: ${detail}`)
    // With the trace on, what each connection named in the detail read (presence frames left out).
    const named = new Set(detail.match(/\bs\d+\b/g) ?? [])
    for (const u of this.users) {
      if (!named.has(u.id)) continue
      this.log(`${u.id} (${u.username} at n${u.slot}${u.resume ? `, resuming after ${u.resume.since}` : ''}, from line ${u.startId}) read:`)
      for (const frame of u.socket.frames) if (!frame.startsWith('{"type":"presence"')) this.log(`  ${frame}`)
    }
    throw new SimulationFailure(this.seed, invariant, detail, this.clock.elapsed, wholeReplayCommand(this.seed, this.options))
  }

  private log(line: string): void {
    this.options.trace?.(`t=${String(this.clock.elapsed).padStart(6)} ${line}`)
  }
}

export const wholeReplayCommand = (seed: number, options: WholeOptions = {}) =>
  `bun run sim --whole --seed ${seed}${options.profile === 'hostile' ? ' --hostile' : ''}${options.strictPresence ? ' --strict' : ''} --verbose`

const pct = (x: number) => `${(x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 0)}%`

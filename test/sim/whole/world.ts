// The whole-node simulator: N complete nodes (the real cluster shell, membership core, chat
// room, presence and gateway, built by src/node.ts's createChatNode; everything but Elysia and
// the TCP socket) on the in-memory transport and a virtual clock, with simulated WebSocket users
// that join, chat, leave and reconnect. One seed reproduces a whole run:
// `bun run sim --whole --seed N --verbose`.
//
// Each seed picks 3..5 nodes, all of them seeds; node 0 founds the cluster, the others start
// within the first 1.5 s. The fault model, in two profiles:
//   - tcp: what a real network does to TCP connections: frame delay (FIFO per connection),
//     connection resets (frames in flight lost, the sender redials), partitions (one node cut
//     off both ways, or one link cut), crashes with a restart as a new incarnation (its users'
//     sockets die and they reconnect elsewhere later), graceful leaves and returns.
//   - hostile: tcp, plus frames lost, duplicated and reordered on live connections (no TCP does
//     that; it shows what the layers above assume of the transport).
// At most one node is lost (crashed, leaving, or cut off) at a time, and a new such fault waits
// until the cluster has converged again: the membership core tolerates any minority, but a run
// that loses a majority proves nothing (the membership simulator, simulator.ts, explores the
// harder schedules on the core alone).
//
// Checks: the membership invariants of simulator.ts's Checker after every event (one timer or
// one delivery). After the faults stop: one leader and one member list of exactly the live
// incarnations, all Up (liveness); every node's user list equals the users actually connected to
// live nodes, and so does every connected client's list (presence); no client saw a presence
// change or a join/leave line twice (exactly once); every chat message sent after convergence
// reached every user connected from before it was sent to the end, once; no user saw two
// messages of one sender out of order or one message twice (delivery).
// `strictDelivery` also demands that messages sent during the faults reached every user that
// stayed connected throughout, when the sender's node process lived to the end: the delivery
// issue's guarantee, which today's at-most-once path does not give (see whole.test.ts).
import { formatAddress } from '../../../src/cluster/address'
import { NO_FAULTS, MemoryNetwork } from '../../../src/cluster/memory-transport'
import type { RaftMessage } from '../../../src/cluster/messages'
import { DEFAULT_TIMING } from '../../../src/cluster/timing'
import type { NodeIo } from '../../../src/io'
import { createChatNode, type ChatNode } from '../../../src/node'
import { Checker, InvariantViolation, Prng, SimulationFailure } from '../simulator'
import { VirtualClock } from '../virtual-clock'
import { checkDelivery, checkPresence, membershipNotConverged, type SentChat } from './checks'
import { SimFanout, SimSocket, type SimUser } from './users'

export type Profile = 'tcp' | 'hostile'

export interface WholeOptions {
  profile?: Profile
  /** Also require delivery of messages sent during the faults (the delivery issue's guarantee). */
  strictDelivery?: boolean
  trace?: (line: string) => void
}

export interface WholeStats {
  seed: number
  profile: Profile
  nodes: number
  virtualMs: number
  users: number
  chats: number
  deliveries: number
  crashes: number
  leaves: number
  partitions: number
  resets: number
  rejoins: number
  dropped: number
  duplicated: number
  convergedAfterMs: number
}

const STEP_MS = 10
const FAULT_MS_MIN = 3_000
const FAULT_MS_MAX = 20_000
const CONVERGE_MS_MAX = 30_000
/** After convergence: time for snapshots to settle before the post-convergence chat is judged. */
const SETTLE_MS = 1_000
const AFTER_MS = 3_000
const DRAIN_MS = 1_500
const USERS_PER_NODE_MAX = 12

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

export function runWholeSeed(seed: number, options: WholeOptions = {}): Promise<WholeStats> {
  return new WholeSimulation(seed, options).run()
}

class WholeSimulation {
  private readonly rng: Prng
  private readonly clock = new VirtualClock()
  private readonly network: MemoryNetwork
  private readonly checker = new Checker()
  private readonly slots: Slot[] = []
  private readonly users: SimUser[] = []
  private readonly sent: SentChat[] = []
  private readonly profile: Profile
  private readonly rates: Rates
  private readonly faultMs: number
  /** Set while one node is lost: nothing else may be lost until the cluster converged again. */
  private lost: { slot: number; until: number; kind: 'crash' | 'isolate' | 'link' | 'leave'; peer?: number } | null = null
  private faultsOver = false
  private nextUser = 0
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
    const nodes = r.int(3, 5)
    this.faultMs = r.int(FAULT_MS_MIN, FAULT_MS_MAX)
    const sometimes = (p: number, value: () => number) => (r.chance(p) ? value() : 0)
    this.rates = {
      connect: 0.02 + r.next() * 0.05,
      chat: 0.02 + r.next() * 0.1,
      disconnect: r.next() * 0.01,
      reset: sometimes(0.6, () => r.next() * 0.01),
      partition: sometimes(0.7, () => r.next() * 0.004),
      crash: sometimes(0.6, () => r.next() * 0.006),
      leave: sometimes(0.4, () => r.next() * 0.004),
    }
    const delayMsMax = r.pick([1, 2, 5, 20, 50])
    this.network.faults = {
      delayMsMin: 1,
      delayMsMax,
      drop: this.profile === 'hostile' ? sometimes(0.7, () => r.next() * 0.05) : 0,
      duplicate: this.profile === 'hostile' ? sometimes(0.5, () => r.next() * 0.05) : 0,
      reorder: this.profile === 'hostile' ? sometimes(0.5, () => r.next() * 0.1) : 0,
    }
    this.network.onSend = (_from, _to, message) => {
      if ((message as RaftMessage | null)?.type === 'join_request') this.checker.mayJoin.add((message as RaftMessage).from)
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
      })
    }
    this.stats = {
      seed, profile: this.profile, nodes, virtualMs: 0, users: 0, chats: 0, deliveries: 0, crashes: 0, leaves: 0, partitions: 0,
      resets: 0, rejoins: 0, dropped: 0, duplicated: 0, convergedAfterMs: 0,
    }
    this.log(
      `seed ${seed}: ${nodes} nodes, profile ${this.profile}, faults for ${this.faultMs} ms, delay 1..${delayMsMax} ms, ` +
        `drop ${pct(this.network.faults.drop)} dup ${pct(this.network.faults.duplicate)} reorder ${pct(this.network.faults.reorder)}, ` +
        `rates per step: ${Object.entries(this.rates).map(([k, v]) => `${k} ${pct(v)}`).join(' ')}`,
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
          stopChatAt = convergedAt + SETTLE_MS + AFTER_MS
          this.stats.convergedAfterMs = convergedAt - this.faultMs
          this.log(`converged ${this.stats.convergedAfterMs} ms after the faults stopped`)
        } else if (this.clock.elapsed - this.faultMs > CONVERGE_MS_MAX) {
          this.fail('Liveness', `not converged ${CONVERGE_MS_MAX} ms after the faults stopped: ${why}`)
        }
      } else if (this.clock.elapsed >= stopChatAt + DRAIN_MS) break
    }
    const why = this.notConverged()
    if (why !== null) this.fail('Liveness (stable)', `converged, then lost it: ${why}`)
    this.check(convergedAt + SETTLE_MS)
    this.stats.virtualMs = this.clock.elapsed
    this.stats.users = this.users.length
    this.stats.chats = this.sent.length
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
      })
    } catch (error) {
      if (error instanceof InvariantViolation) this.fail(error.invariant, error.detail)
      throw error
    }
  }

  // ---- nodes ----

  private async startDue(now: number): Promise<void> {
    for (const slot of this.slots) {
      if (slot.startAt === null || slot.startAt > now || slot.node) continue
      slot.startAt = null
      slot.process = ++slot.processes
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
        },
        io,
        slot.fanout,
      )
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
    for (const user of this.users) if (user.slot === slot.index && user.process === slot.process && user.socket.open) this.closeUser(user, 1006, 'node died')
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

  private workload(now: number): void {
    const r = this.rng
    const live = this.liveSlots()
    if (live.length > 0 && r.chance(this.rates.connect) && this.openUsers().length < USERS_PER_NODE_MAX * this.slots.length) {
      const slot = r.pick(live)
      // Mostly fresh names; sometimes the name of someone online elsewhere (a race for the name),
      // sometimes a returning user.
      const online = this.openUsers()
      const name = online.length > 0 && r.chance(0.1) ? r.pick(online).username : r.chance(0.3) && this.users.length > 0 ? r.pick(this.users).username : `u${this.nextUser}`
      this.connect(slot, name)
    }
    const open = this.openUsers()
    if (open.length > 0 && r.chance(this.rates.chat * Math.min(10, open.length))) this.chat(r.pick(open), now)
    if (open.length > 0 && r.chance(this.rates.disconnect * open.length)) {
      const user = r.pick(open)
      this.log(`${user.id} (${user.username}) disconnects from n${user.slot}`)
      user.socket.close(1000, 'bye')
    }
  }

  private connect(slot: Slot, username: string): void {
    const id = `s${this.nextUser++}`
    const node = slot.node!
    const process = slot.process
    const socket = new SimSocket(slot.fanout, () => {
      // Elysia runs the close handler after the socket closed; only the process that owns it.
      this.clock.after(0, () => {
        if (slot.node === node) node.gateway.close(id)
      })
      user.closedAt = this.clock.elapsed
    })
    const user: SimUser = { id, username, slot: slot.index, process, socket, openedAt: this.clock.elapsed, order: this.order++, closedAt: null }
    this.users.push(user)
    node.gateway.open(id, socket, { ok: true, value: username })
    this.log(`${id} connects to n${slot.index} as ${username}${socket.open ? '' : `: refused ${socket.closeCode} ${socket.closeReason}`}`)
  }

  private closeUser(user: SimUser, code: number, reason: string): void {
    user.socket.kill(code, reason)
    user.closedAt = this.clock.elapsed
  }

  private chat(user: SimUser, now: number): void {
    const slot = this.slots[user.slot]!
    if (!slot.node || slot.process !== user.process) return
    const text = `c${this.nextChat++}`
    this.log(`${user.id} (${user.username}) at n${user.slot} says ${text}`)
    const frames = user.socket.frames.length
    // Elysia hands the handler parsed JSON for JSON text, a string otherwise.
    slot.node.gateway.message(user.id, this.rng.chance(0.5) ? { type: 'chat', message: text } : text)
    // A refusal (an error frame, e.g. over the rate limit) is an answer, not a sent message.
    const refused = user.socket.frames.slice(frames).some((f) => f.startsWith('{"type":"error"'))
    if (!refused) this.sent.push({ text, username: user.username, userId: user.id, slot: user.slot, process: user.process, at: now, order: this.order++ })
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

  private check(judgedFrom: number): void {
    const live = this.liveSlots()
    const problem =
      checkPresence(live.map((s) => ({ address: s.address, room: s.node!.room })), this.users, this.slots.map((s) => s.address)) ??
      checkDelivery(this.users, this.sent, {
        judgedFrom,
        strict: this.options.strictDelivery ?? false,
        processAlive: (slot, process) => this.slots[slot]!.process === process && this.slots[slot]!.node !== null,
        onDelivery: () => this.stats.deliveries++,
      })
    if (problem) this.fail(problem.check, problem.detail)
  }

  private fail(invariant: string, detail: string): never {
    this.log(`FAILED ${invariant}: ${detail}`)
    throw new SimulationFailure(this.seed, invariant, detail, this.clock.elapsed, wholeReplayCommand(this.seed, this.options))
  }

  private log(line: string): void {
    this.options.trace?.(`t=${String(this.clock.elapsed).padStart(6)} ${line}`)
  }
}

export const wholeReplayCommand = (seed: number, options: WholeOptions = {}) =>
  `bun run sim --whole --seed ${seed}${options.profile === 'hostile' ? ' --hostile' : ''}${options.strictDelivery ? ' --strict' : ''} --verbose`

const pct = (x: number) => `${(x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 0)}%`

// The in-memory twin of the TCP transport: nodes in one process exchange real encoded frames
// over simulated connections, on whatever clock they are given (the simulator's virtual one).
// It keeps the TCP transport's contract (transport.ts): one outbound connection per peer, FIFO,
// a hello first, frames queued while a link is down and sent after the redial, frames in flight
// lost when a connection dies, onConnected on every (re)connect, the validator applied to every
// frame. Faults are injected through the network: per-link delay, connection resets,
// partitions (a cut link loses what crosses it and resets the connection, as a TCP connection
// does once its retransmissions give up), and, beyond what TCP can do, lost, duplicated and
// reordered frames, to test what sits above a transport that misbehaves.
import type { Clock } from '../io'
import { encodeFrame, FrameDecoder } from './codec'
import { emptyStats, type Peer, type Transport, type TransportFactory, type TransportOptions, type TransportStats } from './transport'
import type { Typed } from './validate'

export interface NetworkFaults {
  /** Delay of each frame, uniform in [min, max] ms; FIFO per connection unless `reorder` says otherwise. */
  delayMsMin: number
  delayMsMax: number
  /** Probability that a frame is silently lost (the connection stays up: no TCP does this). */
  drop: number
  /** Probability that a frame is delivered twice. */
  duplicate: number
  /** Probability that a frame ignores FIFO and may overtake earlier ones. */
  reorder: number
}

export const NO_FAULTS: NetworkFaults = { delayMsMin: 1, delayMsMax: 1, drop: 0, duplicate: 0, reorder: 0 }

const MAX_QUEUE_BYTES = 8 * 1024 * 1024
const MAX_FRAME_BYTES = 1024 * 1024
const REDIAL_MS_MIN = 50
// As the TCP transport: a peer that is down or cut off is retried at least this often, so a heal is noticed at once.
const REDIAL_MS_MAX = 250

export interface NetworkCounters {
  sent: number
  delivered: number
  dropped: number
  duplicated: number
  resets: number
}

/** One direction of one connection: the sender's outbound link to a peer. */
class Link {
  connected = false
  /** The endpoint this connection reached: a new incarnation at the same address is another connection. */
  peer: MemoryEndpoint | null = null
  /** Bumped on every reset: frames of an older epoch are lost in flight. */
  epoch = 0
  dialing = false
  failedDials = 0
  backoff = REDIAL_MS_MIN
  /** Frames sent while not connected, delivered after the next connect, in order. */
  backlog: Uint8Array[] = []
  backlogBytes = 0
  /** Delivery time of the last frame sent, so the next one does not overtake it (FIFO). */
  lastDue = 0
  removed = false
  /** This link's share of the sender's counters. */
  readonly counts = { framesOut: 0, bytesOut: 0, dropped: 0, connects: 0 }

  constructor(
    readonly from: MemoryEndpoint,
    readonly to: string,
  ) {}
}

class MemoryEndpoint {
  readonly stats: TransportStats = emptyStats()
  readonly links = new Map<string, Link>()
  /** Frames received per sending address. */
  readonly framesInFrom = new Map<string, number>()
  /** Who this endpoint is to its peers: the in-memory stand-in for an authenticated handshake. */
  readonly peer: Peer
  closed = false

  constructor(
    readonly network: MemoryNetwork,
    readonly options: TransportOptions<Typed>,
  ) {
    this.peer = { address: options.address, incarnation: options.incarnation }
  }

  send(addresses: string[], message: Typed): number {
    if (this.closed || addresses.length === 0) return 0
    let frame: Uint8Array
    try {
      frame = encodeFrame(message)
    } catch (error) {
      this.options.log(`cannot encode ${message?.type}: ${(error as Error).message}`)
      return 0
    }
    if (frame.length - 4 > MAX_FRAME_BYTES) {
      this.stats.dropped += addresses.length
      return 0
    }
    let accepted = 0
    for (const address of addresses) {
      let link = this.links.get(address)
      if (!link) {
        link = new Link(this, address)
        this.links.set(address, link)
        this.network.dial(link)
      }
      if (link.connected) {
        this.network.transmit(link, frame)
        accepted++
      } else if (link.backlogBytes + frame.length <= MAX_QUEUE_BYTES) {
        link.backlog.push(frame)
        link.backlogBytes += frame.length
        accepted++
      } else {
        this.stats.dropped++
        link.counts.dropped++
      }
    }
    return accepted
  }

  disconnect(address: string): void {
    const link = this.links.get(address)
    if (!link) return
    link.removed = true
    link.connected = false
    link.epoch++
    this.links.delete(address)
  }
}

export class MemoryNetwork {
  faults: NetworkFaults = { ...NO_FAULTS }
  readonly counters: NetworkCounters = { sent: 0, delivered: 0, dropped: 0, duplicated: 0, resets: 0 }
  /** Called with every frame as it is sent (the simulator watches join requests). */
  onSend: ((from: string, to: string, frame: Uint8Array, decode: () => unknown) => void) | null = null
  private readonly listening = new Map<string, MemoryEndpoint>()
  private readonly cuts = new Set<string>()
  private readonly decoder = new FrameDecoder(MAX_FRAME_BYTES)

  constructor(
    private readonly clock: Clock,
    private readonly random: () => number,
  ) {}

  /** A transport factory whose transports live on this network. */
  readonly factory: TransportFactory = async <M extends Typed>(options: TransportOptions<M>): Promise<Transport<M>> => {
    if (this.listening.has(options.address)) throw new Error(`address in use: ${options.address}`)
    const endpoint = new MemoryEndpoint(this, options as TransportOptions<Typed>)
    this.listening.set(options.address, endpoint)
    return {
      stats: endpoint.stats,
      send: (addresses, message) => endpoint.send(addresses, message),
      disconnect: (address) => endpoint.disconnect(address),
      queuedBytes: () => [...endpoint.links.values()].reduce((sum, link) => sum + link.backlogBytes, 0),
      peerStats: () => {
        const addresses = new Set([...endpoint.links.keys(), ...endpoint.framesInFrom.keys()])
        return [...addresses].map((address) => {
          const link = endpoint.links.get(address)
          return { address, framesIn: endpoint.framesInFrom.get(address) ?? 0, queuedBytes: link?.backlogBytes ?? 0, ...(link?.counts ?? { framesOut: 0, bytesOut: 0, dropped: 0, connects: 0 }) }
        })
      },
      close: async () => this.close(endpoint),
    }
  }

  /** Cuts the link from `a` to `b` (and back, unless `oneWay`). Connections across it die when they next carry a frame. */
  cut(a: string, b: string, oneWay = false): void {
    this.cuts.add(`${a}>${b}`)
    if (!oneWay) this.cuts.add(`${b}>${a}`)
  }

  heal(a: string, b: string): void {
    this.cuts.delete(`${a}>${b}`)
    this.cuts.delete(`${b}>${a}`)
  }

  healAll(): void {
    this.cuts.clear()
  }

  isCut(from: string, to: string): boolean {
    return this.cuts.has(`${from}>${to}`)
  }

  /** Kills the connection from `from` to `to`, as a reset or a crashed peer would: frames in flight are lost, the sender redials. */
  reset(from: string, to: string): void {
    const link = this.listening.get(from)?.links.get(to)
    if (link?.connected) this.drop(link, 'connection reset')
  }

  /** Every outbound link of every endpoint, as `from>to`: what `reset` can aim at. */
  connections(): Array<[string, string]> {
    const out: Array<[string, string]> = []
    for (const [address, endpoint] of this.listening) for (const [to, link] of endpoint.links) if (link.connected) out.push([address, to])
    return out
  }

  dial(link: Link): void {
    if (link.dialing || link.removed || link.from.closed) return
    link.dialing = true
    const epoch = link.epoch
    // A TCP connect needs both directions; the answer takes one delay.
    this.clock.after(this.delay(), () => {
      link.dialing = false
      if (link.removed || link.from.closed || link.epoch !== epoch) return
      const target = this.listening.get(link.to)
      if (!target || this.isCut(link.from.options.address, link.to) || this.isCut(link.to, link.from.options.address)) {
        // One log line for a streak of failed dials, as the TCP transport does.
        if (link.failedDials++ === 0) link.from.options.log(`cannot connect to ${link.to}: unreachable; redialling`)
        link.backoff = Math.min(REDIAL_MS_MAX, link.backoff * 2)
        // Whole milliseconds: due times computed from different moments must compare exactly.
        this.clock.after(Math.floor(link.backoff / 2 + (this.random() * link.backoff) / 2), () => this.dial(link))
        return
      }
      this.connect(link, target)
    })
  }

  private connect(link: Link, peer: MemoryEndpoint): void {
    link.connected = true
    link.peer = peer
    link.failedDials = 0
    link.backoff = REDIAL_MS_MIN
    link.from.stats.connects++
    link.counts.connects++
    link.epoch++
    const endpoint = link.from
    // Hello first, then whatever onConnected sends, then the backlog from while the link was down.
    this.transmit(link, encodeFrame({ type: 'hello', ...endpoint.peer }), true)
    const backlog = link.backlog
    link.backlog = []
    link.backlogBytes = 0
    try {
      endpoint.options.handlers.onConnected?.(link.to)
    } catch (error) {
      endpoint.options.log(`onConnected(${link.to}) threw: ${(error as Error).message}`)
    }
    if (!link.connected) return
    for (const frame of backlog) this.transmit(link, frame)
  }

  transmit(link: Link, frame: Uint8Array, hello = false): void {
    const from = link.from
    from.stats.framesOut++
    from.stats.bytesOut += frame.length
    link.counts.framesOut++
    link.counts.bytesOut += frame.length
    this.counters.sent++
    if (this.onSend && !hello) this.onSend(from.options.address, link.to, frame, () => this.decode(frame))
    const f = this.faults
    if (!hello && this.random() < f.drop) {
      this.counters.dropped++
      return
    }
    const copies = !hello && this.random() < f.duplicate ? 2 : 1
    if (copies === 2) this.counters.duplicated++
    for (let i = 0; i < copies; i++) {
      let due = this.clock.now() + this.delay()
      if (hello || this.random() >= f.reorder) due = Math.max(due, link.lastDue)
      link.lastDue = Math.max(link.lastDue, due)
      const epoch = link.epoch
      this.clock.after(due - this.clock.now(), () => this.arrive(link, epoch, frame, hello))
    }
  }

  private arrive(link: Link, epoch: number, frame: Uint8Array, hello: boolean): void {
    if (link.epoch !== epoch || !link.connected) return // the connection died with this frame in flight
    const fromAddress = link.from.options.address
    const target = link.peer
    if (!target || target.closed) return this.drop(link, 'peer gone')
    if (this.isCut(fromAddress, link.to)) return this.drop(link, 'link cut')
    target.stats.framesIn++
    target.stats.bytesIn += frame.length
    target.framesInFrom.set(fromAddress, (target.framesInFrom.get(fromAddress) ?? 0) + 1)
    if (hello) return
    const value = this.decode(frame)
    const result = target.options.validate(value)
    if (!result.ok) {
      target.stats.invalid++
      target.options.log(`closed connection from ${fromAddress}: ${result.error}`)
      return this.drop(link, 'refused by peer')
    }
    this.counters.delivered++
    try {
      const verdict = target.options.handlers.onMessage(link.from.peer, result.value)
      if (!verdict.ok) {
        target.stats.invalid++
        target.options.log(`closed connection from ${fromAddress}: ${verdict.error}`)
        this.drop(link, 'refused by peer')
      }
    } catch (error) {
      target.options.log(`onMessage threw on ${result.value.type} from ${fromAddress}: ${(error as Error).message}`)
    }
  }

  /** The connection died: what was in flight is lost, and the sender redials. */
  private drop(link: Link, reason: string): void {
    link.connected = false
    link.epoch++
    this.counters.resets++
    link.from.options.log(`lost connection to ${link.to}: ${reason}; redialling`)
    this.dial(link)
  }

  private close(endpoint: MemoryEndpoint): void {
    if (endpoint.closed) return
    endpoint.closed = true
    if (this.listening.get(endpoint.options.address) === endpoint) this.listening.delete(endpoint.options.address)
    for (const link of endpoint.links.values()) {
      link.removed = true
      link.connected = false
      link.epoch++
    }
    endpoint.links.clear()
    // Peers connected to it see their connections close at once, as a TCP FIN or RST tells them.
    for (const other of this.listening.values()) {
      for (const link of other.links.values()) if (link.connected && link.peer === endpoint) this.drop(link, 'closed by peer')
    }
  }

  private delay(): number {
    const { delayMsMin, delayMsMax } = this.faults
    return delayMsMin + Math.floor(this.random() * (delayMsMax - delayMsMin + 1))
  }

  private decode(frame: Uint8Array): unknown {
    return this.decoder.push(frame)[0]
  }
}

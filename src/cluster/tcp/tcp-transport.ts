// The TCP transport. As in Pekko Artery TCP, a node sends only on its own outbound connection to
// each peer and receives only on inbound ones: per-sender order is FIFO and two nodes dialling
// each other at once need no tie-break. Every connection is authenticated before anything else
// crosses it (../handshake.ts); the listener answers only during that handshake. The parts:
// inbound.ts (listen, handshake, validate), outbound-link.ts (dial, handshake, queue, redial),
// send-queue.ts (batched writes), tls.ts (optional mutual TLS).
import { randomBytes } from 'node:crypto'
import type { Socket } from 'bun'
import { parseAddress } from '../address'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame } from '../codec'
import { NONCE_BYTES, type HandshakeSelf } from '../handshake'
import { emptyStats, type PeerStats, type Transport, type TransportFactory, type TransportOptions } from '../transport'
import type { Typed } from '../validate'
import { describe } from './describe'
import { DEFAULT_LINK_TIMEOUT_MS } from './liveness'
import { HANDSHAKE_TIMEOUT_MS, InboundListener } from './inbound'
import { OutboundLink, type LinkContext, type OutboundData } from './outbound-link'
import type { TlsFiles } from './tls'

export const DEFAULT_MAX_QUEUE_BYTES = 8 * 1024 * 1024
const CLOSE_WAIT_MS = 250

export interface TcpOptions {
  maxFrameBytes?: number
  /** Cap on the unsent bytes queued for one peer; past it, new messages to that peer are dropped. */
  maxQueueBytes?: number
  /** Cluster secrets, current first (then the previous one during a rotation); none: hello-only handshake. */
  secrets?: readonly string[]
  /** Mutual TLS with every peer, verified against `ca`. */
  tls?: TlsFiles | null
  /** How long a new connection may take to authenticate (tests shorten it). */
  handshakeTimeoutMs?: number
  /** A link silent this long is dropped and redialled (liveness.ts); default DEFAULT_LINK_TIMEOUT_MS. */
  linkTimeoutMs?: number
}

/** A transport factory for real nodes: listens on the host and port of the node's own address. */
export const tcpTransport =
  (tcp: TcpOptions = {}): TransportFactory =>
  (options) =>
    createTcpTransport(options, tcp)

export async function createTcpTransport<M extends Typed>(options: TransportOptions<M>, tcp: TcpOptions = {}): Promise<Transport<M>> {
  return new TcpTransport(options, tcp)
}

class TcpTransport<M extends Typed> implements Transport<M> {
  readonly stats = emptyStats()
  private readonly links = new Map<string, OutboundLink>()
  private readonly pendingDials = new Set<Promise<unknown>>()
  private readonly inbound: InboundListener<M>
  private readonly context: LinkContext
  private readonly maxFrameBytes: number
  private readonly tls: TlsFiles | null
  private readonly urgent: (message: unknown) => boolean
  private streams = 0
  private closed = false
  private closing: Promise<void> | null = null

  constructor(
    private readonly options: TransportOptions<M>,
    tcp: TcpOptions,
  ) {
    const self = parseAddress(options.address)
    if (!self) throw new Error(`not a node address: ${JSON.stringify(options.address)}`)
    this.maxFrameBytes = tcp.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
    this.tls = tcp.tls ?? null
    this.urgent = options.urgent ?? (() => false)
    const linkTimeoutMs = tcp.linkTimeoutMs ?? DEFAULT_LINK_TIMEOUT_MS
    const handshakeTimeoutMs = tcp.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS
    const identity: HandshakeSelf = { systemName: options.systemName, address: options.address, incarnation: options.incarnation, secrets: tcp.secrets ?? [] }
    const nonce = () => new Uint8Array(randomBytes(NONCE_BYTES))
    this.inbound = new InboundListener<M>({
      host: self.host,
      port: self.port,
      self: identity,
      tls: this.tls,
      nonce,
      maxFrameBytes: this.maxFrameBytes,
      handshakeTimeoutMs,
      linkTimeoutMs,
      stats: this.stats,
      validate: options.validate,
      urgent: this.urgent,
      onMessage: (peer, message) => options.handlers.onMessage(peer, message),
      log: options.log,
    })
    this.context = {
      stats: this.stats,
      self: identity,
      nonce,
      maxQueueBytes: tcp.maxQueueBytes ?? DEFAULT_MAX_QUEUE_BYTES,
      handshakeTimeoutMs,
      linkTimeoutMs,
      onConnected: (address) => options.handlers.onConnected?.(address),
      log: options.log,
      dial: (link, attempt) => this.dial(link, attempt),
    }
  }

  send(addresses: string[], message: M): number {
    if (this.closed || addresses.length === 0) return 0
    let frame: Uint8Array
    try {
      frame = encodeFrame(message)
    } catch (error) {
      this.options.log(`cannot encode ${message?.type}: ${describe(error)}`)
      return 0
    }
    if (frame.length - 4 > this.maxFrameBytes) {
      this.stats.dropped += addresses.length
      this.options.log(`dropping ${message.type} of ${frame.length - 4} bytes: larger than the frame limit of ${this.maxFrameBytes}`)
      return 0
    }
    let accepted = 0
    const ahead = this.urgent(message)
    for (const address of addresses) if (this.linkTo(address)?.enqueue(frame, ahead)) accepted++
    return accepted
  }

  queuedBytes(): number {
    let bytes = 0
    for (const link of this.links.values()) bytes += link.queuedBytes
    return bytes
  }

  peerStats(): PeerStats[] {
    const framesIn = this.inbound.framesInByPeer()
    const addresses = new Set([...this.links.keys(), ...framesIn.keys()])
    return [...addresses].map((address) => {
      const link = this.links.get(address)
      return { address, framesIn: framesIn.get(address) ?? 0, queuedBytes: link?.queuedBytes ?? 0, ...(link?.peer ?? { framesOut: 0, bytesOut: 0, dropped: 0, connects: 0 }) }
    })
  }

  disconnect(address: string): void {
    this.links.get(address)?.remove()
    this.links.delete(address)
  }

  close(): Promise<void> {
    return (this.closing ??= this.shutDown())
  }

  private async shutDown(): Promise<void> {
    this.closed = true
    this.inbound.close()
    // Give connected links a moment to write what is queued (a shutdown's last messages).
    const deadline = Date.now() + CLOSE_WAIT_MS
    while ([...this.links.values()].some((l) => l.sending) && Date.now() < deadline) await Bun.sleep(5)
    for (const link of this.links.values()) link.remove()
    this.links.clear()
    // A dial in flight is terminated as soon as it opens. Loopback dials settle at once, but one
    // to a host that drops SYNs could take minutes, so do not wait for it forever.
    if (this.pendingDials.size > 0) await settledWithin(Promise.all(this.pendingDials), CLOSE_WAIT_MS)
  }

  private linkTo(address: string): OutboundLink | null {
    let link = this.links.get(address)
    if (link) return link
    const target = parseAddress(address)
    if (!target) {
      this.options.log(`cannot send to ${JSON.stringify(address)}: not a node address`)
      return null
    }
    link = new OutboundLink(address, target, this.context, ++this.streams)
    this.links.set(address, link)
    return link
  }

  private dial(link: OutboundLink, attempt: number): void {
    const { host, port } = link.target
    const tls = this.tls
    let dialing: Promise<unknown>
    try {
      dialing = Bun.connect<OutboundData>({
        hostname: host,
        port,
        data: { link, attempt },
        tls: tls ? { cert: tls.cert, key: tls.key, ca: tls.ca, rejectUnauthorized: true } : undefined,
        socket: this.outboundHandlers,
      })
    } catch (error) {
      dialing = Promise.reject(error)
    }
    // A failed dial both rejects and calls connectError; the link ignores the second report.
    const settled = dialing.then(
      () => {},
      (error) => link.lost(attempt, null, describe(error)),
    )
    this.pendingDials.add(settled)
    void settled.finally(() => this.pendingDials.delete(settled))
  }

  private readonly outboundHandlers = {
    open: (socket: Socket<OutboundData>) => socket.data.link.opened(socket, this.tls !== null),
    handshake: (socket: Socket<OutboundData>, success: boolean, authorizationError: Error | null) =>
      socket.data.link.tlsDone(socket, success, success ? (authorizationError?.message ?? null) : (authorizationError?.message ?? 'handshake failed')),
    drain: (socket: Socket<OutboundData>) => socket.data.link.drained(socket),
    data: (socket: Socket<OutboundData>, chunk: Uint8Array) => socket.data.link.received(socket, chunk),
    close: (socket: Socket<OutboundData>, error?: Error) => socket.data.link.lost(socket.data.attempt, socket, error ? describe(error) : 'closed by peer'),
    connectError: (socket: Socket<OutboundData>, error: Error) => socket.data.link.lost(socket.data.attempt, null, describe(error)),
    error: (socket: Socket<OutboundData>, error: Error) => this.options.log(`outbound connection to ${socket.data.link.address}: ${describe(error)}`),
  }
}

async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))])
  clearTimeout(timer)
}

// The TCP transport. As in Pekko Artery TCP, a node sends only on its own outbound connection to
// each peer and receives only on inbound ones: per-sender order is FIFO and two nodes dialling
// each other at once need no tie-break. The parts: inbound.ts (listen, hello, validate),
// outbound-link.ts (dial, queue, redial), send-queue.ts (batched writes).
import type { Socket, SocketHandler } from 'bun'
import { parseAddress } from '../address'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame } from '../codec'
import { PROTOCOL_VERSION, type Hello } from '../messages'
import { emptyStats, type Transport, type TransportFactory, type TransportOptions } from '../transport'
import type { Typed } from '../validate'
import { describe } from './describe'
import { InboundListener } from './inbound'
import { OutboundLink, type LinkContext, type OutboundData } from './outbound-link'

export const DEFAULT_MAX_QUEUE_BYTES = 8 * 1024 * 1024
const CLOSE_WAIT_MS = 250

export interface TcpLimits {
  maxFrameBytes?: number
  /** Cap on the unsent bytes queued for one peer; past it, new messages to that peer are dropped. */
  maxQueueBytes?: number
}

/** A transport factory for real nodes: listens on the host and port of the node's own address. */
export const tcpTransport =
  (limits: TcpLimits = {}): TransportFactory =>
  async (options) =>
    new TcpTransport(options, limits)

export async function createTcpTransport<M extends Typed>(options: TransportOptions<M>, limits: TcpLimits = {}): Promise<Transport<M>> {
  return new TcpTransport(options, limits)
}

class TcpTransport<M extends Typed> implements Transport<M> {
  readonly stats = emptyStats()
  private readonly links = new Map<string, OutboundLink>()
  private readonly pendingDials = new Set<Promise<unknown>>()
  private readonly inbound: InboundListener<M>
  private readonly context: LinkContext
  private readonly maxFrameBytes: number
  private closed = false
  private closing: Promise<void> | null = null

  constructor(
    private readonly options: TransportOptions<M>,
    limits: TcpLimits,
  ) {
    const self = parseAddress(options.address)
    if (!self) throw new Error(`not a node address: ${JSON.stringify(options.address)}`)
    this.maxFrameBytes = limits.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
    const hello: Hello = { type: 'hello', version: PROTOCOL_VERSION, systemName: options.systemName, address: options.address, incarnation: options.incarnation }
    this.inbound = new InboundListener({
      host: self.host,
      port: self.port,
      systemName: options.systemName,
      maxFrameBytes: this.maxFrameBytes,
      stats: this.stats,
      validate: options.validate,
      onMessage: (peer, message) => options.handlers.onMessage(peer, message),
      log: options.log,
    })
    this.context = {
      stats: this.stats,
      helloFrame: encodeFrame(hello),
      maxQueueBytes: limits.maxQueueBytes ?? DEFAULT_MAX_QUEUE_BYTES,
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
    for (const address of addresses) if (this.linkTo(address)?.enqueue(frame)) accepted++
    return accepted
  }

  queuedBytes(): number {
    let bytes = 0
    for (const link of this.links.values()) bytes += link.queuedBytes
    return bytes
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
    link = new OutboundLink(address, target, this.context)
    this.links.set(address, link)
    return link
  }

  private dial(link: OutboundLink, attempt: number): void {
    const { host, port } = link.target
    let dialing: Promise<unknown>
    try {
      dialing = Bun.connect<OutboundData>({ hostname: host, port, data: { link, attempt }, socket: this.outboundHandlers })
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

  private readonly outboundHandlers: SocketHandler<OutboundData> = {
    open: (socket) => socket.data.link.opened(socket),
    drain: (socket) => socket.data.link.drained(socket),
    data() {}, // peers never answer on our outbound connection
    close: (socket: Socket<OutboundData>, error?: Error) => socket.data.link.lost(socket.data.attempt, socket, error ? describe(error) : 'closed by peer'),
    connectError: (socket, error) => socket.data.link.lost(socket.data.attempt, null, describe(error)),
    error: (socket, error) => this.options.log(`outbound connection to ${socket.data.link.address}: ${describe(error)}`),
  }
}

async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))])
  clearTimeout(timer)
}

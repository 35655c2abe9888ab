// The TCP transport. As in Pekko Artery TCP, a node sends only on its own outbound connection to
// each peer and receives only on inbound ones: per-sender order is FIFO and two nodes dialling
// each other at once need no tie-break.
import type { Socket, TCPSocketListener } from 'bun'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder, FrameError } from './codec'
import { PROTOCOL_VERSION, validateWireMessage, type Hello, type PeerMessage } from './messages'
import { parseAddress, type NodeAddress, type Transport, type TransportHandlers, type TransportStats } from './transport'

export const DEFAULT_MAX_QUEUE_BYTES = 8 * 1024 * 1024

export interface TcpTransportOptions {
  host: string
  port: number
  systemName: string
  /** This node's address as peers should dial it, e.g. `bun://WebSocketClusterSystem@127.0.0.1:2551`. */
  address: string
  incarnation: string
  maxFrameBytes?: number
  /** Cap on the unsent bytes queued for one peer; past it, new messages to that peer are dropped. */
  maxQueueBytes?: number
  log: (line: string) => void
  handlers: TransportHandlers
}

const BACKOFF_MIN_MS = 50
const BACKOFF_MAX_MS = 2000
/** A connection that lived this long was healthy: the next redial starts from the minimum again. */
const STABLE_CONNECTION_MS = 2000
/** Small frames are copied into one write of up to this size: one syscall instead of one per frame. */
const BATCH_BYTES = 64 * 1024
const DROP_LOG_INTERVAL_MS = 1000
const CLOSE_WAIT_MS = 250

// Bun copies what `write` accepts before returning, so one scratch buffer serves every batch.
const scratch = new Uint8Array(BATCH_BYTES)

/** Frames waiting for one outbound socket, oldest first. */
class SendQueue {
  private frames: Uint8Array[] = []
  private head = 0
  /** Bytes of the head frame already written to the current socket. */
  private offset = 0
  /** Unwritten bytes. */
  bytes = 0

  get empty() {
    return this.head === this.frames.length
  }

  push(frame: Uint8Array) {
    this.frames.push(frame)
    this.bytes += frame.length
  }

  /** Moves `other`'s frames behind ours. A partly written frame starts over: the new connection never saw its start. */
  append(other: SendQueue) {
    for (let i = other.head; i < other.frames.length; i++) this.push(other.frames[i]!)
    other.clear()
  }

  clear() {
    this.frames = []
    this.head = this.offset = this.bytes = 0
  }

  /** Writes until the socket stops taking bytes; returns how many frames were completed and bytes written. */
  writeTo(socket: Socket<unknown>): { frames: number; bytes: number } {
    let frames = 0
    let bytes = 0
    while (!this.empty) {
      const chunk = this.nextChunk()
      const written = socket.write(chunk)
      if (written <= 0) break
      bytes += written
      frames += this.advance(written)
      if (written < chunk.length) break
    }
    return { frames, bytes }
  }

  private nextChunk(): Uint8Array {
    const first = this.frames[this.head]!
    let size = first.length - this.offset
    let end = this.head + 1
    while (end < this.frames.length && size + this.frames[end]!.length <= BATCH_BYTES) size += this.frames[end++]!.length
    if (end === this.head + 1) return first.subarray(this.offset)
    scratch.set(first.subarray(this.offset), 0)
    for (let i = this.head + 1, at = first.length - this.offset; i < end; at += this.frames[i++]!.length) {
      scratch.set(this.frames[i]!, at)
    }
    return scratch.subarray(0, size)
  }

  private advance(written: number): number {
    this.bytes -= written
    let completed = 0
    let left = written
    while (left > 0) {
      const remaining = this.frames[this.head]!.length - this.offset
      if (left < remaining) {
        this.offset += left
        break
      }
      left -= remaining
      this.frames[this.head++] = undefined as never // let the sent frame be collected now
      this.offset = 0
      completed++
    }
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head)
      this.head = 0
    }
    return completed
  }
}

type OutboundData = { link: OutboundLink; attempt: number }
type InboundData = { remote: string; decoder: FrameDecoder; peer: Hello | null; closed: boolean }

/** What a link needs from its transport. */
interface LinkContext {
  readonly stats: TransportStats
  readonly helloFrame: Uint8Array
  readonly maxQueueBytes: number
  readonly handlers: TransportHandlers
  log(line: string): void
  dial(link: OutboundLink, attempt: number): void
}

class OutboundLink {
  private socket: Socket<OutboundData> | null = null
  private queue = new SendQueue()
  private attempt = 0
  private dialing = false
  private failedDials = 0
  private backoffStep = 0
  private connectedAt = 0
  private timer: ReturnType<typeof setTimeout> | null = null
  private flushScheduled = false
  private removed = false
  private droppedSinceLog = 0
  private lastDropLog = 0

  constructor(
    readonly address: string,
    readonly target: NodeAddress,
    private readonly context: LinkContext,
  ) {
    this.dial()
  }

  enqueue(frame: Uint8Array): boolean {
    if (this.queue.bytes + frame.length > this.context.maxQueueBytes) {
      this.context.stats.dropped++
      this.droppedSinceLog++
      const now = Date.now()
      if (now - this.lastDropLog >= DROP_LOG_INTERVAL_MS) {
        this.context.log(
          `dropping messages to ${this.address}: send queue full (${this.queue.bytes} bytes queued, cap ${this.context.maxQueueBytes}); ${this.droppedSinceLog} dropped since last report`,
        )
        this.lastDropLog = now
        this.droppedSinceLog = 0
      }
      return false
    }
    this.queue.push(frame)
    if (!this.socket) return true
    // Sends made in the same tick go out as one batched write, unless a batch is already full:
    // then the kernel buffer, not only our capped queue, should absorb a burst.
    if (this.queue.bytes >= BATCH_BYTES) this.flush()
    else if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(() => {
        this.flushScheduled = false
        this.flush()
      })
    }
    return true
  }

  flush() {
    if (!this.socket || this.queue.empty) return
    const { frames, bytes } = this.queue.writeTo(this.socket)
    this.context.stats.framesOut += frames
    this.context.stats.bytesOut += bytes
  }

  /** True while connected with frames still to write: worth a moment's wait before closing. */
  get sending(): boolean {
    return this.socket !== null && !this.queue.empty
  }

  /** Closes the connection and forgets the queue; the link is dead afterwards. */
  remove() {
    this.removed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    this.queue.clear()
    const socket = this.socket
    this.socket = null
    // end() lets the kernel deliver what it already took (a leaving node's last words).
    socket?.end()
  }

  private dial() {
    this.timer = null
    if (this.removed) return
    this.dialing = true
    this.context.dial(this, ++this.attempt)
  }

  opened(socket: Socket<OutboundData>) {
    if (this.removed || socket.data.attempt !== this.attempt) return void socket.terminate()
    this.dialing = false
    this.socket = socket
    this.connectedAt = Date.now()
    socket.setNoDelay(true)
    this.context.log(`connected to ${this.address}${this.failedDials ? ` after ${this.failedDials} failed attempts` : ''}`)
    this.failedDials = 0
    // Hello first, then whatever onConnected sends, then the backlog from while the link was down.
    const backlog = this.queue
    this.queue = new SendQueue()
    this.queue.push(this.context.helloFrame)
    try {
      this.context.handlers.onConnected?.(this.address)
    } catch (error) {
      this.context.log(`onConnected(${this.address}) threw: ${describe(error)}`)
    }
    if (this.removed || this.socket !== socket) return
    this.queue.append(backlog)
    this.flush()
  }

  drained(socket: Socket<OutboundData>) {
    if (socket === this.socket) this.flush()
  }

  /** A dial failed (Bun reports it twice: `connectError` and the rejected promise) or a connection closed. */
  lost(attempt: number, socket: Socket<OutboundData> | null, reason: string) {
    if (this.removed || attempt !== this.attempt) return
    if (socket ? socket !== this.socket : !this.dialing) return
    const wasConnected = socket !== null
    this.socket = null
    this.dialing = false
    if (wasConnected) {
      this.context.log(`lost connection to ${this.address}: ${reason}; redialling`)
      // A peer that accepts and then drops us at once must not be redialled in a tight loop.
      if (Date.now() - this.connectedAt >= STABLE_CONNECTION_MS) this.backoffStep = 0
    } else if (this.failedDials++ === 0) {
      this.context.log(`cannot connect to ${this.address}: ${reason}; redialling`)
    }
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.backoffStep++)
    this.timer = setTimeout(() => this.dial(), delay / 2 + (Math.random() * delay) / 2)
  }
}

export async function createTcpTransport(options: TcpTransportOptions): Promise<Transport> {
  const { systemName, log, handlers } = options
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
  const stats: TransportStats = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, dropped: 0, invalid: 0 }
  const hello: Hello = { type: 'hello', version: PROTOCOL_VERSION, systemName, address: options.address, incarnation: options.incarnation }
  const links = new Map<string, OutboundLink>()
  const inbound = new Set<Socket<InboundData>>()
  const pendingDials = new Set<Promise<unknown>>()
  let closed = false
  let closing: Promise<void> | null = null

  const refuse = (socket: Socket<InboundData>, reason: string): false => {
    stats.invalid++
    const { remote, peer } = socket.data
    log(peer ? `closed connection from ${peer.address} (${remote}): ${reason}` : `refused connection from ${remote}: ${reason}`)
    socket.data.closed = true
    socket.end()
    return false
  }

  /** Returns false once the connection has been closed. */
  const receive = (socket: Socket<InboundData>, value: unknown): boolean => {
    const state = socket.data
    if (!state.peer) {
      const hello = acceptHello(value, systemName)
      if (typeof hello === 'string') return refuse(socket, hello)
      state.peer = hello
      return true
    }
    const result = validateWireMessage(value)
    if (!result.ok) return refuse(socket, result.error)
    if (result.message.type === 'hello') return refuse(socket, 'second hello on one connection')
    try {
      handlers.onMessage(state.peer, result.message)
    } catch (error) {
      log(`onMessage threw on ${result.message.type} from ${state.peer.address}: ${describe(error)}`)
    }
    return true
  }

  let listener: TCPSocketListener<InboundData>
  try {
    listener = Bun.listen<InboundData>({
      hostname: options.host,
      port: options.port,
      socket: {
        open(socket) {
          socket.data = { remote: `${socket.remoteAddress}:${socket.remotePort}`, decoder: new FrameDecoder(maxFrameBytes), peer: null, closed: false }
          if (closed) return void socket.terminate()
          inbound.add(socket)
        },
        data(socket, chunk) {
          if (socket.data.closed) return
          stats.bytesIn += chunk.length
          let values: unknown[]
          try {
            values = socket.data.decoder.push(chunk)
          } catch (error) {
            refuse(socket, error instanceof FrameError ? `${error.code}: ${error.message}` : describe(error))
            return
          }
          for (const value of values) {
            stats.framesIn++
            let open: boolean
            try {
              open = receive(socket, value)
            } catch (error) {
              // validation is not meant to throw, but whatever a peer sends must not escape
              open = refuse(socket, `cannot check frame: ${describe(error)}`)
            }
            if (!open) return
          }
        },
        close(socket) {
          inbound.delete(socket)
        },
        error(socket, error) {
          log(`inbound connection from ${socket.data?.remote}: ${describe(error)}`)
        },
      },
    })
  } catch (error) {
    throw new Error(`cluster transport cannot listen on ${options.host}:${options.port}: ${describe(error)}`)
  }

  const outboundHandlers = {
    open: (socket: Socket<OutboundData>) => socket.data.link.opened(socket),
    drain: (socket: Socket<OutboundData>) => socket.data.link.drained(socket),
    data() {}, // peers never answer on our outbound connection
    close: (socket: Socket<OutboundData>, error?: Error) => socket.data.link.lost(socket.data.attempt, socket, error ? describe(error) : 'closed by peer'),
    connectError: (socket: Socket<OutboundData>, error: Error) => socket.data.link.lost(socket.data.attempt, null, describe(error)),
    error: (socket: Socket<OutboundData>, error: Error) => log(`outbound connection to ${socket.data.link.address}: ${describe(error)}`),
  }

  const context: LinkContext = {
    stats,
    helloFrame: encodeFrame(hello),
    maxQueueBytes: options.maxQueueBytes ?? DEFAULT_MAX_QUEUE_BYTES,
    handlers,
    log,
    dial(link, attempt) {
      const { host, port } = link.target
      let dialing: Promise<unknown>
      try {
        dialing = Bun.connect<OutboundData>({ hostname: host, port, data: { link, attempt }, socket: outboundHandlers })
      } catch (error) {
        dialing = Promise.reject(error)
      }
      const settled = dialing.then(
        () => {},
        (error) => link.lost(attempt, null, describe(error)),
      )
      pendingDials.add(settled)
      void settled.finally(() => pendingDials.delete(settled))
    },
  }

  const send = (addresses: string[], message: PeerMessage): number => {
    if (closed || addresses.length === 0) return 0
    let frame: Uint8Array
    try {
      frame = encodeFrame(message)
    } catch (error) {
      log(`cannot encode ${message?.type}: ${describe(error)}`)
      return 0
    }
    if (frame.length - 4 > maxFrameBytes) {
      stats.dropped += addresses.length
      log(`dropping ${message.type} of ${frame.length - 4} bytes: larger than the frame limit of ${maxFrameBytes}`)
      return 0
    }
    let accepted = 0
    for (const address of addresses) {
      let link = links.get(address)
      if (!link) {
        const target = parseAddress(address)
        if (!target) {
          log(`cannot send to ${JSON.stringify(address)}: not a node address`)
          continue
        }
        link = new OutboundLink(address, target, context)
        links.set(address, link)
      }
      if (link.enqueue(frame)) accepted++
    }
    return accepted
  }

  return {
    stats,
    send,
    disconnect(address) {
      links.get(address)?.remove()
      links.delete(address)
    },
    close() {
      closing ??= (async () => {
        closed = true
        listener.stop(true)
        for (const socket of inbound) socket.terminate()
        // Give connected links a moment to write what is queued (a shutdown's last messages).
        const deadline = Date.now() + CLOSE_WAIT_MS
        while ([...links.values()].some((l) => l.sending) && Date.now() < deadline) await Bun.sleep(5)
        for (const link of links.values()) link.remove()
        links.clear()
        // A dial in flight is terminated as soon as it opens. Loopback dials settle at once, but one
        // to a host that drops SYNs could take minutes, so do not wait for it forever.
        if (pendingDials.size > 0) await settledWithin(Promise.all(pendingDials), CLOSE_WAIT_MS)
      })()
      return closing
    },
  }
}

/** The hello that opens an inbound connection, or why the connection is refused. */
function acceptHello(value: unknown, systemName: string): Hello | string {
  const result = validateWireMessage(value)
  if (!result.ok) return `first frame is not a hello (${result.error})`
  const hello = result.message
  if (hello.type !== 'hello') return `first frame is ${hello.type}, not hello`
  if (hello.version !== PROTOCOL_VERSION) return `protocol version ${hello.version} != ${PROTOCOL_VERSION}`
  if (hello.systemName !== systemName) return `system name ${JSON.stringify(hello.systemName)} != ${JSON.stringify(systemName)}`
  return hello
}

async function settledWithin(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  await Promise.race([promise, new Promise((resolve) => (timer = setTimeout(resolve, ms)))])
  clearTimeout(timer)
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const code = (error as { code?: unknown }).code
  return typeof code === 'string' && !error.message.includes(code) ? `${error.message} (${code})` : error.message
}

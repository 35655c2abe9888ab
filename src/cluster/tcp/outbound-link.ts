// One outbound link: this node's own connection to one peer. It dials with backoff, runs the
// dialer's side of the handshake (handshake.ts) on each new connection, keeps a capped queue while
// the peer is away or not yet authenticated, and redials when the connection drops or the peer
// fails to prove itself.
import type { Log } from '../../io'
import type { Socket } from 'bun'
import type { NodeAddress } from '../address'
import { encodeFrame, FrameDecoder, FrameError } from '../codec'
import { dialerOnAck, dialerStart, type DialerState, type HandshakeSelf } from '../handshake'
import type { TransportStats } from '../transport'
import { describe } from './describe'
import { HANDSHAKE_MAX_FRAME_BYTES } from './inbound'
import { BATCH_BYTES, SendQueue } from './send-queue'

const BACKOFF_MIN_MS = 50
const BACKOFF_MAX_MS = 2000
/** A connection that lived this long was healthy: the next redial starts from the minimum again. */
const STABLE_CONNECTION_MS = 2000
const DROP_LOG_INTERVAL_MS = 1000

export type OutboundData = { link: OutboundLink; attempt: number }

/** What a link needs from its transport. */
export interface LinkContext {
  readonly stats: TransportStats
  readonly self: HandshakeSelf
  readonly maxQueueBytes: number
  readonly handshakeTimeoutMs: number
  nonce(): Uint8Array
  /** Called when a (re)connect completed; what it sends goes first on the new connection. */
  onConnected(address: string): void
  log: Log
  dial(link: OutboundLink, attempt: number): void
}

/** The dialer's side of a handshake in progress on the current connection. */
interface Handshaking {
  /** Null until the hello is sent (with TLS, until TLS's handshake is done). */
  state: DialerState | null
  decoder: FrameDecoder
  out: SendQueue
  timer: ReturnType<typeof setTimeout>
  /** We refused the peer (and counted it); the close that follows is not counted again. */
  refused: boolean
}

export class OutboundLink {
  /** The current connection, authenticated or not. */
  private socket: Socket<OutboundData> | null = null
  /** Set while the current connection is still in its handshake; nothing is sent but the handshake then. */
  private handshaking: Handshaking | null = null
  private failedHandshakes = 0
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
    if (!this.ready) return true
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

  /** Connected and authenticated: queued frames may go out. */
  private get ready(): boolean {
    return this.socket !== null && this.handshaking === null
  }

  flush() {
    if (!this.ready || this.queue.empty) return
    const { frames, bytes } = this.queue.writeTo(this.socket!)
    this.context.stats.framesOut += frames
    this.context.stats.bytesOut += bytes
  }

  get queuedBytes(): number {
    return this.queue.bytes
  }

  /** True while connected with frames still to write; worth a moment's wait before closing. */
  get sending(): boolean {
    return this.ready && !this.queue.empty
  }

  /** Closes the connection and forgets the queue; the link is dead afterwards. */
  remove() {
    this.removed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (this.handshaking) clearTimeout(this.handshaking.timer)
    this.handshaking = null
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

  /**
   * The connection is open. Our handshake starts now with a hello, or with TLS once TLS's own
   * handshake has succeeded (`tlsDone`): bytes written before that are lost. The timeout covers both.
   */
  opened(socket: Socket<OutboundData>, tls: boolean) {
    if (this.removed || socket.data.attempt !== this.attempt) return void socket.terminate()
    this.dialing = false
    this.socket = socket
    socket.setNoDelay(true)
    const timeout = this.context.handshakeTimeoutMs
    const timer = setTimeout(() => this.refuse(socket, `no hello_ack within ${timeout} ms`), timeout)
    this.handshaking = { state: null, decoder: new FrameDecoder(HANDSHAKE_MAX_FRAME_BYTES), out: new SendQueue(), timer, refused: false }
    if (!tls) this.sendHello(socket)
  }

  tlsDone(socket: Socket<OutboundData>, success: boolean, reason: string | null) {
    if (socket !== this.socket || !this.handshaking) return
    if (success && reason === null) this.sendHello(socket)
    else this.refuse(socket, `TLS: ${reason ?? 'handshake failed'}`)
  }

  private sendHello(socket: Socket<OutboundData>) {
    const handshaking = this.handshaking!
    handshaking.state = dialerStart(this.context.self, this.address, this.context.nonce())
    handshaking.out.push(encodeFrame(handshaking.state.hello))
    this.writeHandshake()
  }

  /** Bytes from the listener: during the handshake its hello_ack; it sends nothing after that. */
  received(socket: Socket<OutboundData>, chunk: Uint8Array) {
    const handshaking = this.handshaking
    if (socket !== this.socket) return
    this.context.stats.bytesIn += chunk.length
    if (!handshaking) return // a listener says nothing after its hello_ack; there is nothing to act on
    if (!handshaking.state) return this.refuse(socket, 'data before our hello')
    let values: unknown[]
    try {
      values = handshaking.decoder.push(chunk)
    } catch (error) {
      return this.refuse(socket, error instanceof FrameError ? `${error.code}: ${error.message}` : describe(error))
    }
    if (values.length === 0) return
    this.context.stats.framesIn += values.length
    if (values.length > 1) return this.refuse(socket, 'unexpected frames after hello_ack')
    const auth = dialerOnAck(handshaking.state, values[0])
    if (!auth.ok) return this.refuse(socket, auth.error)
    clearTimeout(handshaking.timer)
    this.handshaking = null
    this.authenticated(socket, encodeFrame(auth.value))
  }

  private authenticated(socket: Socket<OutboundData>, authFrame: Uint8Array) {
    this.connectedAt = Date.now()
    this.context.stats.connects++
    const after = [this.failedDials && `${this.failedDials} failed attempts`, this.failedHandshakes && `${this.failedHandshakes} failed handshakes`]
    this.context.log(`connected to ${this.address}${after.some(Boolean) ? ` after ${after.filter(Boolean).join(' and ')}` : ''}`)
    this.failedDials = 0
    this.failedHandshakes = 0
    // Our proof first, then whatever onConnected sends, then the backlog from while the link was down.
    const backlog = this.queue
    this.queue = new SendQueue()
    this.queue.push(authFrame)
    try {
      this.context.onConnected(this.address)
    } catch (error) {
      this.context.log(`onConnected(${this.address}) threw: ${describe(error)}`)
    }
    if (this.removed || this.socket !== socket) return
    this.queue.append(backlog)
    this.flush()
  }

  /** The peer failed the handshake: count it, say so once per streak, close; `lost` redials with backoff. */
  private refuse(socket: Socket<OutboundData>, reason: string) {
    if (socket !== this.socket || !this.handshaking || this.handshaking.refused) return
    clearTimeout(this.handshaking.timer)
    this.handshaking.refused = true
    this.context.stats.authFailures++
    if (this.failedHandshakes++ === 0) this.context.log(`refused ${this.address}: ${reason}; redialling with backoff`)
    socket.end()
  }

  private writeHandshake() {
    if (!this.socket || !this.handshaking) return
    const { frames, bytes } = this.handshaking.out.writeTo(this.socket)
    this.context.stats.framesOut += frames
    this.context.stats.bytesOut += bytes
  }

  drained(socket: Socket<OutboundData>) {
    if (socket !== this.socket) return
    if (this.handshaking) this.writeHandshake()
    else this.flush()
  }

  /** A dial failed (Bun reports it twice: `connectError` and the rejected promise) or a connection closed. */
  lost(attempt: number, socket: Socket<OutboundData> | null, reason: string) {
    if (this.removed || attempt !== this.attempt) return
    if (socket ? socket !== this.socket : !this.dialing) return
    const handshaking = this.handshaking
    const wasConnected = socket !== null && handshaking === null
    if (handshaking) clearTimeout(handshaking.timer)
    this.handshaking = null
    this.socket = null
    this.dialing = false
    if (socket && handshaking) {
      // Closed during the handshake: by us in `refuse` (counted there), or by a listener that
      // refused us (its log says why).
      if (!handshaking.refused) {
        this.context.stats.authFailures++
        if (this.failedHandshakes++ === 0) this.context.log(`${this.address} closed the connection during the handshake (${reason}); redialling with backoff`)
      }
    } else if (wasConnected) {
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

// One outbound link: this node's own connection to one peer. It dials, runs the dialer's side of
// the handshake (handshake.ts) on each new connection, keeps every frame until the peer
// acknowledges it (capped), and redials when the connection drops, goes silent for the link
// timeout (liveness.ts: pings and pongs), or the peer fails to prove itself. Frames not yet
// acknowledged go again on the next connection, where the peer skips what it already delivered,
// so a reconnect neither loses nor repeats a frame.
import type { Log } from '../../io'
import type { Socket } from 'bun'
import type { NodeAddress } from '../address'
import { encodeFrame, FrameDecoder, FrameError } from '../codec'
import { dialerOnAck, dialerStart, type DialerState, type HandshakeSelf } from '../handshake'
import type { TransportStats } from '../transport'
import type { HelloAck } from '../messages'
import { describe } from './describe'
import { HANDSHAKE_MAX_FRAME_BYTES } from './inbound'
import { asLinkControl, PING_FRAME, pingIntervalMs, resumeFrame } from './liveness'
import { BATCH_BYTES, SendQueue } from './send-queue'

const BACKOFF_MIN_MS = 50
/** A peer that refuses our handshake is retried this slowly at most (its log says why). */
const BACKOFF_MAX_MS = 2000
/** A peer that is down or cut off is retried at least this often, so a heal is noticed at once. */
const UNREACHABLE_RETRY_MAX_MS = 250
/** A connection that lived this long was healthy: the next redial starts from the minimum again. */
const STABLE_CONNECTION_MS = 2000
const DROP_LOG_INTERVAL_MS = 1000
/** Urgent frames held for a peer that is away; more would be stale by the time it is back. */
const URGENT_HELD_MAX = 1000
/**
 * A ping rides with frames written once half a ping interval has passed since the last one; the
 * timer sends one alone after a quarter more than an interval. The leader's heartbeats come once
 * an interval (by default), so a timer of exactly an interval would race them, and one that fired
 * first would keep its own phase for ever; a longer one falls behind them and gives way.
 */
const PING_RIDES_AFTER = 1 / 2
const PING_ALONE_AFTER = 5 / 4
/**
 * A link that carried nothing but pings for this many link timeouts is idle (between two
 * followers, say): it pings every IDLE_PINGS_EVERY link timeouts, under the listener's sweep
 * (three). Nothing waits on it, and its first frame takes a ping along and the usual pace back.
 */
const IDLE_AFTER = 3
const IDLE_PINGS_EVERY = 3 / 2

export type OutboundData = { link: OutboundLink; attempt: number }

/** What a link needs from its transport. */
export interface LinkContext {
  readonly stats: TransportStats
  readonly self: HandshakeSelf
  readonly maxQueueBytes: number
  readonly handshakeTimeoutMs: number
  /** A connection silent this long (no pong), or a dial not authenticated within it, is dropped and redialled. */
  readonly linkTimeoutMs: number
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
  /** Urgent (unnumbered) frames sent while no connection was up; they go first on the next. */
  private urgentHeld: Uint8Array[] = []
  /** What goes out on the current connection, in order. */
  private queue = new SendQueue()
  /** Every numbered frame not yet acknowledged, oldest first: retained[head] is number firstSeq. */
  private retained: Uint8Array[] = []
  private retainedHead = 0
  private firstSeq = 1
  private retainedBytes = 0
  /** How many retained frames (from the head) are already in `queue` or written on this connection. */
  private written = 0
  /**
   * Sends a ping when none went for a while (PING_ALONE_AFTER). A ping rides along with frames
   * written anyway (PING_RIDES_AFTER, see flush), and the timer starts over: a link that carries
   * heartbeats needs no wake-up of its own to ping, only an idle one does.
   */
  private pingTimer: ReturnType<typeof setTimeout> | null = null
  private pingedAt = 0
  /** When the oldest ping not yet answered went; null: every ping was answered. Silence counts from here. */
  private awaitingSince: number | null = null
  /** When a frame other than a ping was last queued: a link without one for a while is idle. */
  private framesAt = 0
  private dialTimer: ReturnType<typeof setTimeout> | null = null
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

  /** This link's share of the transport's counters (for per-peer metrics). */
  readonly peer = { framesOut: 0, bytesOut: 0, dropped: 0, connects: 0 }

  constructor(
    readonly address: string,
    readonly target: NodeAddress,
    private readonly context: LinkContext,
    /** Unique among this transport's links: a link made after a disconnect numbers its frames afresh. */
    private readonly stream: number,
  ) {
    this.dial()
  }

  /**
   * Queues a frame. An `urgent` one goes ahead of everything not yet started and is not numbered
   * or kept for a resend: at most once, like the cluster's own messages that are sent again anyway.
   */
  enqueue(frame: Uint8Array, urgent = false): boolean {
    this.framesAt = Date.now()
    if (urgent) {
      if (this.onConnectedSends) this.queue.push(frame)
      else if (this.ready) {
        this.queue.pushUrgent(frame)
        this.scheduleFlush()
      } else if (this.urgentHeld.length < URGENT_HELD_MAX) this.urgentHeld.push(frame)
      else return false
      return true
    }
    if (this.retainedBytes + frame.length > this.context.maxQueueBytes) {
      this.context.stats.dropped++
      this.peer.dropped++
      this.droppedSinceLog++
      const now = Date.now()
      if (now - this.lastDropLog >= DROP_LOG_INTERVAL_MS) {
        this.context.log(
          `dropping messages to ${this.address}: send queue full (${this.retainedBytes} bytes not yet acknowledged, cap ${this.context.maxQueueBytes}); ${this.droppedSinceLog} dropped since last report`,
        )
        this.lastDropLog = now
        this.droppedSinceLog = 0
      }
      return false
    }
    if (this.onConnectedSends) {
      this.queue.push(frame)
      return true
    }
    this.retained.push(frame)
    this.retainedBytes += frame.length
    if (!this.ready) return true
    this.queue.push(frame)
    this.written++
    this.scheduleFlush()
    return true
  }

  /** Sends made in the same tick go out as one batched write, unless a batch is already full:
   * then the kernel buffer, not only our capped queue, should absorb a burst. */
  private scheduleFlush() {
    if (this.queue.bytes >= BATCH_BYTES) this.flush()
    else if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(() => {
        this.flushScheduled = false
        this.flush()
      })
    }
  }

  /** Connected and authenticated: queued frames may go out. */
  private get ready(): boolean {
    return this.socket !== null && this.handshaking === null
  }

  private countOut(frames: number, bytes: number): void {
    this.context.stats.framesOut += frames
    this.context.stats.bytesOut += bytes
    this.peer.framesOut += frames
    this.peer.bytesOut += bytes
  }

  flush() {
    if (!this.ready || this.queue.empty) return
    if (this.pingTimer && this.awaitingSince === null && Date.now() - this.pingedAt >= this.pingIntervalMs * PING_RIDES_AFTER) this.ping(this.socket!, false)
    if (!this.socket) return // the ping found the link silent and dropped it
    const { frames, bytes } = this.queue.writeTo(this.socket!)
    this.countOut(frames, bytes)
  }

  /** Bytes not yet acknowledged by the peer (sent or not). */
  get queuedBytes(): number {
    return this.retainedBytes
  }

  /** The peer delivered every frame up to number `ack`: forget them. */
  private acknowledged(ack: number) {
    while (this.firstSeq <= ack && this.retainedHead < this.retained.length) {
      this.retainedBytes -= this.retained[this.retainedHead]!.length
      this.retained[this.retainedHead++] = undefined as never
      this.firstSeq++
      if (this.written > 0) this.written--
    }
    if (this.retainedHead > 1024 && this.retainedHead * 2 > this.retained.length) {
      this.retained = this.retained.slice(this.retainedHead)
      this.retainedHead = 0
    }
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
    this.stopTimers()
    this.urgentHeld = []
    this.retained = []
    this.retainedHead = this.retainedBytes = this.written = 0
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
    const attempt = ++this.attempt
    // A SYN into a partition is retried by the kernel for minutes, and a handshake with a peer
    // that went silent waits for its timeout: give up on this attempt and dial afresh instead.
    this.dialTimer = setTimeout(() => this.abandon(attempt), this.context.linkTimeoutMs)
    this.context.dial(this, attempt)
  }

  /** The dial `attempt` did not authenticate in time: forget it (a late open is terminated) and dial again at once. */
  private abandon(attempt: number) {
    this.dialTimer = null
    if (this.removed || attempt !== this.attempt || this.ready) return
    const socket = this.socket
    if (this.handshaking) clearTimeout(this.handshaking.timer)
    this.handshaking = null
    this.socket = null
    this.dialing = false
    if (this.failedDials++ === 0) this.context.log(`cannot connect to ${this.address}: not connected within ${this.context.linkTimeoutMs} ms; redialling`)
    this.attempt++ // so the abandoned socket's events are ignored
    socket?.terminate()
    this.dial()
  }

  private stopTimers() {
    if (this.pingTimer) clearTimeout(this.pingTimer)
    if (this.dialTimer) clearTimeout(this.dialTimer)
    this.pingTimer = this.dialTimer = null
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
    // Our pings find a dead path sooner; keepalive is for a peer host that vanished while idle.
    socket.setKeepAlive(true, 1000)
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
    if (!handshaking) return this.receivedPongs(socket, chunk)
    if (!handshaking.state) return this.refuse(socket, 'data before our hello')
    let values: unknown[]
    try {
      values = handshaking.decoder.push(chunk)
    } catch (error) {
      return this.refuse(socket, error instanceof FrameError ? `${error.code}: ${error.message}` : describe(error))
    }
    if (values.length === 0) return
    this.context.stats.framesIn += values.length
    // The listener's pongs may follow its hello_ack only after our auth, so nothing else can be here.
    if (values.length > 1) return this.refuse(socket, 'unexpected frames after hello_ack')
    const auth = dialerOnAck(handshaking.state, values[0])
    if (!auth.ok) return this.refuse(socket, auth.error)
    clearTimeout(handshaking.timer)
    this.handshaking = null
    // dialerOnAck validated the hello_ack: which run of the peer answered.
    this.forgetIfRestarted((values[0] as HelloAck).incarnation)
    this.authenticated(socket, encodeFrame(auth.value), handshaking.decoder)
  }

  /** The run of the peer our retained frames were written to (null before the first connection). */
  private peerIncarnation: string | null = null

  /**
   * Frames kept for resending were meant for the run of the peer that is gone: a new run would
   * take them as its own (chat said before it started, presence of a past it never saw). Drop them,
   * as a TCP connection to a dead process loses what it had not delivered.
   */
  private forgetIfRestarted(incarnation: string): void {
    const previous = this.peerIncarnation
    this.peerIncarnation = incarnation
    if (previous === null || previous === incarnation) return
    // Only what went on the old connection (`written`); what was queued while the link was down
    // was never sent, and goes to the new run as to any peer.
    const sentBefore = this.written
    if (sentBefore === 0) return
    this.acknowledged(this.firstSeq + sentBefore - 1)
    this.context.stats.dropped += sentBefore
    this.peer.dropped += sentBefore
    this.context.log(`${this.address} restarted (incarnation ${incarnation}); ${sentBefore} frames sent to its previous run and not acknowledged are dropped`)
  }

  /** After the handshake a listener sends only pongs: each says the link is alive and what it delivered. */
  private pongDecoder: FrameDecoder | null = null
  private receivedPongs(socket: Socket<OutboundData>, chunk: Uint8Array) {
    if (this.awaitingSince !== null) {
      this.awaitingSince = null
      this.armPing(socket) // the next ping's time, not a check for this one's pong
    }
    let values: unknown[]
    try {
      values = this.pongDecoder!.push(chunk)
    } catch (error) {
      return this.dropConnection(socket, `bad frame from the listener: ${describe(error)}`)
    }
    for (const value of values) {
      this.context.stats.framesIn++
      const control = asLinkControl(value)
      if (control === null || control === 'bad' || control.type !== 'link_pong') return this.dropConnection(socket, `unexpected ${(value as { type?: unknown })?.type} from the listener`)
      this.acknowledged(control.ack)
    }
  }

  /** Closes a connection that is broken or silent and redials at once; unacknowledged frames go again. */
  private dropConnection(socket: Socket<OutboundData>, reason: string) {
    if (socket !== this.socket) return
    this.context.log(`dropping connection to ${this.address}: ${reason}; redialling`)
    this.detach()
    this.attempt++ // the terminated socket's close event is not a second loss
    socket.terminate()
    this.dial()
  }

  private detach() {
    this.stopTimers()
    if (this.handshaking) clearTimeout(this.handshaking.timer)
    this.handshaking = null
    this.socket = null
    this.dialing = false
    this.pongDecoder = null
  }

  private get pingIntervalMs(): number {
    return pingIntervalMs(this.context.linkTimeoutMs)
  }

  /** Whether the link carried nothing but pings lately (see IDLE_AFTER). */
  private idle(now: number): boolean {
    return now - this.framesAt > IDLE_AFTER * this.context.linkTimeoutMs
  }

  /**
   * Sets the ping timer: while a ping waits for its pong, for the moment it has waited the link
   * timeout; otherwise for the next ping, at the usual pace or, idle, the slow one.
   */
  private armPing(socket: Socket<OutboundData>) {
    if (this.pingTimer) clearTimeout(this.pingTimer)
    const now = Date.now()
    const alone = this.pingIntervalMs * PING_ALONE_AFTER
    const every = this.awaitingSince === null && this.idle(now) ? IDLE_PINGS_EVERY * this.context.linkTimeoutMs : alone
    const delay = Math.max(1, this.awaitingSince === null ? this.pingedAt + every - now : this.awaitingSince + this.context.linkTimeoutMs + 1 - now)
    const timer: ReturnType<typeof setTimeout> = setTimeout(() => {
      if (this.pingTimer !== timer) return
      this.pingTimer = null
      this.onPingTimer(socket)
    }, delay)
    this.pingTimer = timer
  }

  private onPingTimer(socket: Socket<OutboundData>) {
    if (socket !== this.socket) return
    const now = Date.now()
    const every = this.idle(now) ? IDLE_PINGS_EVERY * this.context.linkTimeoutMs : this.pingIntervalMs * PING_ALONE_AFTER
    if (this.awaitingSince === null && now - this.pingedAt < every) return this.armPing(socket) // the link went idle meanwhile
    this.ping(socket)
    if (this.socket === socket && !this.pingTimer) this.armPing(socket)
  }

  /**
   * Drops the connection if a ping went unanswered for the link timeout; else pings, unless a ping
   * still waits for its pong (one is enough: TCP loses nothing). `write`: on its own, not with
   * frames being written.
   */
  private ping(socket: Socket<OutboundData>, write = true) {
    if (socket !== this.socket) return
    const now = Date.now()
    if (this.awaitingSince !== null) {
      const silentMs = now - this.awaitingSince
      if (silentMs > this.context.linkTimeoutMs) return this.dropConnection(socket, `silent for ${silentMs} ms`)
      return
    }
    this.pingedAt = this.awaitingSince = now
    this.armPing(socket)
    this.queue.pushUrgent(PING_FRAME)
    if (write) this.flush()
  }

  private authenticated(socket: Socket<OutboundData>, authFrame: Uint8Array, decoder: FrameDecoder) {
    if (this.dialTimer) clearTimeout(this.dialTimer)
    this.dialTimer = null
    this.connectedAt = Date.now()
    this.pongDecoder = decoder
    this.pingedAt = this.framesAt = this.connectedAt
    this.awaitingSince = null
    this.armPing(socket)
    this.context.stats.connects++
    this.peer.connects++
    const after = [this.failedDials && `${this.failedDials} failed attempts`, this.failedHandshakes && `${this.failedHandshakes} failed handshakes`]
    this.context.log(`connected to ${this.address}${after.some(Boolean) ? ` after ${after.filter(Boolean).join(' and ')}` : ''}`)
    this.failedDials = 0
    this.failedHandshakes = 0
    // Our proof first, then whatever onConnected sends (unnumbered: it is about this connection),
    // then every frame the peer has not acknowledged, numbered from firstSeq by the resume.
    this.queue = new SendQueue()
    this.queue.push(authFrame)
    try {
      this.onConnectedSends = true
      this.context.onConnected(this.address)
    } catch (error) {
      this.context.log(`onConnected(${this.address}) threw: ${describe(error)}`)
    } finally {
      this.onConnectedSends = false
    }
    if (this.removed || this.socket !== socket) return
    // Urgent frames held while down go before the resume too: they are not numbered.
    for (const frame of this.urgentHeld) this.queue.push(frame)
    this.urgentHeld = []
    this.queue.push(resumeFrame(this.stream, this.firstSeq))
    for (let i = this.retainedHead; i < this.retained.length; i++) this.queue.push(this.retained[i]!)
    this.written = this.retained.length - this.retainedHead
    this.flush()
  }
  /** Set while onConnected runs: what it sends goes straight onto the new connection, unnumbered. */
  private onConnectedSends = false

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
    this.countOut(frames, bytes)
  }

  drained(socket: Socket<OutboundData>) {
    if (socket !== this.socket) return
    this.queue.drained(socket)
    this.handshaking?.out.drained(socket)
    if (this.handshaking) this.writeHandshake()
    else this.flush()
  }

  /** A dial failed (Bun reports it twice: `connectError` and the rejected promise) or a connection closed. */
  lost(attempt: number, socket: Socket<OutboundData> | null, reason: string) {
    if (this.removed || attempt !== this.attempt) return
    if (socket ? socket !== this.socket : !this.dialing) return
    const handshaking = this.handshaking
    const wasConnected = socket !== null && handshaking === null
    this.detach()
    let maxDelay = UNREACHABLE_RETRY_MAX_MS
    if (socket && handshaking) {
      maxDelay = BACKOFF_MAX_MS
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
    const delay = Math.min(maxDelay, BACKOFF_MIN_MS * 2 ** Math.min(10, this.backoffStep++))
    this.timer = setTimeout(() => this.dial(), delay / 2 + (Math.random() * delay) / 2)
  }
}

// One outbound link: this node's own connection to one peer. It dials with backoff, sends the
// hello first, keeps a capped queue while the peer is away, and redials when the connection drops.
import type { Log } from '../../io'
import type { Socket } from 'bun'
import type { NodeAddress } from '../address'
import type { TransportStats } from '../transport'
import { describe } from './describe'
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
  readonly helloFrame: Uint8Array
  readonly maxQueueBytes: number
  /** Called when a (re)connect completed; what it sends goes first on the new connection. */
  onConnected(address: string): void
  log: Log
  dial(link: OutboundLink, attempt: number): void
}

export class OutboundLink {
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

  get queuedBytes(): number {
    return this.queue.bytes
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
    this.context.stats.connects++
    socket.setNoDelay(true)
    this.context.log(`connected to ${this.address}${this.failedDials ? ` after ${this.failedDials} failed attempts` : ''}`)
    this.failedDials = 0
    // Hello first, then whatever onConnected sends, then the backlog from while the link was down.
    const backlog = this.queue
    this.queue = new SendQueue()
    this.queue.push(this.context.helloFrame)
    try {
      this.context.onConnected(this.address)
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

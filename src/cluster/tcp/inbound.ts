// The listening side: peers' outbound connections arrive here. Each must complete the handshake
// (handshake.ts: hello, our hello_ack, their auth) before anything else is read; every later frame
// is checked with the validator the transport was given, then by the receiver, which may refuse it.
// A connection that fails is closed with one log line and counted: `authFailures` before it
// authenticated, `invalid` after. After the handshake the listener writes only pongs
// (liveness.ts), each carrying the highest frame number it delivered from that sender; a newer
// connection from the same sender retires the older one, so no frame from a stale connection
// arrives after newer ones, and numbered frames delivered already are skipped.
import type { Log } from '../../io'
import type { Socket, TCPSocketListener } from 'bun'
import { encodeFrame, FrameDecoder, FrameError, NO_FRAME } from '../codec'
import { listenerOnAuth, listenerOnHello, type HandshakeSelf, type ListenerState } from '../handshake'
import type { Hello } from '../messages'
import type { Peer, TransportStats, Verdict } from '../transport'
import type { Typed, Validator } from '../validate'
import { describe } from './describe'
import { asLinkControl, pongFrame } from './liveness'
import { SendQueue } from './send-queue'
import type { TlsFiles } from './tls'

/** Frames that belong to the handshake only: one after it is a confused or lying peer. */
const HANDSHAKE_TYPES = new Set(['hello', 'hello_ack', 'auth'])

/** How soon delivered frames are acknowledged (the sender keeps them until then): far under a ping interval. */
const ACK_DELAY_MS = 5

/** A connection that has not authenticated may send only frames this small (a hello is ~200 bytes). */
export const HANDSHAKE_MAX_FRAME_BYTES = 4096
/** And must finish within this long (by default). */
export const HANDSHAKE_TIMEOUT_MS = 5000

type Phase = { name: 'hello' } | { name: 'auth'; state: ListenerState } | { name: 'open'; peer: Hello; sender: Sender }

/** One sender incarnation, across its connections: what was delivered from it, and on which connection it now talks. */
interface Sender {
  incarnation: string
  /** The sender's link whose frames are numbered (a new one after it disconnected and dialled again). */
  stream: number
  delivered: number
  /** Frames received from it, over all its connections: a metric. */
  framesIn: number
  /** A pong acknowledging what was delivered is due. */
  ackTimer: ReturnType<typeof setTimeout> | null
  /** The last `delivered` we told the sender. */
  acked: number
  socket: Socket<InboundData> | null
}

type InboundData = {
  remote: string
  decoder: FrameDecoder
  phase: Phase
  closed: boolean
  out: SendQueue
  timer: ReturnType<typeof setTimeout> | null
  /** Number of the next frame, once the dialer sent link_resume; null: frames are not numbered (yet). */
  next: number | null
  lastHeard: number
  /** The dialer pings (a peer of this version): its silence means a dead path. */
  pinged: boolean
}

const senderOf = (phase: Phase): Sender | null => (phase.name === 'open' ? phase.sender : null)

export interface InboundOptions<M extends Typed> {
  host: string
  port: number
  self: HandshakeSelf
  tls: TlsFiles | null
  maxFrameBytes: number
  handshakeTimeoutMs: number
  /** The dialer pings at a third of this; an inbound connection silent for three times it is dropped. */
  linkTimeoutMs: number
  stats: TransportStats
  validate: Validator<M>
  /** Frames the sender sends ahead of the others, unnumbered (transport.ts `urgent`). */
  urgent(value: unknown): boolean
  nonce(): Uint8Array
  onMessage(peer: Peer, message: M): Verdict
  log: Log
}

export interface Inbound {
  /** Stops listening and drops every inbound connection. */
  close(): void
}

/** Listens on the cluster port and runs every inbound connection (see the header). */
export class InboundListener<M extends Typed> implements Inbound {
  private readonly sockets = new Set<Socket<InboundData>>()
  private readonly senders = new Map<string, Sender>()
  private readonly listener: TCPSocketListener<InboundData>
  private readonly sweep: ReturnType<typeof setInterval>
  private closed = false

  constructor(private readonly o: InboundOptions<M>) {
    try {
      this.listener = Bun.listen<InboundData>({
        hostname: o.host,
        port: o.port,
        // Bun reports a client certificate that fails verification to `handshake` but keeps the
        // connection; it is refused there.
        tls: o.tls ? { cert: o.tls.cert, key: o.tls.key, ca: o.tls.ca, requestCert: true, rejectUnauthorized: true } : undefined,
        socket: {
          open: (socket) => this.opened(socket),
          handshake: (socket, success, authorizationError) => {
            if (!success || authorizationError) this.refuse(socket, `TLS: ${authorizationError?.message ?? 'handshake failed'}`)
          },
          data: (socket, chunk) => this.onData(socket, chunk),
          drain: (socket) => {
            socket.data.out.drained(socket)
            this.flush(socket)
          },
          close: (socket) => this.onClose(socket),
          error: (socket, error) => o.log(`inbound connection from ${socket.data?.remote}: ${describe(error)}`),
        },
      })
    } catch (error) {
      throw new Error(`cluster transport cannot listen on ${o.host}:${o.port}: ${describe(error)}`)
    }
    // A dialer that pings and then falls silent is cut off or gone: free its connection. Only
    // memory waits on it (the dialer redials on its own, and a new connection retires the old
    // one), so a sweep per silence allowed is often enough: it wakes an idle node a third as often.
    this.sweep = setInterval(() => this.sweepSilent(), 3 * o.linkTimeoutMs)
  }

  /** Frames received per sending address. */
  framesInByPeer(): Map<string, number> {
    return new Map([...this.senders].map(([address, sender]) => [address, sender.framesIn]))
  }

  close(): void {
    this.closed = true
    clearInterval(this.sweep)
    this.listener.stop(true)
    for (const socket of this.sockets) {
      if (socket.data.timer) clearTimeout(socket.data.timer)
      socket.terminate()
    }
  }

  private opened(socket: Socket<InboundData>): void {
    socket.data = {
      remote: `${socket.remoteAddress}:${socket.remotePort}`,
      decoder: new FrameDecoder(HANDSHAKE_MAX_FRAME_BYTES),
      phase: { name: 'hello' },
      closed: false,
      out: new SendQueue(),
      timer: null,
      next: null,
      lastHeard: Date.now(),
      pinged: false,
    }
    if (this.closed) return void socket.terminate()
    this.sockets.add(socket)
    socket.data.timer = setTimeout(() => this.refuse(socket, `no authentication within ${this.o.handshakeTimeoutMs} ms`), this.o.handshakeTimeoutMs)
  }

  private onClose(socket: Socket<InboundData>): void {
    this.sockets.delete(socket)
    const state = socket.data
    if (state?.phase.name === 'open' && state.phase.sender.socket === socket) state.phase.sender.socket = null
    if (!state || state.closed) return
    if (state.timer) clearTimeout(state.timer)
    // A dialer that got our proof and went away did not accept it (or could not prove its own).
    if (state.phase.name === 'auth' && !this.closed) this.refuse(socket, 'closed by the peer during the handshake')
    state.closed = true
  }

  private sweepSilent(): void {
    const now = Date.now()
    for (const socket of this.sockets) {
      const state = socket.data
      if (state.phase.name === 'open' && state.pinged && now - state.lastHeard > 3 * this.o.linkTimeoutMs) this.retire(socket, `silent for ${now - state.lastHeard} ms`)
    }
  }

  private flush(socket: Socket<InboundData>): void {
    const { frames, bytes } = socket.data.out.writeTo(socket)
    this.o.stats.framesOut += frames
    this.o.stats.bytesOut += bytes
  }

  private reply(socket: Socket<InboundData>, frame: Uint8Array): void {
    socket.data.out.push(frame)
    this.flush(socket)
  }

  /** Closes a connection without blame: a newer one replaced it, or it went silent. */
  private retire(socket: Socket<InboundData>, reason: string): void {
    const state = socket.data
    if (state.closed) return
    state.closed = true
    if (state.timer) clearTimeout(state.timer)
    if (state.phase.name === 'open') this.o.log(`dropped connection from ${state.phase.peer.address} (${state.remote}): ${reason}`, { level: 'debug' })
    socket.terminate()
  }

  /** A newly authenticated connection becomes its sender's only one. */
  private adopt(socket: Socket<InboundData>, peer: Hello): Sender {
    let sender = this.senders.get(peer.address)
    if (!sender || sender.incarnation !== peer.incarnation) {
      sender = { incarnation: peer.incarnation, stream: -1, delivered: 0, framesIn: 0, acked: 0, socket: null, ackTimer: null }
      this.senders.set(peer.address, sender)
    }
    if (sender.socket && sender.socket !== socket) this.retire(sender.socket, 'replaced by a newer connection')
    sender.socket = socket
    return sender
  }

  private refuse(socket: Socket<InboundData>, reason: string): false {
    const state = socket.data
    if (state.closed) return false
    state.closed = true
    if (state.timer) clearTimeout(state.timer)
    if (state.phase.name === 'open') {
      this.o.stats.invalid++
      this.o.log(`closed connection from ${state.phase.peer.address} (${state.remote}): ${reason}`, { level: 'warn', event: 'peer_refused', peer: state.phase.peer.address, remote: state.remote })
    } else {
      this.o.stats.authFailures++
      const who = state.phase.name === 'auth' ? `${state.phase.state.hello.address.slice(0, 256)} (${state.remote})` : state.remote
      this.o.log(`refused connection from ${who}: ${reason}`, { level: 'warn', event: 'peer_auth_failed', remote: state.remote })
    }
    socket.end()
    return false
  }

  /** Returns false once the connection has been closed. */
  private receive(socket: Socket<InboundData>, value: unknown): boolean {
    const state = socket.data
    switch (state.phase.name) {
      case 'hello': {
        const answer = listenerOnHello(this.o.self, value, this.o.nonce())
        if (!answer.ok) return this.refuse(socket, answer.error)
        state.phase = { name: 'auth', state: answer.value.state }
        this.reply(socket, encodeFrame(answer.value.ack))
        return true
      }
      case 'auth': {
        const peer = listenerOnAuth(state.phase.state, value)
        if (!peer.ok) return this.refuse(socket, peer.error)
        state.phase = { name: 'open', peer: peer.value, sender: this.adopt(socket, peer.value) }
        if (state.timer) clearTimeout(state.timer)
        state.timer = null
        state.decoder.maxFrameBytes = this.o.maxFrameBytes
        return true
      }
      case 'open': {
        const { peer, sender } = state.phase
        if (HANDSHAKE_TYPES.has((value as Typed | null)?.type as string)) {
          return this.refuse(socket, `${(value as Typed).type} after the handshake`)
        }
        const control = asLinkControl(value)
        if (control === 'bad') return this.refuse(socket, `malformed ${(value as Typed).type}`)
        if (control) {
          if (control.type === 'link_pong') return this.refuse(socket, 'link_pong from a dialer')
          if (control.type === 'link_resume') {
            if (control.stream !== sender.stream) Object.assign(sender, { stream: control.stream, delivered: 0, acked: 0 })
            state.next = control.next
          } else {
            state.pinged = true
            sender.acked = sender.delivered
            this.reply(socket, pongFrame(sender.delivered))
          }
          return true
        }
        if (state.next !== null && !this.o.urgent(value)) {
          const seq = state.next++
          if (seq <= sender.delivered) return true // sent again after a reconnect; delivered already
          sender.delivered = seq
        }
        const result = this.o.validate(value)
        if (!result.ok) return this.refuse(socket, result.error)
        let verdict: Verdict
        try {
          verdict = this.o.onMessage(peer, result.value)
        } catch (error) {
          // A receiver's bug is ours, not the peer's: log it and keep the connection.
          this.o.log(`onMessage threw on ${result.value.type} from ${peer.address}: ${describe(error)}`)
          return true
        }
        return verdict.ok ? true : this.refuse(socket, verdict.error)
      }
    }
  }

  private onData(socket: Socket<InboundData>, chunk: Uint8Array): void {
    if (socket.data.closed) return
    socket.data.lastHeard = Date.now()
    this.o.stats.bytesIn += chunk.length
    const decoder = socket.data.decoder
    decoder.append(chunk) // cannot fail: a failed decoder's connection is already closed
    // Frame by frame: the frame size limit rises once the connection has authenticated.
    for (;;) {
      let value: unknown
      try {
        value = decoder.next()
      } catch (error) {
        this.refuse(socket, error instanceof FrameError ? `${error.code}: ${error.message}` : describe(error))
        return
      }
      if (value === NO_FRAME) break
      this.o.stats.framesIn++
      const sender = senderOf(socket.data.phase)
      if (sender) sender.framesIn++
      let open: boolean
      try {
        open = this.receive(socket, value)
      } catch (error) {
        // validation is not meant to throw, but whatever a peer sends must not escape
        open = this.refuse(socket, `cannot check frame: ${describe(error)}`)
      }
      if (!open) return
    }
    // Acknowledge what arrived within ACK_DELAY_MS, once for all the chunks in that time: paced
    // traffic arrives a frame a chunk, and a write back for each cost more than the frame.
    const sender = senderOf(socket.data.phase)
    if (sender && sender.delivered > sender.acked && sender.socket === socket && !sender.ackTimer) {
      sender.ackTimer = setTimeout(() => {
        sender.ackTimer = null
        if (sender.socket !== socket || socket.data.closed || sender.delivered <= sender.acked) return
        sender.acked = sender.delivered
        this.reply(socket, pongFrame(sender.delivered))
      }, ACK_DELAY_MS)
    }
  }
}

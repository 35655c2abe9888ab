// The listening side: peers' outbound connections arrive here. Each must complete the handshake
// (handshake.ts: hello, our hello_ack, their auth) before anything else is read; every later frame
// is checked with the validator the transport was given, then by the receiver, which may refuse it.
// A connection that fails is closed with one log line and counted: `authFailures` before it
// authenticated, `invalid` after.
import type { Log } from '../../io'
import type { Socket, TCPSocketListener } from 'bun'
import { encodeFrame, FrameDecoder, FrameError, NO_FRAME } from '../codec'
import { listenerOnAuth, listenerOnHello, type HandshakeSelf, type ListenerState } from '../handshake'
import type { Hello } from '../messages'
import type { Peer, TransportStats, Verdict } from '../transport'
import type { Typed, Validator } from '../validate'
import { describe } from './describe'
import { SendQueue } from './send-queue'
import type { TlsFiles } from './tls'

/** A connection that has not authenticated may send only frames this small (a hello is ~200 bytes). */
export const HANDSHAKE_MAX_FRAME_BYTES = 4096
/** And must finish within this long (by default). */
export const HANDSHAKE_TIMEOUT_MS = 5000

type Phase = { name: 'hello' } | { name: 'auth'; state: ListenerState } | { name: 'open'; peer: Hello }

type InboundData = {
  remote: string
  decoder: FrameDecoder
  phase: Phase
  closed: boolean
  out: SendQueue
  timer: ReturnType<typeof setTimeout> | null
}

export interface InboundOptions<M extends Typed> {
  host: string
  port: number
  self: HandshakeSelf
  tls: TlsFiles | null
  maxFrameBytes: number
  handshakeTimeoutMs: number
  stats: TransportStats
  validate: Validator<M>
  nonce(): Uint8Array
  onMessage(peer: Peer, message: M): Verdict
  log: Log
}

export interface Inbound {
  /** Stops listening and drops every inbound connection. */
  close(): void
}

export function listenInbound<M extends Typed>(o: InboundOptions<M>): Inbound {
  const sockets = new Set<Socket<InboundData>>()
  let closed = false

  const refuse = (socket: Socket<InboundData>, reason: string): false => {
    const state = socket.data
    if (state.closed) return false
    state.closed = true
    if (state.timer) clearTimeout(state.timer)
    if (state.phase.name === 'open') {
      o.stats.invalid++
      o.log(`closed connection from ${state.phase.peer.address} (${state.remote}): ${reason}`, { level: 'warn', event: 'peer_refused', peer: state.phase.peer.address, remote: state.remote })
    } else {
      o.stats.authFailures++
      const who = state.phase.name === 'auth' ? `${state.phase.state.hello.address.slice(0, 256)} (${state.remote})` : state.remote
      o.log(`refused connection from ${who}: ${reason}`, { level: 'warn', event: 'peer_auth_failed', remote: state.remote })
    }
    socket.end()
    return false
  }

  const reply = (socket: Socket<InboundData>, frame: Uint8Array) => {
    socket.data.out.push(frame)
    const { frames, bytes } = socket.data.out.writeTo(socket)
    o.stats.framesOut += frames
    o.stats.bytesOut += bytes
  }

  /** Returns false once the connection has been closed. */
  const receive = (socket: Socket<InboundData>, value: unknown): boolean => {
    const state = socket.data
    switch (state.phase.name) {
      case 'hello': {
        const answer = listenerOnHello(o.self, value, o.nonce())
        if (!answer.ok) return refuse(socket, answer.error)
        state.phase = { name: 'auth', state: answer.value.state }
        reply(socket, encodeFrame(answer.value.ack))
        return true
      }
      case 'auth': {
        const peer = listenerOnAuth(state.phase.state, value)
        if (!peer.ok) return refuse(socket, peer.error)
        state.phase = { name: 'open', peer: peer.value }
        if (state.timer) clearTimeout(state.timer)
        state.timer = null
        state.decoder.maxFrameBytes = o.maxFrameBytes
        return true
      }
      case 'open': {
        const peer = state.phase.peer
        if (typeof (value as Typed | null)?.type === 'string' && ['hello', 'hello_ack', 'auth'].includes((value as Typed).type)) {
          return refuse(socket, `${(value as Typed).type} after the handshake`)
        }
        const result = o.validate(value)
        if (!result.ok) return refuse(socket, result.error)
        let verdict: Verdict
        try {
          verdict = o.onMessage(peer, result.value)
        } catch (error) {
          // A receiver's bug is ours, not the peer's: log it and keep the connection.
          o.log(`onMessage threw on ${result.value.type} from ${peer.address}: ${describe(error)}`)
          return true
        }
        return verdict.ok ? true : refuse(socket, verdict.error)
      }
    }
  }

  const onData = (socket: Socket<InboundData>, chunk: Uint8Array) => {
    if (socket.data.closed) return
    o.stats.bytesIn += chunk.length
    const decoder = socket.data.decoder
    decoder.append(chunk) // cannot fail: a failed decoder's connection is already closed
    // Frame by frame: the frame size limit rises once the connection has authenticated.
    for (;;) {
      let value: unknown
      try {
        value = decoder.next()
      } catch (error) {
        refuse(socket, error instanceof FrameError ? `${error.code}: ${error.message}` : describe(error))
        return
      }
      if (value === NO_FRAME) return
      o.stats.framesIn++
      let open: boolean
      try {
        open = receive(socket, value)
      } catch (error) {
        // validation is not meant to throw, but whatever a peer sends must not escape
        open = refuse(socket, `cannot check frame: ${describe(error)}`)
      }
      if (!open) return
    }
  }

  const accept = (socket: Socket<InboundData>) => {
    socket.data.timer = setTimeout(() => refuse(socket, `no authentication within ${o.handshakeTimeoutMs} ms`), o.handshakeTimeoutMs)
  }

  let listener: TCPSocketListener<InboundData>
  try {
    listener = Bun.listen<InboundData>({
      hostname: o.host,
      port: o.port,
      // Bun reports a client certificate that fails verification to `handshake` but keeps the
      // connection; it is refused there.
      tls: o.tls ? { cert: o.tls.cert, key: o.tls.key, ca: o.tls.ca, requestCert: true, rejectUnauthorized: true } : undefined,
      socket: {
        open(socket) {
          socket.data = {
            remote: `${socket.remoteAddress}:${socket.remotePort}`,
            decoder: new FrameDecoder(HANDSHAKE_MAX_FRAME_BYTES),
            phase: { name: 'hello' },
            closed: false,
            out: new SendQueue(),
            timer: null,
          }
          if (closed) return void socket.terminate()
          sockets.add(socket)
          accept(socket)
        },
        handshake(socket, success, authorizationError) {
          if (!success || authorizationError) refuse(socket, `TLS: ${authorizationError?.message ?? 'handshake failed'}`)
        },
        data: onData,
        drain(socket) {
          const { frames, bytes } = socket.data.out.writeTo(socket)
          o.stats.framesOut += frames
          o.stats.bytesOut += bytes
        },
        close(socket) {
          sockets.delete(socket)
          const state = socket.data
          if (!state || state.closed) return
          if (state.timer) clearTimeout(state.timer)
          // A dialer that got our proof and went away did not accept it (or could not prove its own).
          if (state.phase.name === 'auth' && !closed) refuse(socket, 'closed by the peer during the handshake')
          state.closed = true
        },
        error(socket, error) {
          o.log(`inbound connection from ${socket.data?.remote}: ${describe(error)}`)
        },
      },
    })
  } catch (error) {
    throw new Error(`cluster transport cannot listen on ${o.host}:${o.port}: ${describe(error)}`)
  }

  return {
    close() {
      closed = true
      listener.stop(true)
      for (const socket of sockets) {
        if (socket.data.timer) clearTimeout(socket.data.timer)
        socket.terminate()
      }
    },
  }
}

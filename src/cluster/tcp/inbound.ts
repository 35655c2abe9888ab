// The listening side: peers' outbound connections arrive here. Each must open with a valid hello
// for this cluster; every later frame is checked with the validator the transport was given.
// A connection that sends anything else is closed with one log line and counted.
import type { Log } from '../../io'
import type { Socket, TCPSocketListener } from 'bun'
import type { Result } from '../../result'
import { FrameDecoder, FrameError } from '../codec'
import { PROTOCOL_VERSION, validateHello, type Hello } from '../messages'
import type { TransportStats } from '../transport'
import type { Typed, Validator } from '../validate'
import { describe } from './describe'

type InboundData = { remote: string; decoder: FrameDecoder; peer: Hello | null; closed: boolean }

export interface InboundOptions<M extends Typed> {
  host: string
  port: number
  systemName: string
  maxFrameBytes: number
  stats: TransportStats
  validate: Validator<M>
  onMessage(peer: Hello, message: M): void
  log: Log
}

export class InboundListener<M extends Typed> {
  private readonly sockets = new Set<Socket<InboundData>>()
  private readonly listener: TCPSocketListener<InboundData>
  private closed = false

  constructor(private readonly o: InboundOptions<M>) {
    try {
      this.listener = Bun.listen<InboundData>({
        hostname: o.host,
        port: o.port,
        socket: {
          open: (socket) => {
            socket.data = { remote: `${socket.remoteAddress}:${socket.remotePort}`, decoder: new FrameDecoder(o.maxFrameBytes), peer: null, closed: false }
            if (this.closed) return void socket.terminate()
            this.sockets.add(socket)
          },
          data: (socket, chunk) => this.onData(socket, chunk),
          close: (socket) => void this.sockets.delete(socket),
          error: (socket, error) => o.log(`inbound connection from ${socket.data?.remote}: ${describe(error)}`),
        },
      })
    } catch (error) {
      throw new Error(`cluster transport cannot listen on ${o.host}:${o.port}: ${describe(error)}`)
    }
  }

  /** Stops listening and drops every inbound connection. */
  close(): void {
    this.closed = true
    this.listener.stop(true)
    for (const socket of this.sockets) socket.terminate()
  }

  private onData(socket: Socket<InboundData>, chunk: Uint8Array): void {
    if (socket.data.closed) return
    this.o.stats.bytesIn += chunk.length
    let values: unknown[]
    try {
      values = socket.data.decoder.push(chunk)
    } catch (error) {
      this.refuse(socket, error instanceof FrameError ? `${error.code}: ${error.message}` : describe(error))
      return
    }
    for (const value of values) {
      this.o.stats.framesIn++
      let open: boolean
      try {
        open = this.receive(socket, value)
      } catch (error) {
        // validation is not meant to throw, but whatever a peer sends must not escape
        open = this.refuse(socket, `cannot check frame: ${describe(error)}`)
      }
      if (!open) return
    }
  }

  /** Returns false once the connection has been closed. */
  private receive(socket: Socket<InboundData>, value: unknown): boolean {
    const state = socket.data
    if (!state.peer) {
      const hello = acceptHello(value, this.o.systemName)
      if (!hello.ok) return this.refuse(socket, hello.error)
      state.peer = hello.value
      return true
    }
    if ((value as Typed | null)?.type === 'hello') return this.refuse(socket, 'second hello on one connection')
    const result = this.o.validate(value)
    if (!result.ok) return this.refuse(socket, result.error)
    try {
      this.o.onMessage(state.peer, result.value)
    } catch (error) {
      this.o.log(`onMessage threw on ${result.value.type} from ${state.peer.address}: ${describe(error)}`)
    }
    return true
  }

  private refuse(socket: Socket<InboundData>, reason: string): false {
    this.o.stats.invalid++
    const { remote, peer } = socket.data
    this.o.log(peer ? `closed connection from ${peer.address} (${remote}): ${reason}` : `refused connection from ${remote}: ${reason}`, {
      level: 'warn',
      event: 'peer_refused',
      peer: peer?.address ?? null,
      remote,
    })
    socket.data.closed = true
    socket.end()
    return false
  }
}

/** The hello that opens an inbound connection, or why the connection is refused. */
function acceptHello(value: unknown, systemName: string): Result<Hello> {
  const type = (value as Typed | null)?.type
  if (typeof type === 'string' && type !== 'hello') return { ok: false, error: `first frame is ${type.slice(0, 40)}, not hello` }
  const result = validateHello(value)
  if (!result.ok) return { ok: false, error: `first frame is not a hello (${result.error})` }
  const hello = result.value
  if (hello.version !== PROTOCOL_VERSION) return { ok: false, error: `protocol version ${hello.version} != ${PROTOCOL_VERSION}` }
  if (hello.systemName !== systemName) return { ok: false, error: `system name ${JSON.stringify(hello.systemName)} != ${JSON.stringify(systemName)}` }
  return result
}

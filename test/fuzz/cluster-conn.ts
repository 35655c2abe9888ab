// One raw connection to a node's cluster port, as a peer (or an impostor) would open it.
// `openClusterConnection` is the single place that knows how a cluster connection is opened and
// authenticated: the dialer's side of the handshake (src/cluster/handshake.ts: hello, the node's
// hello_ack, our auth), with the cluster secret when the fuzzer was given it. Every fuzzer input
// meant to arrive "after the handshake" goes through it.
import { randomBytes } from 'node:crypto'
import type { Socket } from 'bun'
import { formatAddress } from '../../src/cluster/address'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from '../../src/cluster/codec'
import { dialerOnAck, dialerStart, NONCE_BYTES } from '../../src/cluster/handshake'
import { PROTOCOL_VERSION, type Hello } from '../../src/cluster/messages'
import { waitFor } from '../support/wait'

export const LOOPBACK = '127.0.0.1'
/** Never queue more than this for one fuzz connection: a node that stops reading is not our problem to flood. */
const QUEUE_BYTES_MAX = 2 * 1024 * 1024

export interface HandshakeConfig {
  systemName: string
  /** The cluster secret, when the nodes have one: connections that know it authenticate. */
  secret?: string
}

export interface ClusterConn {
  /** Queues bytes; false when the connection is closed or the queue is full (nothing queued). */
  write(bytes: Uint8Array): boolean
  /** Resolves once everything queued reached the kernel, or the connection closed. */
  flushed(): Promise<void>
  /** Frames the node sent back on this connection (the hello_ack; nothing else is ever sent on an inbound connection). */
  received: unknown[]
  /** Half-close after the queue drains. */
  end(): void
  /** Drop at once (RST-like, nothing more is sent). */
  terminate(): void
  /** Resolves with who closed: 'peer' (the node) or 'us'. */
  closed: Promise<'peer' | 'us'>
  isClosed(): boolean
}

type Data = { conn: ConnState }
interface ConnState {
  queue: Uint8Array[]
  queued: number
  closed: boolean
  closedByUs: boolean
  decoder: FrameDecoder
  received: unknown[]
  resolveClosed: (who: 'peer' | 'us') => void
  flushWaiters: (() => void)[]
  socket: Socket<Data> | null
}

function flush(state: ConnState): void {
  const socket = state.socket
  if (!socket) return
  while (state.queue.length > 0) {
    const head = state.queue[0]!
    const written = socket.write(head)
    if (written < 0) return
    state.queued -= written
    if (written < head.length) {
      state.queue[0] = head.subarray(written)
      return
    }
    state.queue.shift()
  }
  for (const resolve of state.flushWaiters.splice(0)) resolve()
}

function markClosed(state: ConnState, who: 'peer' | 'us'): void {
  if (state.closed) return
  state.closed = true
  state.queue = []
  state.queued = 0
  state.resolveClosed(who)
  for (const resolve of state.flushWaiters.splice(0)) resolve()
}

const handlers = {
  open(socket: Socket<Data>) {
    socket.data.conn.socket = socket
    flush(socket.data.conn)
  },
  drain(socket: Socket<Data>) {
    flush(socket.data.conn)
  },
  data(socket: Socket<Data>, chunk: Uint8Array) {
    const state = socket.data.conn
    try {
      for (const value of state.decoder.push(chunk)) if (state.received.length < 100) state.received.push(value)
    } catch {
      // A node answering with something we cannot decode is noted by the caller through `received`.
    }
  },
  close(socket: Socket<Data>) {
    const state = socket.data.conn
    markClosed(state, state.closedByUs ? 'us' : 'peer')
  },
  error(socket: Socket<Data>) {
    const state = socket.data.conn
    markClosed(state, state.closedByUs ? 'us' : 'peer')
  },
  connectError(socket: Socket<Data>) {
    markClosed(socket.data.conn, 'peer')
  },
}

/** Opens a TCP connection to a loopback cluster port, without any handshake. */
export async function openRawConnection(port: number): Promise<ClusterConn> {
  let resolveClosed!: (who: 'peer' | 'us') => void
  const closed = new Promise<'peer' | 'us'>((resolve) => (resolveClosed = resolve))
  const state: ConnState = {
    queue: [],
    queued: 0,
    closed: false,
    closedByUs: false,
    decoder: new FrameDecoder(DEFAULT_MAX_FRAME_BYTES),
    received: [],
    resolveClosed,
    flushWaiters: [],
    socket: null,
  }
  // A failed connect both rejects and calls connectError: both mark the state closed.
  const socket = await Bun.connect<Data>({ hostname: LOOPBACK, port, data: { conn: state }, socket: handlers }).catch(() => null)
  if (!socket) markClosed(state, 'peer')
  else state.socket = socket
  return {
    write(bytes) {
      if (state.closed || state.queued + bytes.length > QUEUE_BYTES_MAX) return false
      state.queue.push(bytes)
      state.queued += bytes.length
      flush(state)
      return true
    },
    flushed: () => (state.queue.length === 0 || state.closed ? Promise.resolve() : new Promise((resolve) => state.flushWaiters.push(resolve))),
    received: state.received,
    end() {
      if (state.closed) return
      state.closedByUs = true
      void (state.queue.length === 0 ? Promise.resolve() : new Promise<void>((r) => state.flushWaiters.push(r))).then(() => state.socket?.end())
    },
    terminate() {
      if (state.closed) return
      state.closedByUs = true
      state.socket?.terminate()
      markClosed(state, 'us')
    },
    closed,
    isClosed: () => state.closed,
  }
}

const nonce = () => new Uint8Array(randomBytes(NONCE_BYTES))

/** A well-formed first frame of a handshake (mutated by some inputs). */
export function helloFor(config: HandshakeConfig, address: string, incarnation: string): Hello {
  return { type: 'hello', version: PROTOCOL_VERSION, systemName: config.systemName, address, incarnation, auth: config.secret ? 'hmac-sha256' : 'none', nonce: nonce() }
}

/**
 * Performs the cluster port's handshake as the peer `address#incarnation` towards the node on
 * `port`. Resolves false when the node refused (closed the connection, or answered wrongly).
 * `record` receives the frames written (a genuine handshake, for replay attempts).
 */
export async function performHandshake(conn: ClusterConn, config: HandshakeConfig, address: string, incarnation: string, port: number, record?: Uint8Array[]): Promise<boolean> {
  const target = formatAddress({ systemName: config.systemName, host: LOOPBACK, port })
  const state = dialerStart({ systemName: config.systemName, address, incarnation, secrets: config.secret ? [config.secret] : [] }, target, nonce())
  const hello = encodeFrame(state.hello)
  record?.push(hello)
  if (!conn.write(hello)) return false
  try {
    await waitFor(() => conn.received.length > 0 || conn.isClosed(), 5000, 'hello_ack')
  } catch {
    return false
  }
  if (conn.isClosed()) return false
  const auth = dialerOnAck(state, conn.received.shift())
  if (!auth.ok) return false
  const frame = encodeFrame(auth.value)
  record?.push(frame)
  if (!conn.write(frame)) return false
  await conn.flushed()
  return !conn.isClosed()
}

/** A connection that has completed the handshake as `address#incarnation`, or null if refused. */
export async function openClusterConnection(port: number, config: HandshakeConfig, address: string, incarnation: string): Promise<ClusterConn | null> {
  const conn = await openRawConnection(port)
  if (conn.isClosed()) return null
  if (await performHandshake(conn, config, address, incarnation, port)) return conn
  conn.terminate()
  return null
}

// One raw connection to a node's cluster port, as a peer (or an impostor) would open it.
// `openClusterConnection` is the single place that knows how a cluster connection is opened and
// authenticated: today the handshake is one `hello` frame; when the cluster port gains a
// shared-secret challenge-response (issue 7), it goes into `performHandshake` and every fuzzer
// input that is meant to arrive "after the handshake" keeps working unchanged.
import type { Socket } from 'bun'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from '../../src/cluster/codec'
import { PROTOCOL_VERSION, type Hello } from '../../src/cluster/messages'

export const LOOPBACK = '127.0.0.1'
/** Never queue more than this for one fuzz connection: a node that stops reading is not our problem to flood. */
const QUEUE_BYTES_MAX = 2 * 1024 * 1024

export interface HandshakeConfig {
  systemName: string
  /** Reserved for the shared-secret handshake; unused while the cluster port has none. */
  secret?: string
}

export interface ClusterConn {
  /** Queues bytes; false when the connection is closed or the queue is full (nothing queued). */
  write(bytes: Uint8Array): boolean
  /** Resolves once everything queued reached the kernel, or the connection closed. */
  flushed(): Promise<void>
  /** Frames the node sent back on this connection (none today; a challenge once there is auth). */
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

export function helloFor(config: HandshakeConfig, address: string, incarnation: string): Hello {
  return { type: 'hello', version: PROTOCOL_VERSION, systemName: config.systemName, address, incarnation }
}

/**
 * Performs whatever handshake the cluster port requires, as the peer `address#incarnation`.
 * Today: send a hello. Resolves false when the node refused (closed the connection).
 */
export async function performHandshake(conn: ClusterConn, config: HandshakeConfig, address: string, incarnation: string): Promise<boolean> {
  if (!conn.write(encodeFrame(helloFor(config, address, incarnation)))) return false
  await conn.flushed()
  return !conn.isClosed()
}

/** A connection that has completed the handshake as `address#incarnation`, or null if refused. */
export async function openClusterConnection(port: number, config: HandshakeConfig, address: string, incarnation: string): Promise<ClusterConn | null> {
  const conn = await openRawConnection(port)
  if (conn.isClosed()) return null
  if (await performHandshake(conn, config, address, incarnation)) return conn
  conn.terminate()
  return null
}

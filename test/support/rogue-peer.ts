// A hand-made peer for attack tests: a raw TCP connection to a node's cluster port that speaks
// the frame codec, records what it receives, and can run the dialer's side of the handshake
// (with a secret it was given, or a wrong one) or skip it.
import { randomBytes } from 'node:crypto'
import type { Socket } from 'bun'
import { encodeFrame, FrameDecoder } from '../../src/cluster/codec'
import { dialerOnAck, dialerStart, NONCE_BYTES } from '../../src/cluster/handshake'
import { waitFor } from './wait'

export interface RoguePeer {
  /** Every byte written, in order (to replay a recorded handshake). */
  readonly written: Uint8Array[]
  readonly frames: unknown[]
  readonly closed: boolean
  send(value: unknown): void
  writeRaw(bytes: Uint8Array): void
  /** Runs the dialer's handshake claiming `address`; resolves with the listener's verdict on us as the dialer saw it. */
  handshake(options: { address: string; secrets: string[]; target: string; systemName?: string }): Promise<{ ok: true } | { ok: false; error: string }>
  close(): void
}

export async function connectRogue(port: number, host = '127.0.0.1'): Promise<RoguePeer> {
  const decoder = new FrameDecoder(1 << 20)
  const frames: unknown[] = []
  const written: Uint8Array[] = []
  let closed = false
  const socket: Socket<undefined> = await Bun.connect({
    hostname: host,
    port,
    socket: {
      data(s, chunk) {
        try {
          frames.push(...decoder.push(chunk))
        } catch {
          s.end()
        }
      },
      close() {
        closed = true
      },
    },
  })
  const writeRaw = (bytes: Uint8Array) => {
    written.push(bytes)
    socket.write(bytes)
  }
  return {
    written,
    frames,
    get closed() {
      return closed
    },
    send: (value) => writeRaw(encodeFrame(value)),
    writeRaw,
    async handshake({ address, secrets, target, systemName = 'WebSocketClusterSystem' }) {
      const state = dialerStart({ systemName, address, incarnation: 'rogue', secrets }, target, new Uint8Array(randomBytes(NONCE_BYTES)))
      writeRaw(encodeFrame(state.hello))
      await waitFor(() => frames.length > 0 || closed, 5000, 'hello_ack or close')
      if (frames.length === 0) return { ok: false, error: 'closed before hello_ack' }
      const auth = dialerOnAck(state, frames[0])
      if (!auth.ok) return auth
      writeRaw(encodeFrame(auth.value))
      return { ok: true }
    },
    close: () => socket.terminate(),
  }
}

// Connections that do not authenticate, to nodes that hold a cluster secret: the ways a process
// without the secret (or with a wrong one, or with a recording of someone else's handshake) can
// start talking before it sends its payload. Each opening writes its first frames and returns
// them, so nodeVerdict (verdict.ts) can tell what the node must do with the whole byte stream.
import { randomBytes } from 'node:crypto'
import { formatAddress } from '../../src/cluster/address'
import { encodeFrame } from '../../src/cluster/codec'
import { dialerOnAck, dialerStart, NONCE_BYTES } from '../../src/cluster/handshake'
import { validateHelloAck } from '../../src/cluster/messages'
import { waitFor } from '../support/wait'
import { LOOPBACK, openRawConnection, performHandshake, type ClusterConn, type HandshakeConfig } from './cluster-conn'
import { mutate, randomValue, type ClusterFacts } from './inputs'
import type { Rng } from './rng'

export const OUTSIDER_MODES = [
  /** No handshake at all: the payload is the first thing the node reads. */
  'raw',
  /** Random bytes, then a genuine hello. */
  'garbage_before_hello',
  /** A hello in the no-secret mode (`auth: 'none'`), as a node without a secret sends it. */
  'no_secret',
  /** The whole protocol under a wrong secret: the node's proof does not verify, ours is forged. */
  'wrong_secret',
  /** Hello and auth recorded from a genuine handshake, written again on a new connection. */
  'replay',
  /** A genuine hello, then the real proof altered (bit flip, cut, wrong type, the node's own proof reflected, a second hello, a Raft frame instead). */
  'bad_auth',
  /** A genuine hello, then random bytes where the auth belongs. */
  'garbage_in_handshake',
] as const
export type OutsiderMode = (typeof OUTSIDER_MODES)[number]

export interface Opening {
  conn: ClusterConn
  /** Every byte written so far, in order. */
  written: Uint8Array[]
  /** A finding made while opening (e.g. a wrong secret verified the node's proof). */
  finding?: string
}

const WRONG_SECRET = 'not-the-cluster-secret-0123456789'
const nonce = () => new Uint8Array(randomBytes(NONCE_BYTES))

/** Sends `frame`, recording it. */
function write(opening: Opening, frame: Uint8Array): boolean {
  opening.written.push(frame)
  return opening.conn.write(frame)
}

/** Waits for the node's first answer on `conn` (its hello_ack) or the close; null on close or silence. */
async function ackOf(conn: ClusterConn): Promise<unknown | null> {
  const answered = await waitFor(() => conn.received.length > 0 || conn.isClosed(), 5000, 'hello_ack').then(() => true, () => false)
  return answered && conn.received.length > 0 ? conn.received[0] : null
}

/** A genuine handshake's frames, recorded on a throwaway connection to `port` (then closed). */
async function recordGenuine(config: HandshakeConfig, port: number, address: string, incarnation: string): Promise<Uint8Array[] | null> {
  const conn = await openRawConnection(port)
  const record: Uint8Array[] = []
  try {
    if (conn.isClosed() || !(await performHandshake(conn, config, address, incarnation, port, record))) return null
    return record
  } finally {
    conn.end()
    conn.terminate()
  }
}

/**
 * Opens a connection to the node on `port` as `address#incarnation` without authenticating, in
 * the given way. `config` holds the real secret: the fuzzer uses it only to make genuine frames
 * it then spoils, never to finish a handshake here. Null if the TCP connection failed.
 */
export async function openOutsider(
  rng: Rng,
  mode: OutsiderMode,
  config: HandshakeConfig,
  port: number,
  address: string,
  incarnation: string,
  facts: ClusterFacts,
): Promise<{ opening: Opening; extraConnections: number } | null> {
  const target = formatAddress({ systemName: config.systemName, host: LOOPBACK, port })
  let extraConnections = 0
  let recorded: Uint8Array[] | null = null
  if (mode === 'replay') {
    // Recorded towards this node or another one: either way its nonce in the proof is not the node's new one.
    const recordPort = rng.chance(0.5) ? port : rng.pick(facts.nodes).clusterPort
    extraConnections++
    recorded = await recordGenuine(config, recordPort, address, incarnation)
  }
  const conn = await openRawConnection(port)
  if (conn.isClosed()) return null
  const opening: Opening = { conn, written: [] }
  const genuine = dialerStart({ systemName: config.systemName, address, incarnation, secrets: config.secret ? [config.secret] : [] }, target, nonce())
  switch (mode) {
    case 'raw':
      break
    case 'garbage_before_hello':
      write(opening, rng.bytes(rng.int(1, 64)))
      write(opening, encodeFrame(genuine.hello))
      break
    case 'no_secret': {
      const plain = dialerStart({ systemName: config.systemName, address, incarnation, secrets: [] }, target, nonce())
      write(opening, encodeFrame(plain.hello))
      break
    }
    case 'wrong_secret': {
      const wrong = dialerStart({ systemName: config.systemName, address, incarnation, secrets: [WRONG_SECRET] }, target, nonce())
      write(opening, encodeFrame(wrong.hello))
      const ack = await ackOf(conn)
      if (ack !== null) {
        const verdict = dialerOnAck(wrong, ack)
        if (verdict.ok) opening.finding = 'the node proved itself under a wrong secret'
        // Forged: random bytes of the right size, or the node's own proof sent back.
        const proofs = validateHelloAck(ack).ok ? (ack as { proofs: Uint8Array[] }).proofs : []
        const proof = proofs.length > 0 && rng.chance(0.3) ? proofs[0]! : rng.bytes(32)
        write(opening, encodeFrame({ type: 'auth', proof }))
      }
      break
    }
    case 'replay':
      for (const frame of recorded ?? [encodeFrame(genuine.hello)]) write(opening, frame)
      break
    case 'bad_auth': {
      write(opening, encodeFrame(genuine.hello))
      const ack = await ackOf(conn)
      if (ack === null) break
      const auth = dialerOnAck(genuine, ack)
      if (!auth.ok) {
        opening.finding = `the node's hello_ack does not verify under the cluster secret: ${auth.error}`
        break
      }
      write(opening, encodeFrame(spoiledAuth(rng, auth.value.proof, ack, genuine.hello, facts)))
      break
    }
    case 'garbage_in_handshake': {
      write(opening, encodeFrame(genuine.hello))
      if ((await ackOf(conn)) === null) break
      write(opening, rng.chance(0.5) ? rng.bytes(rng.int(1, 256)) : encodeFrame(randomValue(rng, 2)))
      break
    }
  }
  return { opening, extraConnections }
}

/** An auth frame (or what stands in its place) that must not authenticate: the real proof, spoiled. */
function spoiledAuth(rng: Rng, proof: Uint8Array, ack: unknown, hello: unknown, facts: ClusterFacts): unknown {
  const flipped = () => {
    const p = new Uint8Array(proof)
    const i = rng.int(0, p.length - 1)
    p[i] = p[i]! ^ (1 << rng.int(0, 7))
    return p
  }
  const reflected = (ack as { proofs?: Uint8Array[] }).proofs?.[0] ?? new Uint8Array(32)
  switch (rng.int(0, 8)) {
    case 0:
      return { type: 'auth', proof: flipped() }
    case 1:
      return { type: 'auth', proof: proof.subarray(0, rng.int(0, proof.length - 1)) }
    case 2:
      return { type: 'auth', proof: reflected } // the listener's own proof, reflected back
    case 3:
      return { type: 'auth', proof: Buffer.from(proof).toString(rng.pick(['hex', 'base64'])) }
    case 4:
      return { type: 'auth', proof: [...proof] }
    case 5:
      return { type: 'auth' }
    case 6:
      return hello // a second hello
    case 7: {
      // The real proof in a frame of another type (the node must not look at the proof alone).
      const m = mutate(rng, { type: 'auth', proof }, facts)
      return { ...m, type: rng.pick(['hello', 'hello_ack', 'join_request', 'chat', 'auth_ok']), proof }
    }
    default:
      return { type: 'auth', proof: new Uint8Array([...proof, rng.int(0, 255)]) }
  }
}

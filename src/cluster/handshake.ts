// The connection handshake, as a pure state machine: frames in, frames to send and a verdict out.
// The TCP code (tcp/inbound.ts, tcp/outbound-link.ts) drives it; nonces come from the caller.
//
//   dialer                                       listener
//   hello {address, incarnation, nonce Nd}  ──▶
//                                           ◀──  hello_ack {address, nonce Nl, proofs}
//   auth {proof}                            ──▶  (authenticated: every later frame is accepted)
//
// Each proof is HMAC-SHA256(secret, label | system | Nd | Nl | dialer address+incarnation |
// listener address). Both nonces are fresh, so a recorded handshake is useless on a new
// connection; the label ("listener"/"dialer") differs, so a proof cannot be reflected back to
// the side that made it; the addresses are inside, so a proof made for one pair of nodes does
// not work for another; the secret itself never crosses the wire. Proofs are compared in
// constant time. The listener proves first, once per secret it holds (current, and previous
// during a rotation); the dialer answers under the first of its own secrets that verified one,
// so two nodes that share either secret talk. Without a secret ("none") the same frames flow
// with no proofs, and a node with a secret refuses a node without one (and the other way round)
// with a message that says so.
//
// What this does not do: hide or protect traffic after the handshake. A machine in the middle
// can relay a handshake and then read or alter frames; use TLS (--cluster-tls-*) for that.
import { createHmac, timingSafeEqual } from 'node:crypto'
import { parseAddress } from './address'
import { err, ok, type Result } from '../result'
import {
  PROTOCOL_VERSION,
  validateAuth,
  validateHello,
  validateHelloAck,
  type Auth,
  type AuthMode,
  type Hello,
  type HelloAck,
} from './messages'

export const NONCE_BYTES = 32

export interface HandshakeSelf {
  systemName: string
  address: string
  incarnation: string
  /** Shared secrets, current first, then the previous one during a rotation; empty for none. */
  secrets: readonly string[]
}

export type DialerState = { readonly self: HandshakeSelf; readonly target: string; readonly hello: Hello }
export type ListenerState = { readonly self: HandshakeSelf; readonly hello: Hello; readonly nonce: Uint8Array }

const modeOf = (self: HandshakeSelf): AuthMode => (self.secrets.length > 0 ? 'hmac-sha256' : 'none')

/** The fields both opening frames carry about their sender. */
const introduce = (self: HandshakeSelf, nonce: Uint8Array) => ({
  version: PROTOCOL_VERSION,
  systemName: self.systemName,
  address: self.address,
  incarnation: self.incarnation,
  auth: modeOf(self),
  nonce,
})

/** The dialer's first frame, to `target` (the address it dialed). */
export function dialerStart(self: HandshakeSelf, target: string, nonce: Uint8Array): DialerState {
  const hello: Hello = { type: 'hello', ...introduce(self, nonce) }
  return { self, target, hello }
}

/** The listener's answer arrived: check who it is and its proof; answer with ours. */
export function dialerOnAck(state: DialerState, value: unknown): Result<Auth> {
  const { self, target, hello } = state
  const checked = validateHelloAck(value)
  if (!checked.ok) return err(`expected hello_ack (${checked.error})`)
  const ack = checked.value
  const common = checkPeer(self, ack)
  if (!common.ok) return common
  if (ack.address !== target) return err(`dialled ${target} but the node there says it is ${ack.address.slice(0, 256)}`)
  if (self.secrets.length === 0) return ok({ type: 'auth', proof: new Uint8Array(0) })
  const input = proofInput(self.systemName, hello, ack.nonce, ack.address, ack.incarnation)
  for (const secret of self.secrets) {
    const expected = hmac(secret, 'listener', input)
    if (ack.proofs.some((proof) => equal(proof, expected))) return ok({ type: 'auth', proof: hmac(secret, 'dialer', input) })
  }
  return err('listener proof does not match the cluster secret')
}

/** A dialer's hello arrived: check it and answer with our challenge and proofs. */
export function listenerOnHello(self: HandshakeSelf, value: unknown, nonce: Uint8Array): Result<{ state: ListenerState; ack: HelloAck }> {
  const type = (value as { type?: unknown } | null)?.type
  if (typeof type === 'string' && type !== 'hello') return err(`first frame is ${type.slice(0, 40)}, not hello`)
  const checked = validateHello(value)
  if (!checked.ok) return err(`first frame is not a hello (${checked.error})`)
  const hello = checked.value
  const common = checkPeer(self, hello)
  if (!common.ok) return common
  const input = proofInput(self.systemName, hello, nonce, self.address, self.incarnation)
  const ack: HelloAck = { type: 'hello_ack', ...introduce(self, nonce), proofs: self.secrets.map((secret) => hmac(secret, 'listener', input)) }
  return ok({ state: { self, hello, nonce }, ack })
}

/** The dialer's proof arrived: on success the connection is authenticated as `hello`. */
export function listenerOnAuth(state: ListenerState, value: unknown): Result<Hello> {
  const type = (value as { type?: unknown } | null)?.type
  if (typeof type === 'string' && type !== 'auth') return err(`${type.slice(0, 40)} before authentication`)
  const checked = validateAuth(value)
  if (!checked.ok) return err(`expected auth (${checked.error})`)
  const { self, hello, nonce } = state
  if (self.secrets.length === 0) return ok(hello)
  const input = proofInput(self.systemName, hello, nonce, self.address, self.incarnation)
  const proof = checked.value.proof
  // Every secret is tried, so the time taken does not say which one matched.
  let matched = false
  for (const secret of self.secrets) matched = equal(proof, hmac(secret, 'dialer', input)) || matched
  return matched ? ok(hello) : err('dialer proof does not match the cluster secret')
}

/** What both sides check of the other's opening frame: version, cluster, address, auth mode. */
function checkPeer(self: HandshakeSelf, peer: Hello | HelloAck): Result<true> {
  if (peer.version !== PROTOCOL_VERSION) return err(`protocol version ${peer.version} != ${PROTOCOL_VERSION}`)
  if (peer.systemName !== self.systemName) return err(`system name ${JSON.stringify(peer.systemName)} != ${JSON.stringify(self.systemName)}`)
  const address = parseAddress(peer.address)
  if (!address || address.systemName !== self.systemName) return err(`not a node address of this cluster: ${JSON.stringify(peer.address.slice(0, 256))}`)
  const mode = modeOf(self)
  if (peer.auth !== mode) {
    return err(mode === 'none' ? 'peer uses a cluster secret; this node has none' : 'peer has no cluster secret; this node requires one')
  }
  return ok(true)
}

/** Everything a proof covers except its label, in one unambiguous string. */
function proofInput(systemName: string, hello: Hello, listenerNonce: Uint8Array, listenerAddress: string, listenerIncarnation: string): string {
  return JSON.stringify([systemName, hex(hello.nonce), hex(listenerNonce), hello.address, hello.incarnation, listenerAddress, listenerIncarnation])
}

function hmac(secret: string, label: 'listener' | 'dialer', input: string): Uint8Array {
  return new Uint8Array(createHmac('sha256', secret).update(`websocket-cluster/auth/v1 ${label} `).update(input).digest())
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')

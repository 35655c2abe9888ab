// What a node must do with the bytes a fuzz connection wrote, worked out with the node's own rules
// (the handshake state machine, the frame decoder and its limits, the schemas, and the checks the
// node applies to an authenticated peer's frames), so the fuzzer's expectations follow the code's
// documented protocol instead of a second copy of it:
//   - before authentication (src/cluster/tcp/inbound.ts): frames of at most 4 KiB; the first must
//     be a hello the listener accepts, the second an auth whose proof matches the node's fresh
//     nonce, which nothing the fuzzer sends without running the real dialer can match;
//   - after it: every frame must pass its schema, a Raft frame must come `from` the connection's
//     own address (src/cluster/node.ts), the transcript entries a Raft frame carries (proposals,
//     appends) and a snapshot must pass their schemas (src/transcript/entries.ts), and proposals
//     and presence must pass src/chat/peer-rules.ts.
import { addressOf } from '../../src/cluster/address'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder, NO_FRAME } from '../../src/cluster/codec'
import { listenerOnAuth, listenerOnHello, NONCE_BYTES, type HandshakeSelf, type ListenerState } from '../../src/cluster/handshake'
import { HANDSHAKE_TYPES, RAFT_TYPES, validateRaftMessage } from '../../src/cluster/messages'
import { HANDSHAKE_MAX_FRAME_BYTES } from '../../src/cluster/tcp/inbound'
import type { Typed } from '../../src/cluster/validate'
import { validateChatMessage } from '../../src/chat/messages'
import { checkPeerMessage, checkProposal } from '../../src/chat/peer-rules'
import { validateTranscriptEntry, validateTranscriptSnapshot, type TranscriptEntry } from '../../src/transcript/entries'

/** The node's default `--max-message-length` (src/config.ts); the fuzz cluster runs with it. */
export const MAX_MESSAGE_LENGTH = 2000

/**
 * - `refused`: the node must close the connection as soon as these bytes arrive;
 * - `waiting`: still in the handshake, the node must close it when the handshake times out;
 * - `open`: authenticated, and nothing sent so far is refused.
 */
export type Verdict = { outcome: 'refused'; why: string } | { outcome: 'waiting' } | { outcome: 'open' }

/** What the node decodes from `value`: judge inputs by that, not by the JS value (msgpack drops undefined, turns uint64 into bigint...). */
export function roundTrip(value: unknown): unknown {
  try {
    return new FrameDecoder(DEFAULT_MAX_FRAME_BYTES).push(encodeFrame(value))[0]
  } catch {
    return undefined
  }
}

/** Whether a node accepts `value` (as decoded) from an authenticated peer whose handshake claimed `peerAddress`; why not, if it does not. */
export function refusalAfterAuth(value: unknown, peerAddress: string): string | null {
  const type = (value as Typed | null)?.type
  if (typeof type === 'string' && HANDSHAKE_TYPES.has(type)) return `${type} after the handshake`
  if (RAFT_TYPES.has(type as string)) {
    const checked = validateRaftMessage(value)
    if (!checked.ok) return `an invalid ${type}`
    const m = checked.value
    // The application data inside is checked by the same validator (ClusterNode.validateRaft).
    const entries = m.type === 'proposal' ? m.entries : m.type === 'append_entries' ? m.entries.flatMap((e) => (e.change.type === 'app' ? [e.change.data] : [])) : []
    if (!entries.every((data) => validateTranscriptEntry(data).ok)) return `an invalid ${type}`
    if (m.type === 'install_snapshot' && !validateTranscriptSnapshot(m.app).ok) return `an invalid ${type}`
    if (addressOf(m.from) !== peerAddress) return `${type} from another node`
    if (m.type === 'proposal' && !checkProposal({ address: peerAddress, incarnation: '' }, m.from, m.entries as TranscriptEntry[], MAX_MESSAGE_LENGTH).ok) return `${type} the peer rules refuse`
    return null
  }
  const checked = validateChatMessage(value)
  if (!checked.ok) return `an invalid ${typeof type === 'string' ? type.slice(0, 20) : typeof type}`
  const rules = checkPeerMessage(checked.value)
  return rules.ok ? null : `${type} the peer rules refuse`
}

/** The same rule on the JS value as sent. */
export const acceptedAfterAuth = (sent: unknown, peerAddress: string) => refusalAfterAuth(roundTrip(sent), peerAddress) === null

/** Whether the listener at `self` takes `sent` as a dialer's hello (and answers with hello_ack). */
export function acceptedAsHello(sent: unknown, self: HandshakeSelf): boolean {
  return listenerOnHello(self, roundTrip(sent), new Uint8Array(NONCE_BYTES)).ok
}

/**
 * Replays the node's inbound handling over `chunks`. `authenticatedAs` is the address a genuine
 * handshake (already done, not in `chunks`) claimed; null for a connection that starts from
 * nothing. `self` is the listener as the node would be (its address and the cluster secret).
 */
export function nodeVerdict(chunks: Uint8Array[], self: HandshakeSelf, authenticatedAs: string | null): Verdict {
  const decoder = new FrameDecoder(authenticatedAs === null ? HANDSHAKE_MAX_FRAME_BYTES : DEFAULT_MAX_FRAME_BYTES)
  let phase: { name: 'hello' } | { name: 'auth'; state: ListenerState } | { name: 'open'; peer: string } =
    authenticatedAs === null ? { name: 'hello' } : { name: 'open', peer: authenticatedAs }
  for (const chunk of chunks) {
    try {
      decoder.append(chunk)
    } catch {
      return { outcome: 'refused', why: 'bytes after a framing error' }
    }
    for (;;) {
      let value: unknown
      try {
        value = decoder.next()
      } catch (error) {
        return { outcome: 'refused', why: `a framing error (${(error as Error).message.slice(0, 60)})` }
      }
      if (value === NO_FRAME) break
      if (phase.name === 'hello') {
        // The node's nonce is its own; ours here only has to be the right size.
        const answer = listenerOnHello(self, value, new Uint8Array(NONCE_BYTES).fill(7))
        if (!answer.ok) return { outcome: 'refused', why: `a first frame that is no acceptable hello` }
        phase = { name: 'auth', state: answer.value.state }
      } else if (phase.name === 'auth') {
        // A proof made for another nonce (replayed, forged, made with another secret) fails here as
        // it does on the node; only the real dialer answering the node's own hello_ack passes.
        const peer = listenerOnAuth(phase.state, value)
        if (!peer.ok || self.secrets.length > 0) return { outcome: 'refused', why: 'an auth frame that does not prove the secret' }
        phase = { name: 'open', peer: peer.value.address }
        decoder.maxFrameBytes = DEFAULT_MAX_FRAME_BYTES
      } else {
        const why = refusalAfterAuth(value, phase.peer)
        if (why !== null) return { outcome: 'refused', why }
      }
    }
  }
  return phase.name === 'open' ? { outcome: 'open' } : { outcome: 'waiting' }
}

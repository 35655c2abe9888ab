// Property-based tests of the cluster port's boundaries: whatever bytes or values a peer sends,
// the frame decoder and the validators answer with their documented refusal (a FrameError, an
// `{ ok: false }`), never another exception, and never accept a value its schema does not allow.
import { describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { randomBytes } from 'node:crypto'
import { encodeFrame, FrameDecoder, FrameError } from '../../src/cluster/codec'
import { listenerOnAuth, listenerOnHello, NONCE_BYTES, dialerOnAck, dialerStart } from '../../src/cluster/handshake'
import { MAX_TERM, RaftMessage, validateRaftMessage } from '../../src/cluster/messages'
import { ChatMessage, validateChatMessage } from '../../src/chat/messages'
import { checkPeerMessage, checkProposal } from '../../src/chat/peer-rules'
import { validateUsername } from '../../src/chat/protocol'
import { validateTranscriptEntry, type TranscriptEntry } from '../../src/transcript/entries'
import { validatorFor } from '../../src/cluster/validate'

const RUNS = 300
const validateAll = validatorFor([...RaftMessage.anyOf, ...ChatMessage.anyOf])

/** Splits `bytes` at the given cut points (any order, any repeats). */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  const parts: Uint8Array[] = []
  let at = 0
  for (const p of points) {
    parts.push(bytes.subarray(at, p))
    at = p
  }
  parts.push(bytes.subarray(at))
  return parts
}

/** Any value msgpack can carry, nested a little. */
const anyValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }), // what msgpack can carry
    fc.string(),
    fc.uint8Array({ maxLength: 40 }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 8 }), tie('value'), { maxKeys: 4 }),
  ),
})).value

const TYPES = ['hello', 'hello_ack', 'auth', 'chat', 'presence_snapshot', 'presence_join', 'presence_leave', 'join_request', 'leave_request',
  'leader_hint', 'not_member', 'append_entries', 'append_response', 'vote_request', 'vote_response', 'timeout_now', '__proto__', 'constructor']

/** Objects with a real message type and arbitrary other fields: structurally close, wrong in detail. */
const typedJunk = fc.record({ type: fc.constantFrom(...TYPES) }).chain((base) =>
  fc.dictionary(fc.constantFrom('from', 'to', 'term', 'entries', 'member', 'username', 'message', 'nodeAddress', 'timestamp', 'users', 'user', 'nonce', 'proof', 'proofs', 'version', 'address'), anyValue, { maxKeys: 8 })
    .map((rest) => ({ ...rest, ...base })),
)

/** Valid-looking Raft messages with hostile numbers. */
const hostileNumber = fc.oneof(fc.constant(2 ** 53), fc.constant(MAX_TERM + 1), fc.constant(-1), fc.constant(1.5), fc.constant(Number.NaN), fc.constant(Infinity), fc.double())
const hostileVote = fc.record({
  type: fc.constant('vote_request'),
  from: fc.string({ maxLength: 20 }),
  to: fc.string({ maxLength: 20 }),
  term: hostileNumber,
  lastIndex: fc.nat(),
  lastTerm: fc.nat(),
  preVote: fc.boolean(),
  transfer: fc.boolean(),
})

describe('frame decoder (property)', () => {
  test('arbitrary bytes, split arbitrarily, yield values or a FrameError, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(), { maxLength: 8 }), fc.integer({ min: 0, max: 64 }), (bytes, cuts, limit) => {
        const decoder = new FrameDecoder(limit)
        try {
          for (const part of split(bytes, cuts)) decoder.push(part)
        } catch (error) {
          expect(error).toBeInstanceOf(FrameError)
          // and once failed it stays failed, with the same error
          expect(() => decoder.push(new Uint8Array([0]))).toThrow(error as Error)
        }
      }),
      { numRuns: RUNS },
    )
  })

  test('frames of arbitrary values come out whole and in order however the stream is split', () => {
    fc.assert(
      fc.property(fc.array(anyValue, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 10 }), (values, cuts) => {
        const frames = values.map((v) => encodeFrame(v))
        const stream = new Uint8Array(frames.reduce((n, f) => n + f.length, 0))
        let at = 0
        for (const f of frames) stream.set(f, (at += f.length) - f.length)
        const decoder = new FrameDecoder(1 << 20)
        const out = split(stream, cuts).flatMap((part) => decoder.push(part))
        expect(out.length).toBe(values.length)
        // msgpack decodes what it encoded (modulo representation: compare re-encodings)
        out.forEach((v, i) => expect(encodeFrame(v)).toEqual(frames[i]!))
      }),
      { numRuns: RUNS },
    )
  })

  test('a corrupted frame stream never throws anything but FrameError', () => {
    fc.assert(
      fc.property(fc.array(anyValue, { minLength: 1, maxLength: 3 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }), (values, flips) => {
        const stream = Uint8Array.from(values.flatMap((v) => [...encodeFrame(v)]))
        for (const [at, byte] of flips) stream[at % stream.length] = byte
        const decoder = new FrameDecoder(4096)
        try {
          decoder.push(stream)
        } catch (error) {
          expect(error).toBeInstanceOf(FrameError)
        }
      }),
      { numRuns: RUNS },
    )
  })
})

describe('cluster message validation (property)', () => {
  const refusesWithoutThrowing = (validate: (v: unknown) => { ok: boolean }) => (value: unknown) => {
    let result: { ok: boolean; error?: unknown } | undefined
    expect(() => (result = validate(value))).not.toThrow()
    if (!result!.ok) expect(typeof result!.error).toBe('string')
  }

  test('arbitrary values never throw out of the validators', () => {
    fc.assert(fc.property(anyValue, refusesWithoutThrowing(validateAll)), { numRuns: RUNS })
    fc.assert(fc.property(anyValue, refusesWithoutThrowing(validateRaftMessage)), { numRuns: RUNS })
    fc.assert(fc.property(anyValue, refusesWithoutThrowing(validateChatMessage)), { numRuns: RUNS })
  })

  test('structurally close but wrong messages are refused, never thrown on', () => {
    fc.assert(
      fc.property(typedJunk, (value) => {
        refusesWithoutThrowing(validateAll)(value)
      }),
      { numRuns: RUNS * 3 },
    )
  })

  test('terms that are not safe whole numbers up to 2^48 are always refused', () => {
    fc.assert(
      fc.property(hostileVote, (vote) => {
        const result = validateRaftMessage(vote)
        const fine = Number.isSafeInteger(vote.term) && vote.term >= 0 && vote.term <= MAX_TERM
        expect(result.ok).toBe(fine)
      }),
      { numRuns: RUNS },
    )
  })

  test('the chat layer never throws on a schema-valid proposal and accepts only entries of the peer itself', () => {
    const peer = { address: 'bun://S@127.0.0.1:1', incarnation: 'x' }
    const from = `${peer.address}#x`
    const entry = fc.record({
      type: fc.constantFrom('chat' as const, 'join' as const, 'leave' as const),
      origin: fc.constantFrom(from, 'bun://S@127.0.0.1:2#x', ''),
      seq: fc.nat(),
      key: fc.string({ maxLength: 20 }),
      username: fc.string({ maxLength: 40 }),
      message: fc.string({ maxLength: 60 }),
      nodeAddress: fc.constantFrom(peer.address, 'bun://S@127.0.0.1:2', ''),
      timestamp: fc.nat(),
    })
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 4 }), (entries) => {
        const valid = entries.map((e) => (e.type === 'chat' ? e : { ...e, message: undefined })).map((e) => validateTranscriptEntry(JSON.parse(JSON.stringify(e))))
        if (!valid.every((v) => v.ok)) return
        const result = checkProposal(peer, from, entries as TranscriptEntry[], 50)
        if (result.ok) {
          for (const e of entries) {
            expect(e.origin).toBe(from)
            expect(e.nodeAddress).toBe(peer.address)
            expect(validateUsername(e.username)).toEqual({ ok: true, value: e.username })
            if (e.type === 'chat') {
              expect(e.message).not.toMatch(/[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/)
              expect([...e.message].length).toBeLessThanOrEqual(50)
              expect(e.message.trim()).not.toBe('')
            }
          }
        }
      }),
      { numRuns: RUNS },
    )
  })

  test('presence from a peer is refused unless every name is canonical and valid, never with an exception', () => {
    const user = fc.record({ username: fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('alice', '김철수', 'Jose\u0301', ' pad')), connectedAt: fc.nat() })
    const message = fc.oneof(
      fc.record({ type: fc.constant('presence_snapshot' as const), users: fc.array(user, { maxLength: 4 }) }),
      fc.record({ type: fc.constant('presence_join' as const), user }),
      fc.record({ type: fc.constant('presence_leave' as const), username: user.map((u) => u.username) }),
    )
    fc.assert(
      fc.property(message, (m) => {
        const result = checkPeerMessage(m)
        const names = m.type === 'presence_snapshot' ? m.users.map((u) => u.username) : m.type === 'presence_join' ? [m.user.username] : [m.username]
        const fine = names.every((n) => validateUsername(n).ok && (validateUsername(n) as { value: string }).value === n) && new Set(names).size === names.length
        expect(result.ok).toBe(fine)
      }),
      { numRuns: RUNS },
    )
  })

  test('the handshake refuses arbitrary and near-miss frames at every step without throwing', () => {
    const self = { systemName: 'S', address: 'bun://S@127.0.0.1:2', incarnation: 'l', secrets: ['a-secret-for-the-test'] }
    const dialer = { ...self, address: 'bun://S@127.0.0.1:1', incarnation: 'd' }
    const d = dialerStart(dialer, self.address, new Uint8Array(randomBytes(NONCE_BYTES)))
    const l = listenerOnHello(self, d.hello, new Uint8Array(randomBytes(NONCE_BYTES)))
    if (!l.ok) throw new Error(l.error)
    fc.assert(
      fc.property(fc.oneof(anyValue, typedJunk), (value) => {
        expect(listenerOnHello(self, value, new Uint8Array(NONCE_BYTES)).ok).toBe(false)
        expect(listenerOnAuth(l.value.state, value).ok).toBe(false)
        expect(dialerOnAck(d, value).ok).toBe(false)
      }),
      { numRuns: RUNS },
    )
    // a real auth frame with any other 32 bytes for its proof
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (proof) => {
        expect(listenerOnAuth(l.value.state, { type: 'auth', proof }).ok).toBe(false)
      }),
      { numRuns: RUNS },
    )
  })
})

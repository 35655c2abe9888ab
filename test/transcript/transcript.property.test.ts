// Properties of the transcript as a replicated state machine (fast-check): transcripts fed the
// same committed entries hold the same state, whether they applied every entry or started from
// a snapshot taken midway; and the per-origin rules hold whatever the log holds.
import { describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import type { Entry } from '../../src/cluster/messages'
import type { TranscriptEntry } from '../../src/transcript/entries'
import { Transcript } from '../../src/transcript/transcript'
import { node, origin } from './log'

const RUNS = 300
const NAMES = ['alice', 'bob', 'carol', 'dave']

/** One committed entry, as a log holding retries, gaps, repeats, moves and removals would have it. */
const entry: fc.Arbitrary<Entry> = fc.oneof(
  { weight: 8, arbitrary: fc.record({
    type: fc.constantFrom('chat' as const, 'join' as const, 'leave' as const),
    n: fc.integer({ min: 1, max: 3 }),
    incarnation: fc.constantFrom('i1', 'i2'),
    seq: fc.integer({ min: 1, max: 8 }),
    key: fc.integer({ min: 0, max: 12 }),
    name: fc.constantFrom(...NAMES),
    // Joins and leaves of several names at once, repeats among them, as a storm gathers them.
    more: fc.array(fc.constantFrom(...NAMES), { maxLength: 3 }),
    size: fc.integer({ min: 0, max: 40 }),
    timestamp: fc.nat({ max: 1_000_000 }),
  }).map(({ type, n, incarnation, seq, key, name, more, size, timestamp }): Entry => {
    const base = { origin: origin(n, incarnation), seq, key: `k${key}`, nodeAddress: node(n), timestamp }
    const data: TranscriptEntry = type === 'chat' ? { type, ...base, username: name, message: 'x'.repeat(size) } : { type, ...base, usernames: [name, ...more] }
    return { term: 1, change: { type: 'app', data } }
  }) },
  { weight: 1, arbitrary: fc.constant<Entry>({ term: 1, change: { type: 'noop' } }) },
  { weight: 1, arbitrary: fc.record({ n: fc.integer({ min: 1, max: 3 }), incarnation: fc.constantFrom('i1', 'i2') }).map(({ n, incarnation }): Entry => ({ term: 1, change: { type: 'remove', id: origin(n, incarnation), reason: 'down' } })) },
)

const founder: Entry = { term: 1, change: { type: 'add', member: { address: node(1), incarnation: 'i1', httpUrl: 'http://h1' } } }

function feed(t: Transcript, entries: Entry[], from = 1): void {
  entries.forEach((e, i) => t.apply(from + i, e))
}

function newTranscript(historySize: number): Transcript {
  const t = new Transcript(historySize)
  t.restore(0, null)
  return t
}

/** Everything observable of a transcript's state. */
function state(t: Transcript) {
  return { snapshot: t.snapshot(), lines: t.after(0), coveredFrom: t.coveredFrom, applied: t.applied, epoch: t.epoch }
}

describe('transcript properties', () => {
  test('two transcripts fed the same entries, one restored from a snapshot midway, stay identical', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 80 }), fc.nat(), fc.integer({ min: 1, max: 20 }), (tail, cut, historySize) => {
        const log = [founder, ...tail]
        const at = cut % (log.length + 1)
        const whole = newTranscript(historySize)
        const restored = newTranscript(historySize)
        feed(whole, log.slice(0, at))
        // The snapshot travels as a message: the receiver gets a copy, never the sender's objects.
        restored.restore(at, structuredClone(whole.snapshot()))
        expect(state(restored)).toEqual(state(whole))
        feed(whole, log.slice(at), at + 1)
        feed(restored, log.slice(at), at + 1)
        expect(state(restored)).toEqual(state(whole))
        // And either equals a third that applied everything in one go.
        const direct = newTranscript(historySize)
        feed(direct, log)
        expect(state(direct).lines).toEqual(state(whole).lines)
        expect(state(direct).snapshot).toEqual(state(whole).snapshot)
      }),
      { numRuns: RUNS },
    )
  })

  test('a snapshot restored twice in a chain (a follower of a follower) is the same state', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 60 }), fc.nat(), fc.nat(), (tail, c1, c2) => {
        const log = [founder, ...tail]
        const a = c1 % (log.length + 1)
        const b = a + (c2 % (log.length - a + 1))
        const whole = newTranscript(10)
        const chained = newTranscript(10)
        feed(whole, log.slice(0, a))
        chained.restore(a, structuredClone(whole.snapshot()))
        feed(whole, log.slice(a, b), a + 1)
        feed(chained, log.slice(a, b), a + 1)
        const again = newTranscript(10)
        again.restore(b, structuredClone(chained.snapshot()))
        feed(whole, log.slice(b), b + 1)
        feed(again, log.slice(b), b + 1)
        expect(state(again)).toEqual(state(whole))
      }),
      { numRuns: RUNS },
    )
  })

  test('whatever the log holds: ids increase, each key makes at most one line, each origin\'s chat lines keep their sequence order', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 120 }), (tail) => {
        const t = newTranscript(1_000)
        const log = [founder, ...tail]
        feed(t, log)
        const lines = t.after(0)
        const ids = lines.map((l) => l.id)
        expect(ids).toEqual([...new Set(ids)].sort((x, y) => x - y))
        const chatKeys = new Map<string, number>()
        const seqs = new Map<string, number[]>()
        for (const line of lines) {
          const e = (log[line.id - 1]!.change as { data?: TranscriptEntry }).data
          if (line.type !== 'chat' || !e) continue
          expect(chatKeys.has(e.key)).toBe(false)
          chatKeys.set(e.key, line.id)
          seqs.set(e.origin, [...(seqs.get(e.origin) ?? []), e.seq])
        }
        for (const s of seqs.values()) expect(s).toEqual([...s].sort((x, y) => x - y))
      }),
      { numRuns: RUNS },
    )
  })
})

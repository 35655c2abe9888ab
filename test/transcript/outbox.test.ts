// The origin side of the transcript: what a node proposed and has not seen applied.
import { describe, expect, test } from 'bun:test'
import { Outbox, type Draft } from '../../src/transcript/outbox'
import { Transcript } from '../../src/transcript/transcript'
import { HandLog, node, origin } from './log'

const chat = (key: string, message = key): Draft => ({ type: 'chat', key, username: 'alice', message, nodeAddress: node(1), timestamp: 1 })

function outbox(maxPending = 10, retryMs = 500) {
  const o = new Outbox({ maxPending, retryMs })
  o.setOrigin(origin(1))
  return o
}

describe('Outbox', () => {
  test('numbers entries in sequence under its origin, and refuses past maxPending', () => {
    const o = outbox(2)
    expect(o.add(chat('a'), 0)).toMatchObject({ origin: origin(1), seq: 1, key: 'a' })
    expect(o.add(chat('b'), 0)).toMatchObject({ seq: 2 })
    expect(o.full).toBe(true)
    expect(o.add(chat('c'), 0)).toBeNull()
    expect(o.size).toBe(2)
  })

  test('oldestWait: how long the oldest pending entry has waited since it was last proposed; proposing it again starts the wait anew', () => {
    const o = outbox(10, 500)
    expect(o.oldestWait(100)).toBe(0)
    o.add(chat('a'), 100)
    o.add(chat('b'), 130)
    expect(o.oldestWait(160)).toBe(60)
    o.settle([{ origin: origin(1), seq: 1, key: 'a', id: 1 }], 170)
    expect(o.oldestWait(170)).toBe(40) // b's wait
    // Held through a partition, then proposed again to the new leader: it waits from then.
    expect(o.due(2_000, true)).toHaveLength(1)
    expect(o.oldestWait(2_010)).toBe(10)
  })

  test('settles what the transcript took of its own origin, with ids; skipped ones are done without an id', () => {
    const o = outbox()
    for (const k of ['a', 'b', 'c', 'd']) o.add(chat(k), 0)
    expect(o.settle([{ origin: origin(2), seq: 1, key: 'x', id: 9 }], 1)).toEqual([])
    expect(o.size).toBe(4)
    const done = o.settle([{ origin: origin(1), seq: 1, key: 'a', id: 5 }], 1)
    expect(done).toEqual([{ entry: expect.objectContaining({ key: 'a', seq: 1 }), id: 5 }])
    // Taken in sequence: an acceptance of 3 means 2 was taken (its acceptance seen elsewhere).
    expect(o.settle([{ origin: origin(1), seq: 3, key: 'c', id: 7 }], 1).map((d) => [d.entry.key, d.id])).toEqual([['c', 7]])
    expect(o.size).toBe(1)
    // A repeat acceptance of something settled already changes nothing.
    expect(o.settle([{ origin: origin(1), seq: 3, key: 'c', id: 7 }], 1)).toEqual([])
    expect(o.size).toBe(1)
  })

  test('after a snapshot: everything below the transcript\'s next sequence is done, with ids found by key', () => {
    const o = outbox()
    for (const k of ['a', 'b', 'c']) o.add(chat(k), 0)
    const ids: Record<string, number> = { a: 4 }
    const done = o.settleUpTo(3, (key) => ids[key], 1)
    expect(done.map((d) => [d.entry.key, d.id])).toEqual([['a', 4], ['b', undefined]])
    expect(o.size).toBe(1)
  })

  test('due: everything pending on a leader change, or after retryMs without progress; not before', () => {
    const o = outbox(10, 500)
    expect(o.due(0, true)).toEqual([])
    o.add(chat('a'), 100)
    o.add(chat('b'), 200)
    expect(o.due(599, false)).toEqual([])
    expect(o.due(600, false).map((e) => e.key)).toEqual(['a', 'b'])
    expect(o.due(700, false)).toEqual([]) // proposed again at 600: wait another retryMs
    expect(o.due(701, true).map((e) => e.key)).toEqual(['a', 'b'])
    // Progress (something settled) puts the retry off.
    o.settle([{ origin: origin(1), seq: 1, key: 'a', id: 3 }], 1_100)
    expect(o.due(1_500, false)).toEqual([])
    expect(o.due(1_600, false).map((e) => e.key)).toEqual(['b'])
  })

  test('a new origin (a rejoin as a new incarnation) numbers what is pending afresh, keys unchanged', () => {
    const o = outbox()
    o.add(chat('a'), 0)
    o.add(chat('b'), 0)
    o.settle([{ origin: origin(1), seq: 1, key: 'a', id: 3 }], 0)
    o.setOrigin(origin(1, 'i2'))
    expect(o.due(0, true).map((e) => [e.origin, e.seq, e.key])).toEqual([[origin(1, 'i2'), 1, 'b']])
    expect(o.add(chat('c'), 0)).toMatchObject({ origin: origin(1, 'i2'), seq: 2 })
    o.setOrigin(origin(1, 'i2')) // the same origin again changes nothing
    expect(o.due(0, true).map((e) => e.seq)).toEqual([1, 2])
  })

  test('with a transcript: proposals lost, repeated and reordered on the way each land once, in order', () => {
    const t = new Transcript(100)
    t.restore(0, null)
    const log = new HandLog([t])
    log.found()
    const o = outbox()
    const sent = ['one', 'two', 'three'].map((k) => o.add(chat(k), 0)!)
    // The log receives: two (ignored, one missing), one, one again, then the retry of everything.
    for (const e of [sent[1]!, sent[0]!, sent[0]!]) log.app(e)
    const acked = o.settle(t.takeAccepted(), 1).map((d) => d.entry.key)
    for (const e of o.due(1_000, false)) log.app(e)
    acked.push(...o.settle(t.takeAccepted(), 1_000).map((d) => d.entry.key))
    expect(acked).toEqual(['one', 'two', 'three'])
    expect(t.after(0).map((l) => (l.type === 'chat' ? l.message : ''))).toEqual(['one', 'two', 'three'])
    expect(o.size).toBe(0)
  })
})

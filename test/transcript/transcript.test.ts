// The transcript state machine, rule by rule (the rules are listed at the top of
// src/transcript/transcript.ts), on hand-written logs (./log.ts).
import { describe, expect, test } from 'bun:test'
import { pack } from 'msgpackr'
import { validateTranscriptSnapshot } from '../../src/transcript/entries'
import { DEDUP_WINDOW, keyHash, Transcript } from '../../src/transcript/transcript'
import { HandLog, node, origin } from './log'

function fresh(historySize = 100): { t: Transcript; log: HandLog } {
  const t = new Transcript(historySize)
  t.restore(0, null) // what the membership core does first
  const log = new HandLog([t])
  log.found()
  return { t, log }
}

const texts = (t: Transcript) => t.after(0).map((l) => (l.type === 'chat' ? l.message : `${l.event}:${l.usernames.join(',')}`))

describe('epoch and ids', () => {
  test('the epoch is the founder\'s id, from index 1 only; a line\'s id is its log index', () => {
    const t = new Transcript(10)
    t.restore(0, null)
    expect(t.epoch).toBe('')
    const log = new HandLog([t])
    log.found(3)
    expect(t.epoch).toBe(origin(3))
    log.add(1)
    log.noop()
    expect(t.epoch).toBe(origin(3))
    const id = log.chat(1, 1, 'k', 'alice', 'hi')
    expect(t.after(0)).toEqual([{ type: 'chat', id, username: 'alice', message: 'hi', nodeAddress: node(1), timestamp: log.clock }])
    expect(t.applied).toBe(id)
    expect(t.lastId).toBe(id)
    log.noop()
    expect(t.applied).toBe(id + 1)
    expect(t.lastId).toBe(id)
  })
})

describe('the sequence gate: each origin\'s entries once, in order', () => {
  test('a repeat of an entry already taken makes no line, and reports the id the first one got', () => {
    const { t, log } = fresh()
    const first = log.chat(1, 1, 'k1', 'alice', 'one')
    t.takeAccepted()
    log.chat(1, 1, 'k1', 'alice', 'one') // proposed again after a leader change
    expect(texts(t)).toEqual(['one'])
    expect(t.takeAccepted()).toEqual([{ origin: origin(1), seq: 1, key: 'k1', id: first }])
    expect(t.nextSeqOf(origin(1))).toBe(2)
  })

  test('an entry that skips ahead is ignored; the origin proposes again from the gap and everything lands in order', () => {
    const { t, log } = fresh()
    log.chat(1, 2, 'k2', 'alice', 'two') // seq 1 was lost on the way
    log.chat(1, 3, 'k3', 'alice', 'three')
    expect(texts(t)).toEqual([])
    expect(t.takeAccepted()).toEqual([])
    expect(t.nextSeqOf(origin(1))).toBe(1)
    log.chat(1, 1, 'k1', 'alice', 'one')
    log.chat(1, 2, 'k2', 'alice', 'two')
    log.chat(1, 3, 'k3', 'alice', 'three')
    expect(texts(t)).toEqual(['one', 'two', 'three'])
    expect(t.takeAccepted().map((a) => a.seq)).toEqual([1, 2, 3])
  })

  test('origins are independent: one origin\'s gap holds back no other', () => {
    const { t, log } = fresh()
    log.chat(1, 2, 'a2', 'alice', 'a2')
    log.chat(2, 1, 'b1', 'bob', 'b1')
    log.chat(1, 1, 'a1', 'alice', 'a1')
    log.chat(2, 2, 'b2', 'bob', 'b2')
    log.chat(1, 2, 'a2', 'alice', 'a2')
    expect(texts(t)).toEqual(['b1', 'a1', 'b2', 'a2'])
    expect(t.nextSeqOf(origin(1))).toBe(3)
    expect(t.nextSeqOf(origin(2))).toBe(3)
    expect(t.nextSeqOf(origin(3))).toBe(1)
  })
})

describe('key dedup', () => {
  test('the same key from another origin (a clientMsgId sent again to another node) gets the first id and no line', () => {
    const { t, log } = fresh()
    const first = log.chat(1, 1, 'c:alice:m1', 'alice', 'hello')
    t.takeAccepted()
    log.chat(2, 1, 'c:alice:m1', 'alice', 'hello')
    expect(texts(t)).toEqual(['hello'])
    expect(t.takeAccepted()).toEqual([{ origin: origin(2), seq: 1, key: 'c:alice:m1', id: first }])
    // The repeat still took its place in node 2's sequence.
    expect(t.nextSeqOf(origin(2))).toBe(2)
    expect(t.idOfKey('c:alice:m1')).toBe(first)
    expect(t.idOfKey('c:alice:never')).toBeUndefined()
  })

  test('a key is remembered for the last DEDUP_WINDOW keys only', () => {
    const { t, log } = fresh(2 * DEDUP_WINDOW)
    log.chat(1, 1, 'old', 'alice', 'first time')
    for (let i = 0; i < DEDUP_WINDOW - 1; i++) log.chat(2, i + 1, `k${i}`, 'bob', 'x')
    log.chat(1, 2, 'old', 'alice', 'still a repeat')
    expect(texts(t).filter((m) => m !== 'x')).toEqual(['first time'])
    log.chat(2, DEDUP_WINDOW, 'one more', 'bob', 'x') // pushes 'old' out
    expect(t.idOfKey('old')).toBeUndefined()
    log.chat(1, 3, 'old', 'alice', 'new again')
    expect(texts(t).filter((m) => m !== 'x')).toEqual(['first time', 'new again'])
  })

  test('keys are stored as fixed-size hashes', () => {
    expect(keyHash('')).toMatch(/^[0-9a-f]{16}$/)
    expect(keyHash('x'.repeat(200))).toMatch(/^[0-9a-f]{16}$/)
    expect(keyHash('a')).not.toBe(keyHash('b'))
    expect(keyHash('c:alice:1')).not.toBe(keyHash('c:alice:2'))
  })
})

describe('join and leave lines', () => {
  test('a join and a leave make a line each', () => {
    const { t, log } = fresh()
    const j = log.join(1, 1, 'alice')
    const l = log.leave(1, 2, 'alice')
    expect(t.after(0)).toEqual([
      { type: 'system', id: j, event: 'join', usernames: ['alice'], timestamp: expect.any(Number) },
      { type: 'system', id: l, event: 'leave', usernames: ['alice'], timestamp: expect.any(Number) },
    ])
  })

  test('a user moving between nodes (joins the next before leaving the last) makes no line', () => {
    const { t, log } = fresh()
    log.join(1, 1, 'alice')
    log.join(2, 1, 'alice')
    log.leave(1, 2, 'alice')
    expect(texts(t)).toEqual(['join:alice'])
    log.leave(2, 2, 'alice')
    expect(texts(t)).toEqual(['join:alice', 'leave:alice'])
  })

  test('a move whose leave lands first is a leave and a join', () => {
    const { t, log } = fresh()
    log.join(1, 1, 'alice')
    log.leave(1, 2, 'alice')
    log.join(2, 1, 'alice')
    expect(texts(t)).toEqual(['join:alice', 'leave:alice', 'join:alice'])
  })

  test('a name admitted on two nodes at once: the one that gives way leaves without a line; the other\'s leave is one later', () => {
    const { t, log } = fresh()
    log.join(1, 1, 'sam')
    log.join(2, 1, 'sam')
    log.leave(2, 2, 'sam') // closed with 4409 on node 2
    expect(texts(t)).toEqual(['join:sam'])
    log.leave(1, 2, 'sam')
    expect(texts(t)).toEqual(['join:sam', 'leave:sam'])
  })

  test('a leave of a name not online, or from a node it is not at, makes no line; a join repeated by the same node makes none', () => {
    const { t, log } = fresh()
    log.leave(1, 1, 'ghost')
    log.join(1, 2, 'alice')
    log.leave(2, 1, 'alice')
    log.join(1, 3, 'alice') // Up again after a rejoin: the node proposes its users' joins again
    expect(texts(t)).toEqual(['join:alice'])
    log.leave(1, 4, 'alice')
    expect(texts(t)).toEqual(['join:alice', 'leave:alice'])
  })
})

describe('node removal', () => {
  test('a removed node\'s users leave in one line, in the order they joined; users also online elsewhere stay', () => {
    const { t, log } = fresh()
    log.add(2)
    log.add(3)
    log.join(3, 1, 'carol')
    log.join(2, 1, 'bob')
    log.join(3, 2, 'dave')
    log.join(3, 3, 'erin')
    log.join(2, 2, 'erin') // erin is moving to node 2
    const last = t.after(0).at(-1)!.timestamp
    const removal = log.remove(3)
    expect(t.after(0).at(-1)).toEqual({ type: 'system', id: removal, event: 'leave', usernames: ['carol', 'dave'], timestamp: last })
    // Node 3's sequence is gone with it; erin's later leave from node 2 is a line.
    expect(t.nextSeqOf(origin(3))).toBe(1)
    log.leave(2, 3, 'erin')
    expect(texts(t).at(-1)).toBe('leave:erin')
    // The removal of a node without users makes no line.
    const before = t.after(0).length
    log.add(4)
    log.remove(4)
    expect(t.after(0).length).toBe(before)
  })
})

describe('history', () => {
  test('a ring of --history-size lines; coveredFrom and covers() say what is held', () => {
    const { t, log } = fresh(3)
    expect(t.coveredFrom).toBe(1)
    expect(t.covers(0)).toBe(true)
    const ids = ['a', 'b', 'c', 'd', 'e'].map((m, i) => log.chat(1, i + 1, m, 'alice', m))
    expect(texts(t)).toEqual(['c', 'd', 'e'])
    expect(t.coveredFrom).toBe(ids[1]! + 1)
    expect(t.covers(ids[1]!)).toBe(true) // everything after b is held
    expect(t.covers(ids[0]!)).toBe(false) // b is not
    expect(t.covers(0)).toBe(false)
  })

  test('after, before and latest, by id, oldest first', () => {
    const { t, log } = fresh()
    log.noop()
    const a = log.chat(1, 1, 'a', 'alice', 'a')
    log.noop() // ids have gaps: not every index is a line
    const b = log.chat(1, 2, 'b', 'alice', 'b')
    const c = log.chat(1, 3, 'c', 'alice', 'c')
    const msgs = (lines: ReturnType<Transcript['after']>) => lines.map((l) => (l.type === 'chat' ? l.message : l.event))
    expect(msgs(t.after(0))).toEqual(['a', 'b', 'c'])
    expect(msgs(t.after(a))).toEqual(['b', 'c'])
    expect(msgs(t.after(a + 1))).toEqual(['b', 'c'])
    expect(msgs(t.after(c))).toEqual([])
    expect(msgs(t.before(c, 10))).toEqual(['a', 'b'])
    expect(msgs(t.before(c, 1))).toEqual(['b'])
    expect(msgs(t.before(b, 10))).toEqual(['a'])
    expect(msgs(t.before(a, 10))).toEqual([])
    expect(msgs(t.latest(2))).toEqual(['b', 'c'])
    expect(msgs(t.latest(10))).toEqual(['a', 'b', 'c'])
  })

  test('lines not yet delivered are kept past the ring\'s size, then dropped once delivered', () => {
    const { t, log } = fresh(2)
    const a = log.chat(1, 1, 'a', 'alice', 'a')
    t.deliveredUpTo(a)
    for (const [i, m] of ['b', 'c', 'd', 'e'].entries()) log.chat(1, i + 2, m, 'alice', m)
    // One step applied four lines into a ring of two: none after the delivered one is dropped.
    expect(texts(t)).toEqual(['b', 'c', 'd', 'e'])
    expect(t.covers(a)).toBe(true)
    t.deliveredUpTo(t.lastId)
    expect(texts(t)).toEqual(['d', 'e'])
    expect(t.covers(a)).toBe(false)
    // A snapshot restored before delivery keeps the undelivered lines it carries, too.
    const { t: source, log: other } = fresh(100)
    for (const [i, m] of ['p', 'q', 'r', 's'].entries()) other.chat(1, i + 1, m, 'alice', m)
    const behind = new Transcript(2)
    behind.deliveredUpTo(source.after(0)[0]!.id)
    behind.restore(other.index, source.snapshot())
    expect(texts(behind)).toEqual(['q', 'r', 's'])
    expect(behind.covers(source.after(0)[0]!.id)).toBe(true)
  })

  test('long past the ring (its dead prefix dropped now and then), lookups stay right', () => {
    const { t, log } = fresh(5)
    const ids: number[] = []
    for (let i = 1; i <= 10_000; i++) ids.push(log.chat(1, i, `k${i}`, 'alice', `m${i}`))
    expect(texts(t)).toEqual(['m9996', 'm9997', 'm9998', 'm9999', 'm10000'])
    expect(t.after(ids[9997]!).map((l) => l.id)).toEqual(ids.slice(9998))
    expect(t.before(ids[9998]!, 100).map((l) => l.id)).toEqual(ids.slice(9995, 9998))
    expect(t.latest(2).map((l) => l.id)).toEqual(ids.slice(9998))
    expect(t.coveredFrom).toBe(ids[9994]! + 1)
  })
})

describe('snapshot and restore', () => {
  function busy(historySize: number) {
    const { t, log } = fresh(historySize)
    log.add(2)
    log.add(3)
    log.join(1, 1, 'alice')
    log.join(2, 1, 'bob')
    log.join(3, 1, 'carol')
    log.join(2, 2, 'alice') // moving
    for (let i = 0; i < 8; i++) log.chat(1 + (i % 3), 2 + Math.floor(i / 3) * 1 + (i % 3 === 1 ? 1 : 0), `k${i}`, ['alice', 'bob', 'carol'][i % 3]!, `line ${i}`)
    return { t, log }
  }

  test('a restored transcript holds the same state and behaves the same from then on', () => {
    const { t, log } = busy(6)
    const copy = new Transcript(6)
    copy.restore(log.index, structuredClone(t.snapshot()))
    expect(copy.restored).toBe(true)
    expect(copy.snapshot()).toEqual(t.snapshot())
    expect(copy.after(0)).toEqual(t.after(0))
    expect(copy.epoch).toBe(t.epoch)
    expect(copy.applied).toBe(t.applied)
    expect(copy.coveredFrom).toBe(t.coveredFrom)
    // The same entries after it: repeats, keys, moves, a removal, the ring moving on.
    const after = new HandLog([t, copy])
    after.index = log.index
    after.clock = log.clock
    after.chat(1, 1, 'k0', 'alice', 'a repeat of an old key')
    after.leave(1, 2, 'alice')
    after.chat(3, 9, 'gap', 'carol', 'skips ahead')
    after.remove(3)
    for (let i = 0; i < 10; i++) after.chat(2, 10 + i, `late${i}`, 'bob', `late ${i}`)
    after.leave(2, 20, 'alice')
    expect(copy.snapshot()).toEqual(t.snapshot())
    expect(copy.after(0)).toEqual(t.after(0))
    expect(copy.coveredFrom).toBe(t.coveredFrom)
  })

  test('a removed member\'s users leave in one line that reads the same on a transcript restored from a snapshot (seed 215787)', () => {
    const { t, log } = fresh(20)
    log.add(2)
    log.join(2, 1, 'carol')
    log.join(1, 1, 'alice')
    log.join(2, 2, 'bob')
    log.join(1, 2, 'bob') // moving: online at both
    // The snapshot groups who is online by node, so the copy learns bob before alice.
    const copy = new Transcript(20)
    copy.restore(log.index, structuredClone(t.snapshot()))
    const after = new HandLog([t, copy])
    after.index = log.index
    after.clock = log.clock
    after.leave(2, 3, 'bob') // now online at node 1 only
    after.remove(1)
    expect(texts(t).at(-1)).toBe('leave:alice,bob')
    expect(copy.after(0)).toEqual(t.after(0))
  })

  test('the snapshot of an empty log restores an empty transcript; (0, null) resets one', () => {
    const { t } = busy(10)
    t.restore(0, null)
    expect(t.after(0)).toEqual([])
    expect(t.epoch).toBe('')
    expect(t.restored).toBe(false)
    expect(t.coveredFrom).toBe(1)
    expect(t.nextSeqOf(origin(1))).toBe(1)
  })

  test('a snapshot passes its schema, and one restored on a node with a smaller --history-size keeps the newest lines', () => {
    const { t, log } = busy(50)
    const snapshot = t.snapshot()
    expect(validateTranscriptSnapshot(snapshot).ok).toBe(true)
    const small = new Transcript(3)
    small.restore(log.index, snapshot)
    expect(small.after(0)).toEqual(t.after(0).slice(-3))
    expect(small.covers(t.after(0).at(-4)!.id)).toBe(true)
    expect(small.covers(t.after(0).at(-5)!.id)).toBe(false)
  })

  test('past the size budget a snapshot keeps the newest lines that fit, and its coveredFrom says what it dropped', () => {
    const { t, log } = fresh(1_000)
    const ids: number[] = []
    for (let i = 1; i <= 100; i++) ids.push(log.chat(1, i, `k${i}`, 'alice', String(i % 10).repeat(16_000)))
    const snapshot = t.snapshot()
    expect(pack(snapshot).length).toBeLessThan(1024 * 1024)
    expect(snapshot.lines.length).toBeGreaterThan(10)
    expect(snapshot.lines.length).toBeLessThan(100)
    expect(snapshot.lines.at(-1)!.id).toBe(ids.at(-1)!)
    const copy = new Transcript(1_000)
    copy.restore(log.index, snapshot)
    const kept = copy.after(0)
    expect(kept.map((l) => l.id)).toEqual(ids.slice(ids.length - kept.length))
    // Every line from coveredFrom on is held, and the line just before the kept ones is not.
    expect(copy.covers(kept[0]!.id - 1)).toBe(true)
    expect(copy.covers(ids[ids.length - kept.length - 1]! - 1)).toBe(false)
    expect(copy.covers(0)).toBe(false)
    // Keys and sequences are whole: the dropped lines' keys are still repeats.
    log.machines.push(copy)
    log.chat(1, 1, 'k1', 'alice', 'again')
    expect(copy.after(0)).toEqual(kept)
    expect(copy.nextSeqOf(origin(1))).toBe(101)
  })
})

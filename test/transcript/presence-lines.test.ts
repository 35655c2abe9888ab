// Which join and leave entries a node proposes (src/transcript/presence-lines.ts): one per change
// in a small room, gathered in a big one, in the order they happened.
import { describe, expect, test } from 'bun:test'
import { PRESENCE_NAMES_MAX } from '../../src/transcript/entries'
import { PresenceLines, SMALL_ROOM } from '../../src/transcript/presence-lines'

const BIG = 20_000

describe('PresenceLines', () => {
  test('a small room gets one entry per join and per leave, at once, even with one in flight', () => {
    const p = new PresenceLines()
    expect(p.add('join', 'a', 1, SMALL_ROOM - 1, false)).toEqual([{ type: 'join', usernames: ['a'], timestamp: 1 }])
    expect(p.add('join', 'b', 2, SMALL_ROOM - 1, true)).toEqual([{ type: 'join', usernames: ['b'], timestamp: 2 }])
    expect(p.add('leave', 'a', 3, SMALL_ROOM - 1, true)).toEqual([{ type: 'leave', usernames: ['a'], timestamp: 3 }])
    expect(p.size).toBe(0)
  })

  test('in a big room a lone join goes at once; the next ones wait for it to land and for the spacing', () => {
    const p = new PresenceLines()
    expect(p.add('join', 'a', 1000, BIG, false)).toEqual([{ type: 'join', usernames: ['a'], timestamp: 1000 }])
    expect(p.add('join', 'b', 1001, BIG, true)).toEqual([])
    expect(p.add('join', 'c', 1002, BIG, true)).toEqual([])
    expect(p.due(1003, BIG, true)).toBeNull() // the first is still in flight
    expect(p.due(1003, BIG, false)).toBe(997) // a room of 20,000 gets a gathered line at most once a second
    expect(p.due(2000, BIG, false)).toBe(0)
    expect(p.flush(2000)).toEqual({ type: 'join', usernames: ['b', 'c'], timestamp: 1001 })
    expect(p.flush(2001)).toBeNull()
  })

  test('the spacing grows with the room: 1,000 users wait at most 50 ms', () => {
    const p = new PresenceLines()
    p.add('join', 'a', 0, 1_000, false)
    p.add('join', 'b', 10, 1_000, true)
    expect(p.due(10, 1_000, false)).toBe(40)
  })

  test('a change of kind sends what was held first, so a node\'s joins and leaves keep their order', () => {
    const p = new PresenceLines()
    p.add('join', 'a', 0, BIG, false)
    p.add('join', 'b', 1, BIG, true)
    expect(p.add('leave', 'b', 2, BIG, true)).toEqual([{ type: 'join', usernames: ['b'], timestamp: 1 }])
    // The leave waits: the join just taken is in flight now.
    expect(p.size).toBe(1)
    expect(p.flush(3)).toEqual({ type: 'leave', usernames: ['b'], timestamp: 2 })
  })

  test('an entry never holds more than PRESENCE_NAMES_MAX names', () => {
    const p = new PresenceLines()
    p.add('join', 'first', 0, BIG, false)
    const out = []
    for (let i = 0; i < PRESENCE_NAMES_MAX * 2 + 5; i++) out.push(...p.add('join', `u${i}`, 1, BIG, true))
    expect(out.map((g) => g.usernames.length)).toEqual([PRESENCE_NAMES_MAX, PRESENCE_NAMES_MAX])
    expect(p.size).toBe(5)
  })

  test('a room that shrank below SMALL_ROOM lets what is held go at once', () => {
    const p = new PresenceLines()
    p.add('leave', 'a', 0, BIG, false)
    p.add('leave', 'b', 1, BIG, true)
    expect(p.due(2, SMALL_ROOM - 1, true)).toBe(0)
  })
})

// The presence buffers and when they flush: net changes per user, leaves before joins, one frame
// per window after the first change of a quiet spell.
import { describe, expect, test } from 'bun:test'
import { LocalUsersBuffer, PEER_FRAME_USERS_MAX, PresenceBatch, PresenceDiffBuffer } from '../../src/chat/presence-batch'

const A = 'bun://S@127.0.0.1:2551'
const B = 'bun://S@127.0.0.1:2552'
const entry = (username: string, nodeAddress = A, connectedAt = 1) => ({ username, nodeAddress, connectedAt })

/** Applies a diff the way public/app.ts does: leaves (when listed at that node), then joins. */
function apply(list: Map<string, string>, diff: { joins: { username: string; nodeAddress: string }[]; leaves: { username: string; nodeAddress: string }[] }) {
  for (const u of diff.leaves) if (list.get(u.username) === u.nodeAddress) list.delete(u.username)
  for (const u of diff.joins) list.set(u.username, u.nodeAddress)
}

describe('PresenceDiffBuffer', () => {
  test('a join and a leave of the same user within one window is told as the leave (a `users` frame may have listed it)', () => {
    const b = new PresenceDiffBuffer()
    b.add({ event: 'join', user: entry('alice') })
    b.add({ event: 'leave', user: entry('alice') })
    expect(b.take()).toEqual({ joins: [], leaves: [entry('alice')] })
    expect(b.empty).toBe(true)
  })

  test('a leave then a join of the same user is told as both, so the newer entry wins', () => {
    const b = new PresenceDiffBuffer()
    b.add({ event: 'leave', user: entry('alice', A, 1) })
    b.add({ event: 'join', user: entry('alice', A, 2) })
    expect(b.take()).toEqual({ leaves: [entry('alice', A, 1)], joins: [entry('alice', A, 2)] })
  })

  test('leave, join, leave is one leave of the entry users hold', () => {
    const b = new PresenceDiffBuffer()
    b.add({ event: 'leave', user: entry('alice', A, 1) })
    b.add({ event: 'join', user: entry('alice', A, 2) })
    b.add({ event: 'leave', user: entry('alice', A, 2) })
    expect(b.take()).toEqual({ leaves: [entry('alice', A, 1)], joins: [] })
  })

  test('a name passing from one node to another: whatever the order within the window, a list ends right', () => {
    const b = new PresenceDiffBuffer()
    b.add({ event: 'leave', user: entry('alice', A) })
    b.add({ event: 'join', user: entry('alice', B) })
    b.add({ event: 'leave', user: entry('alice', B) })
    b.add({ event: 'join', user: entry('alice', A, 5) })
    const list = new Map([['alice', A]])
    apply(list, b.take()!)
    expect([...list]).toEqual([['alice', A]])
  })

  test('applied to the list before the window, any sequence of changes gives the list after it', () => {
    // Random sequences over three names and two nodes, each a valid history (a name is listed at
    // most once; a leave names where it is listed).
    let seed = 7
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n
    for (let run = 0; run < 500; run++) {
      const truth = new Map<string, string>()
      for (const name of ['a', 'b', 'c']) if (rnd(2)) truth.set(name, rnd(2) ? A : B)
      const before = new Map(truth)
      const b = new PresenceDiffBuffer()
      const cut = rnd(9)
      let middle = new Map(truth)
      for (let step = 0; step < 8; step++) {
        if (step === cut) middle = new Map(truth)
        const name = ['a', 'b', 'c'][rnd(3)]!
        const at = truth.get(name)
        if (at) {
          truth.delete(name)
          b.add({ event: 'leave', user: entry(name, at) })
        } else {
          const node = rnd(2) ? A : B
          truth.set(name, node)
          b.add({ event: 'join', user: entry(name, node) })
        }
      }
      const diff = b.take()
      if (diff) apply(before, diff)
      expect([...before].sort()).toEqual([...truth].sort())
      // A client that got a `users` frame in the middle of the window ends right too.
      if (diff) apply(middle, diff)
      expect([...middle].sort()).toEqual([...truth].sort())
    }
  })
})

describe('LocalUsersBuffer', () => {
  test('keeps the last word on each name', () => {
    const b = new LocalUsersBuffer()
    b.join({ username: 'alice', connectedAt: 1 })
    b.leave('alice')
    b.leave('bob')
    b.join({ username: 'bob', connectedAt: 3 })
    b.join({ username: 'carol', connectedAt: 4 })
    b.leave('carol')
    expect(b.take()).toEqual({ joins: [{ username: 'bob', connectedAt: 3 }], leaves: ['alice', 'carol'] })
    expect(b.take()).toBeNull()
  })
})

describe('PresenceBatch', () => {
  function setup() {
    let clock = 0
    const timers: Array<{ at: number; fn: () => void }> = []
    const published: any[] = []
    const broadcasts: Array<{ joins: unknown[]; leaves: string[] }> = []
    const batch = new PresenceBatch({
      windowMs: 50,
      now: () => clock,
      after: (ms, fn) => timers.push({ at: clock + ms, fn }),
      publish: (json) => published.push(JSON.parse(json)),
      broadcast: (b) => broadcasts.push(b),
    })
    const advance = (ms: number) => {
      clock += ms
      for (const t of timers.filter((t) => t.at <= clock)) {
        timers.splice(timers.indexOf(t), 1)
        t.fn()
      }
    }
    return { batch, published, broadcasts, advance, timers }
  }

  test('the first change of a quiet spell goes out on the next turn; the ones after it wait for the window', () => {
    const { batch, published, advance, timers } = setup()
    batch.announce({ event: 'join', user: entry('a') })
    expect(timers.map((t) => t.at)).toEqual([0])
    advance(0)
    expect(published).toHaveLength(1)
    batch.announce({ event: 'join', user: entry('b') })
    batch.announce({ event: 'join', user: entry('c') })
    expect(timers.map((t) => t.at)).toEqual([50])
    advance(49)
    expect(published).toHaveLength(1)
    advance(1)
    expect(published).toEqual([
      { type: 'presence', joins: [entry('a')], leaves: [] },
      { type: 'presence', joins: [entry('b'), entry('c')], leaves: [] },
    ])
    // Quiet again past the window: the next change goes out at once.
    advance(100)
    batch.announce({ event: 'leave', user: entry('a') })
    expect(timers.map((t) => t.at)).toEqual([150])
  })

  test('peers hear of local changes on the next turn, whatever the window', () => {
    const { batch, broadcasts, advance, timers } = setup()
    batch.announce({ event: 'join', user: entry('x') })
    advance(0)
    batch.announce({ event: 'join', user: entry('y') })
    batch.local('alice', null)
    expect(timers.map((t) => t.at)).toEqual([50, 0])
    advance(0)
    expect(broadcasts).toEqual([{ joins: [], leaves: ['alice'] }])
  })

  test('flush tells everything pending at once; the timer that follows finds nothing', () => {
    const { batch, published, broadcasts, advance } = setup()
    batch.local('alice', { username: 'alice', connectedAt: 1 })
    batch.local('bob', null)
    batch.flush()
    expect(broadcasts.flatMap((b) => b.leaves)).toEqual(['bob'])
    expect(broadcasts.flatMap((b) => b.joins)).toEqual([{ username: 'alice', connectedAt: 1 }])
    advance(100)
    expect(broadcasts).toHaveLength(1)
    expect(published).toEqual([])
  })

  test('peer batches are cut so no cluster frame carries more than PEER_FRAME_USERS_MAX users, leaves first', () => {
    const { batch, broadcasts, advance } = setup()
    const n = PEER_FRAME_USERS_MAX * 2 + 1
    for (let i = 0; i < n; i++) batch.local(`u${i}`, { username: `u${i}`, connectedAt: i })
    batch.local('gone', null)
    advance(0)
    expect(broadcasts.map((b) => b.joins.length + b.leaves.length)).toEqual([PEER_FRAME_USERS_MAX, PEER_FRAME_USERS_MAX, 2])
    expect(broadcasts[0]!.leaves).toEqual(['gone'])
  })

  test('without a timer every change is told at once', () => {
    const published: any[] = []
    const batch = new PresenceBatch({ windowMs: 50, now: () => 0, publish: (json) => published.push(JSON.parse(json)), broadcast: () => {} })
    batch.announce({ event: 'join', user: entry('a') })
    batch.announce({ event: 'join', user: entry('b') })
    expect(published).toHaveLength(2)
  })
})

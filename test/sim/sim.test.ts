// Runs the membership simulator under `bun test`, and proves its checkers catch broken states.
import { describe, expect, test } from 'bun:test'
import { Membership } from '../../src/cluster/membership'
import type { Entry, RaftMessage } from '../../src/cluster/messages'
import { Checker, InvariantViolation, runSeed, SimulationFailure, type Observed } from './simulator'

/** About 20-30 s on a 2-core machine (100-140 seeds/s); `SIM_SEEDS=N bun test test/sim` to change. */
const SEEDS = Number(process.env.SIM_SEEDS ?? 3000)

test(`${SEEDS} seeds keep every invariant and converge once the faults stop`, () => {
  const started = performance.now()
  let elections = 0
  let commits = 0
  for (let seed = 0; seed < SEEDS; seed++) {
    const stats = runSeed(seed) // throws a SimulationFailure with the replay command
    elections += stats.elections
    commits += stats.commits
  }
  const seconds = (performance.now() - started) / 1000
  console.log(`simulator: ${SEEDS} seeds in ${seconds.toFixed(1)} s (${(SEEDS / seconds).toFixed(0)} seeds/s), ${elections} elections, ${commits} commits`)
}, 180_000)

test('one seed is one run: the same seed gives the same history', () => {
  expect(runSeed(4242)).toEqual(runSeed(4242))
})

test('a broken implementation is caught, with the seed and the command to replay it', () => {
  // Forgets its vote whenever asked for a real one, so it may vote twice in a term.
  class VotesTwice extends Membership {
    override step(m: RaftMessage): void {
      if (m.type === 'vote_request' && !m.preVote) this.votedFor = null
      super.step(m)
    }
  }
  let failure: unknown
  for (let seed = 0; seed < 200 && !failure; seed++) {
    try {
      runSeed(seed, { create: (o) => new VotesTwice(o) })
    } catch (error) {
      failure = error
    }
  }
  expect(failure).toBeInstanceOf(SimulationFailure)
  const { seed, invariant, message } = failure as SimulationFailure
  expect(['One vote per term', 'Election Safety']).toContain(invariant)
  expect(message).toContain(`seed ${seed}: ${invariant} violated`)
  expect(message).toContain(`replay: bun run sim --seed ${seed} --verbose`)
})

describe('the checker flags fabricated states', () => {
  const add = (address: string, term = 1): Entry => ({ term, change: { type: 'add', member: { address, incarnation: '1', httpUrl: '' } } })
  const noop = (term: number): Entry => ({ term, change: { type: 'noop' } })
  const node = (selfId: string, fields: Partial<Observed> = {}): Observed => ({
    selfId, role: 'follower', term: 1, votedFor: null, entries: [], commitIndex: 0, ...fields,
  })
  const violation = (f: () => void): string => {
    try {
      f()
    } catch (error) {
      if (error instanceof InvariantViolation) return error.invariant
      throw error
    }
    return 'nothing'
  }
  const checker = () => {
    const c = new Checker()
    for (const id of ['a#1', 'b#1', 'c#1', 'd#1']) c.mayJoin.add(id)
    return c
  }

  test('two leaders in one term (Election Safety)', () => {
    const c = checker()
    c.observe(node('a#1', { role: 'leader', term: 3, votedFor: 'a#1' }))
    expect(violation(() => c.observe(node('b#1', { role: 'leader', term: 3, votedFor: 'b#1' })))).toBe('Election Safety')
  })

  test('two votes in one term', () => {
    const c = checker()
    c.observe(node('a#1', { term: 2, votedFor: 'b#1' }))
    expect(violation(() => c.observe(node('a#1', { term: 2, votedFor: 'c#1' })))).toBe('One vote per term')
  })

  test('different entries committed at one index (State Machine Safety)', () => {
    const c = checker()
    c.observe(node('a#1', { entries: [add('a'), noop(1)], commitIndex: 2 }))
    expect(violation(() => c.observe(node('b#1', { term: 2, entries: [add('a'), noop(2)], commitIndex: 2 })))).toBe('State Machine Safety')
  })

  test('a committed entry undone', () => {
    const c = checker()
    const log = [add('a'), noop(1)]
    c.observe(node('a#1', { entries: log, commitIndex: 2 }))
    expect(violation(() => c.observe(node('a#1', { entries: log, commitIndex: 1 })))).toBe('Committed entries are never undone')
  })

  test('same index and term, different entries (Log Matching)', () => {
    const c = checker()
    c.observe(node('a#1', { entries: [add('a'), add('b')], commitIndex: 1 }))
    expect(violation(() => c.observe(node('c#1', { entries: [add('a'), add('c')], commitIndex: 1 })))).toBe('Log Matching')
  })

  test('two uncommitted membership changes', () => {
    const c = checker()
    expect(violation(() => c.observe(node('a#1', { role: 'leader', entries: [add('a'), noop(1), add('b'), add('c')], commitIndex: 2 })))).toBe(
      'One membership change at a time',
    )
  })

  test('a member that never asked to join', () => {
    const c = checker()
    expect(violation(() => c.observe(node('a#1', { entries: [add('a'), add('z')], commitIndex: 1 })))).toBe('Only nodes that asked to join are added')
  })

  test('a new leader without an entry committed in an earlier term (Leader Completeness)', () => {
    const c = checker()
    c.observe(node('a#1', { role: 'leader', term: 1, votedFor: 'a#1', entries: [add('a'), noop(1)], commitIndex: 2 }))
    expect(violation(() => c.observe(node('b#1', { role: 'leader', term: 2, votedFor: 'b#1', entries: [add('a')], commitIndex: 1 })))).toBe(
      'Leader Completeness',
    )
  })

  test('a consistent history passes', () => {
    const c = checker()
    c.observe(node('a#1', { role: 'leader', term: 1, votedFor: 'a#1', entries: [add('a'), noop(1), add('b')], commitIndex: 3 }))
    c.observe(node('b#1', { entries: [add('a'), noop(1), add('b')], commitIndex: 3 }))
    expect(c.committed).toHaveLength(3)
  })
})

describe('known failures', () => {
  // Seed 27399 (found 2026-11-28; it fails the same way on the code of the session before):
  // the leader n3 proposes removing n0 (cut off by a partition that has just healed), the entry
  // reaches n2 only, and n3 crashes before it commits. Its restart is a new incarnation with an
  // empty log, so the old n3 is gone for good. n2 takes the latest configuration in its log,
  // {n2, old n3}: it needs the dead member's vote. n0, with the older configuration {n0, n2, old
  // n3}, needs n2's, which n2 refuses (n0's log is behind). Two of the three members are alive
  // and no leader is ever elected. Votes counted under the committed configuration (as etcd/raft
  // applies a change only once committed) would elect n2, but n2 must then commit the removal and
  // is left in {n2, old n3}: stuck again. Keeping at least three voters (README) would fix it.
  test('a crash before a removal commits can leave the survivors with no majority (seed 27399)', () => {
    expect(() => runSeed(27399)).toThrow(/Liveness violated.*no leader/)
  })
})

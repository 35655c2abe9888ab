// Scenario tests for the membership core, named after the Raft rules they check (after etcd's
// raft_paper_test.go). A tiny in-process network delivers every message within the tick it was
// sent, in order, unless a test cuts a link or drops a message; the simulator's checker watches
// every step, so each scenario also asserts the global invariants.
import { describe, expect, test } from 'bun:test'
import { Membership, type MembershipView } from '../../src/cluster/membership'
import { addressOf } from '../../src/cluster/address'
import { MAX_TERM, type Entry, type RaftMessage } from '../../src/cluster/messages'
import { DEFAULT_TIMING as TIMING } from '../../src/cluster/timing'
import { Checker, membershipOptions, Prng } from '../sim/simulator'

const { heartbeatTicks, electionTicksMax, electionTicksMin, unreachableTicks, downTicks, joinRetryTicks } = TIMING

class Net {
  readonly checker = new Checker()
  /** The running incarnation at each address. */
  readonly nodes = new Map<string, Membership>()
  /** Every message ever sent, in order. */
  readonly sent: RaftMessage[] = []
  /** Return true to lose a message. */
  drop: (m: RaftMessage) => boolean = () => false
  private readonly incarnations = new Map<string, number>()
  private readonly cuts = new Set<string>()
  private queue: RaftMessage[] = []
  private readonly rng = new Prng(7)

  /** Starts a new incarnation at `address`; n0 is the only seed and may bootstrap the first time. */
  start(address: string, seeds = ['n0']): Membership {
    const incarnation = (this.incarnations.get(address) ?? 0) + 1
    this.incarnations.set(address, incarnation)
    const bootstrap = address === 'n0' && incarnation === 1
    const m = new Membership(membershipOptions(address, String(incarnation), seeds, bootstrap, this.rng.next))
    this.nodes.set(address, m)
    if (bootstrap) this.checker.mayJoin.add(m.selfId)
    return m
  }

  node(address: string): Membership {
    const m = this.nodes.get(address)
    if (!m) throw new Error(`nothing runs at ${address}`)
    return m
  }

  crash(address: string): void {
    this.nodes.delete(address)
  }

  cut(from: string, to: string, bothWays = true): void {
    this.cuts.add(`${from}>${to}`)
    if (bothWays) this.cuts.add(`${to}>${from}`)
  }

  isolate(address: string): void {
    for (const other of ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6']) if (other !== address) this.cut(address, other)
  }

  heal(): void {
    this.cuts.clear()
    this.drop = () => false
  }

  /** Every running node ticks once (in address order), then every message is delivered. */
  tick(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const address of [...this.nodes.keys()].sort()) {
        const m = this.nodes.get(address)
        if (!m) continue
        m.tick()
        this.collect(m)
      }
      this.deliver()
    }
  }

  /** Delivers queued messages in order until none is left, or until `stop` turns true. */
  deliver(stop: () => boolean = () => false): boolean {
    for (let n = 0; this.queue.length > 0; n++) {
      if (n > 100_000) throw new Error('message storm')
      const m = this.queue.shift()!
      const to = this.nodes.get(addressOf(m.to))
      if (!to || this.cuts.has(`${addressOf(m.from)}>${addressOf(m.to)}`) || this.drop(m)) continue
      to.step(m)
      this.collect(to)
      if (stop()) return true
    }
    return false
  }

  /** Ticks until `done` holds; fails the test after `maxTicks`. Returns the ticks taken. */
  runUntil(done: () => boolean, maxTicks: number, what = 'condition'): number {
    for (let t = 0; t <= maxTicks; t++) {
      if (done()) return t
      this.tick()
    }
    throw new Error(`${what} not reached within ${maxTicks} ticks`)
  }

  /** Ticks one at a time, stopping as soon as `done` holds even in the middle of a tick. */
  runUntilMidTick(done: () => boolean, maxTicks: number, what = 'condition'): void {
    for (let t = 0; t <= maxTicks; t++) {
      for (const address of [...this.nodes.keys()].sort()) {
        const m = this.nodes.get(address)
        if (!m) continue
        m.tick()
        this.collect(m)
        if (done() || this.deliver(done)) return
      }
    }
    throw new Error(`${what} not reached within ${maxTicks} ticks`)
  }

  leader(): Membership | undefined {
    return [...this.nodes.values()].find((m) => m.role === 'leader')
  }

  /** Sends a hand-made message to a node, as if it came from the network. */
  inject(message: RaftMessage): void {
    if (message.type === 'join_request') this.checker.mayJoin.add(message.from)
    const to = this.node(addressOf(message.to))
    to.step(message)
    this.collect(to)
    this.deliver()
  }

  private collect(m: Membership): void {
    for (const { message } of m.takeMessages()) {
      if (message.type === 'join_request') this.checker.mayJoin.add(message.from)
      this.sent.push(message)
      this.queue.push(message)
    }
    this.checker.observe(m)
  }
}

const committedIds = (m: Membership) => [...m.membersAt(m.commitIndex).keys()].sort()
const statusOf = (view: MembershipView, id: string) => view.members.find((v) => v.id === id)?.status
const indexOfAdd = (m: Membership, address: string) =>
  m.entries.findIndex((e) => e.change.type === 'add' && e.change.member.address === address) + 1
const joinRequest = (m: Membership, to: string): RaftMessage => {
  const [address, incarnation] = m.selfId.split('#') as [string, string]
  return { type: 'join_request', from: m.selfId, to, member: { address, incarnation, httpUrl: `http://${address}:3000` } }
}

/** A cluster n0..n(size-1), all Up, every node at the same commit index. */
function cluster(size: number): Net {
  const net = new Net()
  net.start('n0')
  net.runUntil(() => net.leader() !== undefined, 5, 'bootstrap')
  for (let i = 1; i < size; i++) net.start(`n${i}`)
  net.runUntil(() => converged(net), 50 * size, 'cluster formation')
  return net
}

function converged(net: Net): boolean {
  const leader = net.leader()
  if (!leader) return false
  const ids = [...net.nodes.values()].map((m) => m.selfId).sort()
  return [...net.nodes.values()].every(
    (m) => m.commitIndex === leader.commitIndex && m.entries.length === m.commitIndex && committedIds(m).join() === ids.join(),
  )
}

describe('bootstrap', () => {
  test('the first seed founds the cluster: leader of term 1 with itself as the only member', () => {
    const net = new Net()
    // n1 is also a seed but never answers, so n0 waits bootstrapTicks before founding.
    const n0 = net.start('n0', ['n0', 'n1'])
    net.tick(TIMING.bootstrapTicks - 1)
    expect(n0.role).toBe('follower')
    expect(n0.entries).toHaveLength(0)
    net.tick()
    expect(n0.role).toBe('leader')
    expect(n0.term).toBe(1)
    expect(n0.entries[0]).toEqual({ term: 1, change: { type: 'add', member: { address: 'n0', incarnation: '1', httpUrl: 'http://n0:3000' } } })
    expect(committedIds(n0)).toEqual(['n0#1'])
    const view = n0.view()
    expect(view.status).toBe('Up')
    expect(view.members.map((v) => [v.id, v.status, v.leader])).toEqual([['n0#1', 'Up', true]])
  })

  test('a seed alone in its seed list founds at once', () => {
    const net = new Net()
    const n0 = net.start('n0')
    net.tick()
    expect(n0.role).toBe('leader')
  })

  test('only the first seed bootstraps, and never again after a restart', () => {
    const net = new Net()
    const n1 = net.start('n1', ['n0', 'n1'])
    net.start('n0')
    net.crash('n0')
    const n0 = net.start('n0') // a new incarnation, alone in its seed list
    net.tick(10 * TIMING.bootstrapTicks)
    for (const m of [n0, n1]) {
      expect(m.role).toBe('follower')
      expect(m.entries).toHaveLength(0)
    }
  })
})

describe('joining', () => {
  test('a join sent to a follower is redirected to the leader (leader_hint)', () => {
    const net = cluster(2)
    const n2 = net.start('n2', ['n1']) // knows only the follower
    net.runUntil(() => committedIds(net.node('n0')).includes(n2.selfId), 100, 'join')
    const hint = net.sent.find((m) => m.type === 'leader_hint' && m.from === 'n1#1' && m.to === n2.selfId)
    expect(hint).toMatchObject({ leader: 'n0' })
    const redirected = net.sent.find((m) => m.type === 'join_request' && m.from === n2.selfId && m.to === 'n0')
    expect(redirected).toBeDefined()
    expect(net.sent.indexOf(redirected!)).toBeGreaterThan(net.sent.indexOf(hint!))
  })

  test('a join commits: Joining, then Up on every node at the same committed index', () => {
    const net = cluster(3)
    const n3 = net.start('n3')
    const leader = net.node('n0')
    net.runUntilMidTick(() => indexOfAdd(leader, 'n3') > 0, 100, 'add appended')
    const index = indexOfAdd(leader, 'n3')
    expect(leader.commitIndex).toBeLessThan(index)
    expect(statusOf(leader.view(), n3.selfId)).toBe('Joining')
    net.runUntil(() => converged(net), 50, 'join committed')
    for (const m of net.nodes.values()) {
      expect(m.commitIndex).toBe(leader.commitIndex)
      expect(m.entries[index - 1]).toEqual(leader.entries[index - 1]!)
      expect(statusOf(m.view(), n3.selfId)).toBe('Up')
    }
    expect(n3.view().status).toBe('Up')
  })
})

describe('leaving', () => {
  test('a member that leaves is Leaving until its removal commits, then Removed', () => {
    const net = cluster(3)
    const n2 = net.node('n2')
    const leader = net.node('n0')
    n2.leave()
    const proposed = () => leader.entries.some((e) => e.change.type === 'remove' && e.change.id === n2.selfId)
    net.runUntilMidTick(proposed, 50, 'removal proposed')
    expect(statusOf(leader.view(), n2.selfId)).toBe('Leaving')
    net.runUntil(() => n2.removed, 100, 'leave done')
    expect(n2.view().status).toBe('Removed')
    net.crash('n2')
    net.runUntil(() => converged(net), 50)
    for (const m of net.nodes.values()) expect(committedIds(m)).toEqual(['n0#1', 'n1#1'])
    expect(leader.entries.at(-1)?.change).toEqual({ type: 'remove', id: 'n2#1', reason: 'leave' })
  })

  test('a leaving leader hands over with timeout_now once its removal commits', () => {
    const net = cluster(3)
    const n0 = net.node('n0')
    const term = n0.term
    n0.leave()
    net.runUntil(() => n0.removed, 50, 'leader removed')
    const handover = net.sent.find((m) => m.type === 'timeout_now')
    expect(handover).toMatchObject({ from: 'n0#1', term })
    net.crash('n0')
    // The successor campaigns at once (transfer: true), well before any election timeout.
    const ticks = net.runUntil(() => net.leader() !== undefined, 2, 'successor elected')
    expect(ticks).toBeLessThan(electionTicksMin)
    expect(net.leader()!.selfId).toBe(handover!.to)
    expect(net.leader()!.term).toBe(term + 1)
    net.runUntil(() => converged(net), 50)
    expect(committedIds(net.leader()!)).toEqual(['n1#1', 'n2#1'])
  })
})

describe('§5.2 leader election', () => {
  test('followers elect a new leader of a higher term after the leader crashes', () => {
    const net = cluster(3)
    const term = net.node('n0').term
    net.crash('n0')
    const ticks = net.runUntil(() => net.leader() !== undefined, 3 * electionTicksMax, 'new leader')
    // Not before an election timeout since the last heartbeat.
    expect(ticks).toBeGreaterThanOrEqual(electionTicksMin - heartbeatTicks)
    expect(net.leader()!.term).toBeGreaterThan(term)
    // The new leader's first entry of its term is a no-op.
    expect(net.leader()!.entries.at(-1)).toEqual({ term: net.leader()!.term, change: { type: 'noop' } })
  })

  test('pre-vote: a partitioned node does not inflate terms or disrupt the leader when it returns', () => {
    const net = cluster(3)
    const n2 = net.node('n2')
    const term = n2.term
    net.isolate('n2')
    net.tick(downTicks - 50) // several election timeouts, but not long enough to be removed
    expect(n2.term).toBe(term)
    expect(n2.role).toBe('precandidate')
    net.heal()
    net.tick(2 * electionTicksMax)
    expect(net.leader()!.selfId).toBe('n0#1')
    expect(net.leader()!.term).toBe(term)
    expect(n2.term).toBe(term)
    expect(n2.leaderId).toBe('n0#1')
  })

  test('check-quorum: a leader cut off from the majority steps down, the majority elects another', () => {
    const net = cluster(3)
    const n0 = net.node('n0')
    net.isolate('n0')
    // The check-quorum round under way may still count replies from before the cut: two rounds.
    const ticks = net.runUntil(() => n0.role !== 'leader', 3 * electionTicksMin, 'old leader steps down')
    expect(ticks).toBeLessThanOrEqual(2 * electionTicksMin)
    net.runUntil(() => net.leader() !== undefined, 3 * electionTicksMax, 'new leader')
    expect(net.leader()!.selfId).not.toBe('n0#1')
  })

  test('leader lease: while followers hear a leader they ignore higher-term candidates, even ones claiming a hand-over', () => {
    const net = cluster(3)
    const n1 = net.node('n1')
    const term = n1.term
    const request = (transfer: boolean): RaftMessage => ({
      type: 'vote_request', from: 'n2#1', to: 'n1#1', term: term + 5, lastIndex: 99, lastTerm: term + 4, preVote: false, transfer,
    })
    const before = net.sent.length
    net.inject(request(false))
    expect(n1.term).toBe(term)
    expect(n1.leaderId).toBe('n0#1')
    expect(net.sent.slice(before)).toEqual([]) // not even a refusal
    // n0 is a healthy member: `transfer` is only believed once the leader has removed itself.
    net.inject(request(true))
    expect(n1.term).toBe(term)
    expect(n1.leaderId).toBe('n0#1')
    expect(net.sent.slice(before)).toEqual([])
  })

  test('leader lease: a removed node that comes back cannot depose a healthy leader', () => {
    const net = cluster(3)
    const n2 = net.node('n2')
    net.isolate('n2')
    net.runUntil(() => !committedIds(net.node('n0')).includes('n2#1'), downTicks + 200, 'n2 removed as down')
    const term = net.node('n0').term
    net.heal()
    net.runUntil(() => n2.removed, 3 * electionTicksMax, 'n2 told it was removed')
    expect(net.sent.some((m) => m.type === 'not_member' && m.to === 'n2#1')).toBe(true)
    expect(net.leader()!.selfId).toBe('n0#1')
    expect(net.leader()!.term).toBe(term)
  })
})

describe('§5.3 log replication', () => {
  const member = (address: string) => ({ address, incarnation: '1', httpUrl: `http://${address}:3000` })
  const append = (from: string, term: number, prevIndex: number, prevTerm: number, entries: Entry[], commit: number): RaftMessage => ({
    type: 'append_entries', from, to: 'n1#1', term, prevIndex, prevTerm, entries, commit, unreachable: [],
  })

  test('log matching: a follower rejects entries whose predecessor does not match, and says where to retry', () => {
    const f = new Membership(membershipOptions('n1', '1', ['n0'], false, new Prng(1).next))
    f.step(append('n0#1', 1, 3, 1, [{ term: 1, change: { type: 'noop' } }], 0))
    const [reply] = f.takeMessages()
    expect(reply!.message).toMatchObject({ type: 'append_response', success: false, matchIndex: 0 })
    expect(f.entries).toHaveLength(0)
  })

  test('conflicting uncommitted entries are overwritten by the new leader', () => {
    const f = new Membership(membershipOptions('n1', '1', ['n0'], false, new Prng(1).next))
    const old: Entry[] = [
      { term: 1, change: { type: 'add', member: member('n0') } },
      { term: 1, change: { type: 'noop' } },
      { term: 1, change: { type: 'add', member: member('n1') } },
      { term: 1, change: { type: 'add', member: member('n2') } }, // never committed
    ]
    f.step(append('n0#1', 1, 0, 0, old, 3))
    expect(f.entries).toHaveLength(4)
    expect(f.commitIndex).toBe(3)
    f.takeMessages()
    // The leader of term 2 never had entry 4: its no-op goes there instead.
    f.step(append('n2#1', 2, 3, 1, [{ term: 2, change: { type: 'noop' } }], 4))
    expect(f.entries).toHaveLength(4)
    expect(f.entries[3]).toEqual({ term: 2, change: { type: 'noop' } })
    expect(f.commitIndex).toBe(4)
    expect(f.takeMessages()[0]!.message).toMatchObject({ type: 'append_response', success: true, matchIndex: 4 })
    // A stale, reordered copy of the first message does not truncate anything.
    f.step(append('n2#1', 2, 0, 0, old.slice(0, 2), 4))
    expect(f.entries[3]).toEqual({ term: 2, change: { type: 'noop' } })
  })
})

describe('§4.1 membership changes', () => {
  test('single-change rule: a second change waits until the first commits', () => {
    const net = cluster(2)
    const leader = net.node('n0')
    const n2 = net.start('n2')
    net.runUntilMidTick(() => indexOfAdd(leader, 'n2') > 0, 100, 'n2 proposed')
    // No acknowledgement of the addition arrives, so it cannot commit (it needs 2 of 3).
    const index = indexOfAdd(leader, 'n2')
    net.drop = (m) => m.type === 'append_response' && m.matchIndex >= index
    const n3 = net.start('n3')
    net.inject(joinRequest(n3, 'n0'))
    expect(leader.role).toBe('leader')
    expect(leader.commitIndex).toBeLessThan(index)
    const pending = leader.entries.slice(leader.commitIndex).filter((e) => e.change.type !== 'noop')
    expect(pending.map((e) => e.change.type === 'add' && e.change.member.address)).toEqual(['n2'])
    net.heal()
    net.runUntil(() => converged(net), 300, 'both joins committed')
    const adds = net.leader()!.entries.flatMap((e) => (e.change.type === 'add' ? [e.change.member.address] : []))
    expect(adds).toEqual(['n0', 'n1', 'n2', 'n3'])
    expect(n2.view().status).toBe('Up')
    expect(n3.view().status).toBe('Up')
  })

  test('a new leader commits a no-op of its own term before it accepts a change', () => {
    const net = cluster(3)
    net.crash('n0')
    // Votes flow, but no append is acknowledged: the new leader's no-op stays uncommitted.
    net.drop = (m) => m.type === 'append_response'
    net.runUntil(() => net.leader() !== undefined, 3 * electionTicksMax, 'new leader')
    const leader = net.leader()!
    const noopIndex = leader.entries.length
    expect(leader.entries[noopIndex - 1]).toEqual({ term: leader.term, change: { type: 'noop' } })
    expect(leader.commitIndex).toBeLessThan(noopIndex)
    const joiner = net.start('n0', ['n1', 'n2'])
    net.inject(joinRequest(joiner, addressOf(leader.selfId)))
    expect(leader.role).toBe('leader')
    expect(leader.entries).toHaveLength(noopIndex) // refused: the joiner will ask again
    net.heal()
    net.runUntil(() => converged(net), 300, 'replace and add after the no-op commits')
    expect(leader.entries.slice(noopIndex).map((e) => e.change)).toEqual([
      { type: 'remove', id: 'n0#1', reason: 'replaced' },
      { type: 'add', member: { address: 'n0', incarnation: '2', httpUrl: 'http://n0:3000' } },
    ])
    expect(joiner.view().status).toBe('Up')
  })

  test('a restart at the same address replaces the old incarnation', () => {
    const net = cluster(3)
    net.crash('n2')
    const n2 = net.start('n2')
    net.runUntil(() => converged(net), 300, 'replaced')
    const leader = net.node('n0')
    expect(committedIds(leader)).toEqual(['n0#1', 'n1#1', 'n2#2'])
    const changes = leader.entries.filter((e) => e.change.type !== 'noop').map((e) => e.change)
    expect(changes.slice(-2)).toEqual([
      { type: 'remove', id: 'n2#1', reason: 'replaced' },
      { type: 'add', member: { address: 'n2', incarnation: '2', httpUrl: 'http://n2:3000' } },
    ])
    expect(n2.view().status).toBe('Up')
  })
})

describe('failure detection', () => {
  test('a silent member is unreachable, then Down, then removed on every node', () => {
    const net = cluster(3)
    const leader = net.node('n0')
    net.crash('n2')
    net.tick(unreachableTicks + heartbeatTicks)
    expect(leader.view().members.find((v) => v.id === 'n2#1')).toMatchObject({ status: 'Up', reachable: false })
    // Followers show the same reachability, learned from the leader's heartbeats.
    expect(net.node('n1').view().members.find((v) => v.id === 'n2#1')?.reachable).toBe(false)
    const proposed = () => leader.entries.some((e) => e.change.type === 'remove' && e.change.id === 'n2#1')
    net.runUntilMidTick(proposed, downTicks, 'removal proposed')
    expect(statusOf(leader.view(), 'n2#1')).toBe('Down')
    expect(leader.entries.at(-1)?.change).toEqual({ type: 'remove', id: 'n2#1', reason: 'down' })
    net.runUntil(() => converged(net), 50)
    // The committed member list no longer has n2, so the chat layer drops the users it hosted.
    for (const m of net.nodes.values()) {
      expect(committedIds(m)).toEqual(['n0#1', 'n1#1'])
      expect(m.view().members.map((v) => v.id)).toEqual(['n0#1', 'n1#1'])
    }
  })

  test('a removal is not proposed unless the members that remain include a majority heard just now', () => {
    // Five members: n3 crashes and n4 is cut off; just before n4's down timeout, n2 crashes too.
    // The leader still counts n2 as heard within an election timeout, so it hears "a majority"
    // (n0, n1, n2). But removing n4 would leave {n0,n1,n2,n3} with only n0 and n1 alive: the
    // removal could never commit and, once in the log, never be taken back. Only members heard
    // within the last few heartbeats count for the members that remain, so it waits.
    const net = cluster(5)
    net.crash('n3')
    net.isolate('n4')
    net.tick(downTicks - 4 * heartbeatTicks)
    net.crash('n2')
    net.tick(6 * heartbeatTicks)
    for (const m of net.nodes.values()) expect(m.entries.filter((e) => e.change.type === 'remove')).toEqual([])
    // Once n4 is back, the three live members remove the two dead ones, one at a time.
    net.heal()
    net.runUntil(() => converged(net), 2 * downTicks + 4 * electionTicksMax, 'recovery')
    expect(committedIds(net.leader()!)).toEqual(['n0#1', 'n1#1', 'n4#1'])
  })

  test('a removed member is told at once when its removal commits, even if nobody is left to ask', () => {
    const net = cluster(2)
    const n1 = net.node('n1')
    n1.leave()
    // Sooner than its next leave_request could ask.
    net.runUntilMidTick(() => n1.removed, joinRetryTicks - 2, 'n1 told')
    expect(net.sent.some((m) => m.type === 'not_member' && m.to === n1.selfId && m.from === 'n0#1')).toBe(true)
  })

  test('the minority side never removes anyone', () => {
    const net = cluster(5)
    for (const a of ['n0', 'n1']) for (const b of ['n2', 'n3', 'n4']) net.cut(a, b)
    net.tick(3 * downTicks)
    for (const address of ['n0', 'n1']) {
      const m = net.node(address)
      const removals = m.entries.filter((e) => e.change.type === 'remove')
      expect(removals).toEqual([])
      expect(m.role).not.toBe('leader')
    }
    // The majority side went on without them.
    const leader = net.leader()!
    expect(['n2', 'n3', 'n4']).toContain(addressOf(leader.selfId))
    expect(committedIds(leader)).toEqual(['n2#1', 'n3#1', 'n4#1'])
  })

  test('a member removed while alive learns it from not_member and rejoins as a new incarnation', () => {
    const net = cluster(3)
    const n2 = net.node('n2')
    net.isolate('n2')
    net.runUntil(() => !committedIds(net.node('n0')).includes('n2#1'), downTicks + 200, 'n2 removed as down')
    expect(n2.removed).toBe(false) // it cannot know yet
    net.heal()
    net.runUntil(() => n2.removed, 3 * electionTicksMax, 'n2 told')
    expect(n2.view().status).toBe('Removed')
    const again = net.start('n2') // what the shell does
    net.runUntil(() => converged(net), 300, 'rejoined')
    expect(again.selfId).toBe('n2#2')
    expect(committedIds(net.node('n0'))).toEqual(['n0#1', 'n1#1', 'n2#2'])
  })
})

describe('regressions found by the simulator', () => {
  test('the leader lease expires on a node that is not a voter yet (seed 71)', () => {
    // n0 alone adds n1, which learns who the leader is from one rejected append and gets nothing
    // more; n0 then loses its quorum of {n0, n1} and steps down. n1 must grant n0's pre-vote once
    // the lease is over, or n0 is never leader again and n1 never gets in.
    const net = new Net()
    const n0 = net.start('n0')
    net.tick()
    const n1 = net.start('n1')
    let appends = 0
    net.drop = (m) => m.type === 'append_entries' && m.to === 'n1#1' && ++appends > 1
    net.runUntil(() => n0.role !== 'leader', 200, 'n0 steps down')
    expect(n1.leaderId).toBe('n0#1')
    expect(n1.entries).toHaveLength(0)
    net.heal()
    net.runUntil(() => converged(net), 4 * electionTicksMax, 'n0 leader again, with n1')
    expect(n1.view().status).toBe('Up')
  })

  test('a joiner whose uncommitted addition a new leader overwrote asks again (seed 442)', () => {
    const net = cluster(3)
    const n3 = net.start('n3', ['n0', 'n1', 'n2'])
    // Only n3 gets its own addition; the other followers never see it.
    net.drop = (m) => m.type === 'append_entries' && m.from === 'n0#1' && m.to !== 'n3#1'
    net.runUntil(() => indexOfAdd(n3, 'n3') > 0, 100, 'n3 has its addition')
    const index = indexOfAdd(n3, 'n3')
    net.crash('n0')
    // n1 and n2 elect a leader whose no-op takes that index; n3 keeps quiet meanwhile.
    net.drop = (m) => m.from === 'n3#1'
    net.runUntil(() => (net.leader()?.commitIndex ?? 0) >= index, 4 * electionTicksMax, 'index overwritten')
    expect(n3.entries[index - 1]?.change.type).toBe('add') // n3 still believes it is a voter
    net.heal()
    net.runUntil(() => committedIds(net.leader()!).includes('n3#1') && n3.view().status === 'Up', 200, 'n3 re-added')
  })

  test('a removed node whose every known member was replaced learns it from the seeds (seed 4737)', () => {
    const net = cluster(4)
    const n3 = net.node('n3')
    net.isolate('n3')
    net.runUntil(() => !committedIds(net.node('n0')).includes('n3#1'), downTicks + 200, 'n3 removed as down')
    // Every incarnation n3 knows is replaced; messages to the old ones are dropped unread.
    for (const address of ['n1', 'n2', 'n0']) {
      net.crash(address)
      net.start(address, ['n0', 'n1', 'n2'])
      net.runUntil(() => converged(net) || (net.leader() !== undefined && committedIds(net.leader()!).includes(`${address}#2`)), 4 * electionTicksMax + 200, `${address} replaced`)
    }
    expect(n3.removed).toBe(false)
    net.heal()
    net.runUntil(() => n3.removed, downTicks + 2 * joinRetryTicks, 'n3 told by a seed')
    expect(net.sent.some((m) => m.type === 'not_member' && m.to === 'n3#1')).toBe(true)
  })

  test('a leaving node whose leader is gone still learns that its removal committed (seed 1159)', () => {
    const net = cluster(4)
    const n0 = net.node('n0')
    net.crash('n1') // still listed, first after n0 in every member list
    // n0 leaves as leader: its removal reaches n2 and n3, but their acknowledgements are lost, so
    // n0 cannot commit it and steps down; n2 and n3 commit it under a new leader.
    net.cut('n2', 'n0', false)
    net.cut('n3', 'n0', false)
    n0.leave()
    net.runUntil(() => n0.role !== 'leader', 3 * electionTicksMin, 'n0 steps down')
    expect(n0.entries.at(-1)?.change).toEqual({ type: 'remove', id: 'n0#1', reason: 'leave' })
    expect(n0.leaderId).toBeNull()
    const removal = n0.entries.length
    net.runUntil(() => (net.leader()?.commitIndex ?? 0) >= removal, 4 * electionTicksMax, 'removal committed')
    net.heal()
    net.runUntil(() => n0.removed, 10 * joinRetryTicks, 'n0 learns it has left')
  })
})

test('the constructor refuses inconsistent timing (a programmer error: config checks it first)', () => {
  const good = membershipOptions('n0', '1', ['n0'], true, () => 0.5)
  expect(() => new Membership({ ...good, electionTicksMax: 10 })).toThrow(/invalid membership options/)
})

describe('peers that lie (the core does not take their word)', () => {
  const huge = [2 ** 53, 2 ** 53 + 2, MAX_TERM + 1, Number.MAX_VALUE]

  test('a vote request from outside the configuration is ignored, whatever its term or flags', () => {
    const net = cluster(3)
    const before = net.sent.length
    const terms = [...net.nodes.values()].map((m) => m.term)
    for (const term of [...huge, MAX_TERM, 1000]) {
      for (const preVote of [false, true]) {
        for (const transfer of [false, true]) {
          net.inject({ type: 'vote_request', from: 'rogue:1#x', to: 'n1#1', term, lastIndex: term, lastTerm: term, preVote, transfer })
        }
      }
    }
    expect([...net.nodes.values()].map((m) => m.term)).toEqual(terms)
    expect(net.node('n1').leaderId).toBe('n0#1')
    expect(net.node('n1').votedFor).not.toBe('rogue:1#x')
    expect(net.sent.slice(before).filter((m) => m.to === 'rogue:1#x')).toEqual([])
  })

  test('... also once the leader is gone and no lease protects the followers', () => {
    const net = cluster(3)
    const term = net.node('n1').term
    net.crash('n0')
    // Every tick until the survivors have a new leader, the rogue asks both for their vote.
    net.runUntil(() => {
      for (const to of ['n1#1', 'n2#1']) {
        net.inject({ type: 'vote_request', from: 'rogue:1#x', to, term: MAX_TERM, lastIndex: 99, lastTerm: MAX_TERM, preVote: false, transfer: true })
      }
      return net.leader() !== undefined
    }, 4 * electionTicksMax, 'a new leader among n1 and n2')
    expect(net.leader()!.term).toBeLessThan(term + 10)
    expect(net.sent.filter((m) => m.to === 'rogue:1#x')).toEqual([])
  })

  test('terms and indexes past MAX_TERM are dropped even from members, so term + 1 is always a new term', () => {
    const net = cluster(3)
    const n1 = net.node('n1')
    const term = n1.term
    for (const big of huge) {
      net.inject({ type: 'append_entries', from: 'n0#1', to: 'n1#1', term: big, prevIndex: 0, prevTerm: 0, entries: [], commit: 0, unreachable: [] })
      net.inject({ type: 'vote_request', from: 'n2#1', to: 'n1#1', term: big, lastIndex: 0, lastTerm: 0, preVote: false, transfer: true })
      net.inject({ type: 'append_response', from: 'n1#1', to: 'n0#1', term: big, success: false, matchIndex: big })
    }
    expect(n1.term).toBe(term)
    expect(net.node('n0').role).toBe('leader')
    expect(net.node('n0').term).toBe(term)
  })

  test('a leader outside our configuration a million terms ahead is not believed by a voter', () => {
    const net = cluster(3)
    const term = net.node('n1').term
    net.inject({ type: 'append_entries', from: 'rogue:1#x', to: 'n1#1', term: term + 2 ** 21, prevIndex: 0, prevTerm: 0, entries: [], commit: 0, unreachable: [] })
    expect(net.node('n1').term).toBe(term)
    expect(net.node('n1').leaderId).toBe('n0#1')
  })

  test('timeout_now is taken only from the leader we follow, in its own term', () => {
    const net = cluster(3)
    const n1 = net.node('n1')
    const term = n1.term
    net.inject({ type: 'timeout_now', from: 'n2#1', to: 'n1#1', term }) // a follower
    net.inject({ type: 'timeout_now', from: 'n0#1', to: 'n1#1', term: term + 1000 }) // the leader, but not its term
    net.inject({ type: 'timeout_now', from: 'rogue:1#x', to: 'n1#1', term: term + 1 })
    expect(n1.term).toBe(term)
    expect(n1.role).toBe('follower')
    expect(n1.leaderId).toBe('n0#1')
  })

  test('a join from an address nobody can reach is never added, however often it asks', () => {
    const net = cluster(3)
    const leader = net.node('n0')
    const length = leader.entries.length
    const rogue = (i: number): RaftMessage => ({
      type: 'join_request', from: `gone${i}#1`, to: 'n0', member: { address: `gone${i}`, incarnation: '1', httpUrl: 'http://x' },
    })
    // Three at once, repeatedly, then guesses at the probe: the hints go to addresses where nobody listens.
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 3; i++) net.inject(rogue(i))
      for (let i = 0; i < 3; i++) net.inject({ ...rogue(i), probe: String(round) } as RaftMessage)
      for (let t = 0; t < heartbeatTicks; t++) net.tick()
    }
    expect(leader.entries.length).toBe(length)
    const hints = net.sent.filter((m) => m.type === 'leader_hint' && m.to.startsWith('gone'))
    expect(hints.length).toBeGreaterThan(0)
    expect(hints.every((m) => m.type === 'leader_hint' && typeof m.probe === 'string')).toBe(true)
    // The cluster still works: a real node joins, and losing one node leaves a quorum.
    const n3 = net.start('n3', ['n0'])
    net.runUntil(() => converged(net), 300, 'n3 joins')
    expect(committedIds(leader)).toEqual(['n0#1', 'n1#1', 'n2#1', 'n3#1'])
    expect(n3.view().status).toBe('Up')
  }, 10_000)

  test('a real join takes two steps: the leader adds a joiner only after it echoed the probe', () => {
    const net = cluster(2)
    const n2 = net.start('n2', ['n0'])
    net.runUntil(() => converged(net), 300, 'n2 joins')
    const toLeader = net.sent.filter((m) => (m.type === 'join_request' && m.to.startsWith('n0')) || (m.type === 'leader_hint' && m.to === n2.selfId))
    const firstProbe = toLeader.findIndex((m) => m.type === 'leader_hint' && m.probe !== undefined)
    expect(firstProbe).toBeGreaterThan(0)
    const probe = (toLeader[firstProbe] as Extract<RaftMessage, { type: 'leader_hint' }>).probe
    expect(toLeader.slice(firstProbe + 1).some((m) => m.type === 'join_request' && m.probe === probe)).toBe(true)
  })

  test('the leader does not add a voter while too few members are fresh to commit it', () => {
    const net = cluster(3)
    const leader = net.node('n0')
    // The leader hears neither follower; it stays leader until check-quorum ends its term, and
    // meanwhile a joiner that reaches it asks in. {n0, n3} of 4 could never commit the addition.
    net.cut('n0', 'n1')
    net.cut('n0', 'n2')
    for (let t = 0; t < 3 * heartbeatTicks + 1; t++) net.tick()
    expect(leader.role).toBe('leader')
    const length = leader.entries.length
    net.start('n3', ['n0'])
    while (leader.role === 'leader') net.tick()
    expect(leader.entries.slice(length).some((e) => e.change.type === 'add')).toBe(false)
    expect(net.sent.some((m) => m.type === 'join_request' && m.from === 'n3#1' && m.probe !== undefined)).toBe(true) // it did ask with the probe
    net.heal()
    net.runUntil(() => converged(net), 600, 'n3 joins once the cluster is whole again')
  })
})

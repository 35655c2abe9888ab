// The membership core as a replicated log for the application: proposals (on the leader and
// forwarded by followers), pipelined appends, commits told at once, the limits on what a leader
// holds, and log compaction with snapshots bringing lagging and new followers up. A tiny
// in-process network delivers every message within the tick it was sent, in order, unless a test
// cuts a link or drops a message; the simulator's checker watches every step.
import { describe, expect, test } from 'bun:test'
import { addressOf } from '../../src/cluster/address'
import { Membership, type Compaction, type StateMachine } from '../../src/cluster/membership'
import type { Entry, RaftMessage } from '../../src/cluster/messages'
import { DEFAULT_TIMING as TIMING } from '../../src/cluster/timing'
import type { TranscriptEntry } from '../../src/transcript/entries'
import { Transcript } from '../../src/transcript/transcript'
import { Checker, membershipOptions, Prng } from '../sim/simulator'

/** Records what it applies; fails the test on an entry out of order or twice. */
class Recorder implements StateMachine {
  applied = 0
  data: unknown[] = []
  restores: number[] = []
  apply(index: number, entry: Entry): void {
    if (index !== this.applied + 1) throw new Error(`applied ${index} after ${this.applied}`)
    this.applied = index
    if (entry.change.type === 'app') this.data.push(entry.change.data)
  }
  snapshot(): unknown {
    return { applied: this.applied, data: [...this.data] }
  }
  restore(index: number, snapshot: unknown): void {
    const s = (snapshot ?? { applied: 0, data: [] }) as { applied: number; data: unknown[] }
    if (s.applied !== index) throw new Error(`restoring a state of ${s.applied} as ${index}`)
    if (index > 0) this.restores.push(index)
    this.applied = index
    this.data = [...s.data]
  }
}

class Net {
  readonly checker = new Checker()
  readonly nodes = new Map<string, Membership>()
  readonly machines = new Map<string, StateMachine>()
  readonly sent: RaftMessage[] = []
  drop: (m: RaftMessage) => boolean = () => false
  private readonly cuts = new Set<string>()
  private queue: RaftMessage[] = []
  private readonly rng = new Prng(11)

  constructor(private readonly compaction?: Compaction) {}

  start(address: string, machine: StateMachine = new Recorder()): Membership {
    const bootstrap = address === 'n0'
    const m = new Membership({ ...membershipOptions(address, '1', ['n0'], bootstrap, this.rng.next), app: machine, compaction: this.compaction })
    this.nodes.set(address, m)
    this.machines.set(address, machine)
    this.checker.mayJoin.add(m.selfId)
    return m
  }

  node(address: string): Membership {
    return this.nodes.get(address)!
  }

  recorder(address: string): Recorder {
    return this.machines.get(address) as Recorder
  }

  cut(a: string, b: string): void {
    this.cuts.add(`${a}>${b}`)
    this.cuts.add(`${b}>${a}`)
  }

  heal(): void {
    this.cuts.clear()
    this.drop = () => false
  }

  leader(): Membership | undefined {
    return [...this.nodes.values()].find((m) => m.role === 'leader')
  }

  tick(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const address of [...this.nodes.keys()].sort()) {
        const m = this.nodes.get(address)!
        m.tick()
        this.collect(m)
      }
      this.deliver()
    }
  }

  /** Collects what `m` wants to send (after a propose, which is not a step). */
  collect(m: Membership): void {
    for (const { message } of m.takeMessages()) {
      this.sent.push(message)
      this.queue.push(message)
    }
    this.checker.observe(m)
  }

  deliver(): void {
    for (let n = 0; this.queue.length > 0; n++) {
      if (n > 1_000_000) throw new Error('message storm')
      const m = this.queue.shift()!
      const to = this.nodes.get(addressOf(m.to))
      if (!to || this.cuts.has(`${addressOf(m.from)}>${addressOf(m.to)}`) || this.drop(m)) continue
      to.step(m)
      this.collect(to)
    }
  }

  runUntil(done: () => boolean, maxTicks: number, what: string): number {
    for (let t = 0; t <= maxTicks; t++) {
      if (done()) return t
      this.tick()
    }
    throw new Error(`${what} not reached within ${maxTicks} ticks`)
  }

  propose(address: string, data: unknown[]): boolean {
    const m = this.node(address)
    const taken = m.propose(data)
    this.collect(m)
    return taken
  }

  /** Every node has applied everything the leader holds. */
  caughtUp(): boolean {
    const leader = this.leader()
    if (!leader) return false
    return [...this.nodes.values()].every((m) => m.commitIndex === leader.lastIndex() && (this.machines.get(addressOf(m.selfId)) as Recorder).applied === leader.lastIndex())
  }
}

function cluster(size: number, compaction?: Compaction): Net {
  const net = new Net(compaction)
  net.start('n0')
  net.runUntil(() => net.leader() !== undefined, 5, 'bootstrap')
  for (let i = 1; i < size; i++) net.start(`n${i}`)
  net.runUntil(() => net.leader()!.membersAt(net.leader()!.commitIndex).size === size && net.caughtUp(), 100 * size, 'cluster formation')
  return net
}

const followers = (net: Net) => [...net.nodes.values()].filter((m) => m.role !== 'leader')
const addr = (m: Membership) => addressOf(m.selfId)
const appendsTo = (net: Net, to: string) => net.sent.filter((m): m is Extract<RaftMessage, { type: 'append_entries' }> => m.type === 'append_entries' && addressOf(m.to) === to)

describe('proposals', () => {
  test('on the leader: appended at once, committed and applied in order on every node', () => {
    const net = cluster(3)
    const leader = net.leader()!
    expect(net.propose(addr(leader), ['a', 'b'])).toBe(true)
    expect(leader.entryAt(leader.lastIndex())).toEqual({ term: leader.term, change: { type: 'app', data: 'b' } })
    net.runUntil(() => net.caughtUp(), 50, 'applied everywhere')
    for (const address of net.nodes.keys()) expect(net.recorder(address).data).toEqual(['a', 'b'])
  })

  test('on a follower: sent to the leader in a proposal, and applied everywhere', () => {
    const net = cluster(3)
    const follower = followers(net)[0]!
    const before = net.sent.length
    expect(net.propose(addr(follower), ['from a follower'])).toBe(true)
    expect(net.sent.slice(before)).toEqual([{ type: 'proposal', from: follower.selfId, to: net.leader()!.selfId, entries: ['from a follower'] }])
    net.runUntil(() => [...net.nodes.keys()].every((a) => net.recorder(a).data.length > 0) && net.caughtUp(), 50, 'applied everywhere')
    for (const address of net.nodes.keys()) expect(net.recorder(address).data).toEqual(['from a follower'])
  })

  test('false with nothing to propose, without a leader, or before this node is a committed member', () => {
    const net = cluster(3)
    expect(net.propose('n0', [])).toBe(false)
    const joiner = net.start('n9')
    expect(joiner.propose(['too early'])).toBe(false)
    const alone = new Membership(membershipOptions('x0', '1', ['n0'], false, () => 0.5))
    expect(alone.propose(['nobody to take it'])).toBe(false)
  })

  test('commits are told to followers at once, not at the next heartbeat', () => {
    const net = cluster(3)
    const leader = net.leader()!
    net.propose(addr(leader), ['now'])
    net.deliver() // no tick: only the messages the proposal caused
    expect(leader.commitIndex).toBe(leader.lastIndex())
    for (const f of followers(net)) {
      expect(f.commitIndex).toBe(leader.lastIndex())
      expect(net.recorder(addr(f)).data).toEqual(['now'])
    }
  })

  test('a proposal from outside the configuration is ignored', () => {
    const net = cluster(3)
    const leader = net.leader()!
    const last = leader.lastIndex()
    leader.step({ type: 'proposal', from: 'n7#1', to: leader.selfId, entries: ['forged'] })
    // A joiner the leader knows nothing of yet is not a member either.
    const joiner = net.start('n5')
    leader.step({ type: 'proposal', from: joiner.selfId, to: leader.selfId, entries: ['early'] })
    expect(leader.lastIndex()).toBe(last)
  })

  test('a follower does not take proposals: only the leader appends them', () => {
    const net = cluster(3)
    const [f1, f2] = followers(net)
    const last = f2!.lastIndex()
    f2!.step({ type: 'proposal', from: f1!.selfId, to: f2!.selfId, entries: ['misrouted'] })
    expect(f2!.lastIndex()).toBe(last)
  })
})

describe('pipelined appends', () => {
  test('a follower that matches gets new entries before the earlier ones are acknowledged', () => {
    const net = cluster(3)
    const leader = net.leader()!
    const f = addr(followers(net)[0]!)
    const before = appendsTo(net, f).length
    for (const d of ['p1', 'p2', 'p3']) net.propose(addr(leader), [d]) // nothing delivered in between
    const sent = appendsTo(net, f).slice(before)
    expect(sent.map((m) => m.entries.map((e) => (e.change as { data: unknown }).data))).toEqual([['p1'], ['p2'], ['p3']])
    expect(sent.map((m) => m.prevIndex)).toEqual([sent[0]!.prevIndex, sent[0]!.prevIndex + 1, sent[0]!.prevIndex + 2])
  })

  test('at most 1,024 entries in flight to one follower; the rest follow its answers', () => {
    const net = cluster(2)
    const leader = net.leader()!
    const f = addr(followers(net)[0]!)
    const before = appendsTo(net, f).length
    for (let i = 0; i < 1_200; i++) net.propose(addr(leader), [i])
    const inFlight = appendsTo(net, f).slice(before).reduce((n, m) => n + m.entries.length, 0)
    expect(inFlight).toBeGreaterThanOrEqual(1_024)
    expect(inFlight).toBeLessThan(1_024 + 64)
    net.runUntil(() => net.caughtUp(), 200, 'everything applied')
    expect(net.recorder(f).data).toEqual(Array.from({ length: 1_200 }, (_, i) => i))
  }, 20_000)

  test('under loss of appends and answers, probing back and resending bring every node to the same log', () => {
    const net = cluster(3)
    const rng = new Prng(3)
    let dropped = 0
    net.drop = (m) => (m.type === 'append_entries' || m.type === 'append_response') && rng.next() < 0.2 && ++dropped > 0
    const proposed: string[] = []
    for (let i = 0; i < 300; i++) {
      const leader = net.leader()
      if (leader && net.propose(addr(leader), [`e${i}`])) proposed.push(`e${i}`)
      if (i % 10 === 0) net.tick()
    }
    expect(dropped).toBeGreaterThan(20)
    net.heal()
    net.runUntil(() => net.caughtUp(), 2_000, 'every node caught up')
    const logs = [...net.nodes.keys()].map((a) => net.recorder(a).data)
    for (const log of logs) expect(log).toEqual(logs[0]!)
    // Proposals appended on a leader of a single term are all committed, in the order proposed.
    expect(logs[0]).toEqual(proposed)
  })
})

describe('limits', () => {
  test('a leader holds at most MAX_UNCOMMITTED (8,192) uncommitted entries; past it proposals are refused', () => {
    const net = cluster(3)
    const leader = net.leader()!
    for (const f of followers(net)) net.cut(addr(leader), addr(f))
    // A batch larger than the room left is taken in part, in order, not refused whole (an origin
    // with more pending than the cap would otherwise never get any of it in).
    const before = leader.lastIndex()
    expect(net.propose(addr(leader), Array.from({ length: 10 }, (_, i) => `first ${i}`))).toBe(true)
    expect(leader.lastIndex()).toBe(before + 10)
    const room = 8_192 - (leader.lastIndex() - leader.commitIndex)
    expect(net.propose(addr(leader), Array.from({ length: room + 100 }, (_, i) => i))).toBe(true)
    expect(leader.entryAt(leader.lastIndex())!.change).toEqual({ type: 'app', data: room - 1 })
    expect(net.propose(addr(leader), ['one more'])).toBe(false)
    expect(leader.lastIndex() - leader.commitIndex).toBe(8_192)
    // Forwarded ones are dropped too (their origin proposes them again later).
    const f = followers(net)[0]!
    leader.step({ type: 'proposal', from: f.selfId, to: leader.selfId, entries: ['dropped'] })
    expect(leader.lastIndex() - leader.commitIndex).toBe(8_192)
  })
})

describe('log compaction and snapshots', () => {
  const compaction = { snapshotEvery: 20, keepEntries: 5 }

  test('every snapshotEvery committed entries the log is compacted behind a snapshot, keeping keepEntries', () => {
    const net = cluster(3, compaction)
    const leader = net.leader()!
    for (let i = 0; i < 50; i++) net.propose(addr(leader), [i])
    net.runUntil(() => net.caughtUp(), 50, 'applied')
    for (const m of net.nodes.values()) {
      expect(m.snapshot).not.toBeNull()
      expect(m.logStart).toBe(m.snapshot!.index - compaction.keepEntries)
      expect(m.entryAt(m.logStart)).toBeUndefined()
      expect(m.entryAt(m.logStart + 1)).toBeDefined()
      expect(m.lastIndex()).toBe(m.logStart + m.entries.length)
      expect(m.snapshot!.app).toEqual({ applied: m.snapshot!.index, data: net.recorder(addr(m)).data.slice(0, (m.snapshot!.app as { data: unknown[] }).data.length) })
      // The member list survives compaction.
      expect([...m.membersAt(m.commitIndex).keys()].sort()).toEqual(['n0#1', 'n1#1', 'n2#1'])
    }
  })

  test('a follower cut off past the kept entries gets the snapshot, is restored from it, then takes the rest', () => {
    const net = cluster(3, compaction)
    const leader = net.leader()!
    const lagging = addr(followers(net)[0]!)
    net.cut(addr(leader), lagging)
    for (let i = 0; i < 60; i++) net.propose(addr(leader), [i])
    net.tick(5)
    expect(leader.logStart).toBeGreaterThan(net.node(lagging).lastIndex())
    net.heal()
    net.runUntil(() => net.caughtUp(), 200, 'the lagging follower caught up')
    expect(net.sent.some((m) => m.type === 'install_snapshot' && addressOf(m.to) === lagging)).toBe(true)
    expect(net.recorder(lagging).restores.length).toBeGreaterThan(0)
    expect(net.recorder(lagging).data).toEqual(Array.from({ length: 60 }, (_, i) => i))
    for (let i = 60; i < 65; i++) net.propose(addr(net.leader()!), [i])
    net.runUntil(() => net.caughtUp(), 50, 'applied after the snapshot')
    expect(net.recorder(lagging).data).toEqual(Array.from({ length: 65 }, (_, i) => i))
  })

  test('a node joining after compaction starts from the snapshot: its transcript equals the leader\'s', () => {
    const net = new Net(compaction)
    net.start('n0', new Transcript(100))
    net.runUntil(() => net.leader() !== undefined, 5, 'bootstrap')
    const leader = net.leader()!
    const entry = (seq: number): TranscriptEntry => ({ type: 'chat', origin: leader.selfId, seq, key: `k${seq}`, username: 'alice', message: `m${seq}`, nodeAddress: 'n0', timestamp: seq })
    for (let seq = 1; seq <= 40; seq++) net.propose('n0', [entry(seq)])
    expect(leader.logStart).toBeGreaterThan(0)
    const joiner = new Transcript(100)
    net.start('n1', joiner)
    net.runUntil(() => net.node('n1').commitIndex === leader.lastIndex() && joiner.applied === leader.lastIndex(), 300, 'the joiner caught up')
    expect(net.sent.some((m) => m.type === 'install_snapshot' && addressOf(m.to) === 'n1')).toBe(true)
    const lead = net.machines.get('n0') as Transcript
    expect(joiner.after(0)).toEqual(lead.after(0))
    expect(joiner.snapshot()).toEqual(lead.snapshot())
    expect(joiner.epoch).toBe(leader.selfId)
    net.propose('n0', [entry(41)])
    net.runUntil(() => joiner.lastId === lead.lastId, 50, 'the next line')
    expect(joiner.after(0)).toEqual(lead.after(0))
  })

  describe('install_snapshot on a follower (Raft dissertation §5.3)', () => {
    const leaderId = 'n0#1'
    const member = (a: string) => ({ address: a, incarnation: '1', httpUrl: `http://${a}:3000` })
    const entries: Entry[] = [
      { term: 1, change: { type: 'add', member: member('n0') } },
      { term: 1, change: { type: 'add', member: member('n1') } },
      { term: 1, change: { type: 'noop' } },
      { term: 1, change: { type: 'app', data: 'a' } },
      { term: 1, change: { type: 'app', data: 'b' } },
    ]
    function follower(): { f: Membership; rec: Recorder } {
      const rec = new Recorder()
      const f = new Membership({ ...membershipOptions('n1', '1', ['n0'], false, () => 0.5), app: rec })
      f.step({ type: 'append_entries', from: leaderId, to: 'n1#1', term: 1, prevIndex: 0, prevTerm: 0, entries, commit: 0, unreachable: [] })
      expect(f.lastIndex()).toBe(5)
      expect(f.commitIndex).toBe(0)
      return { f, rec }
    }
    const snapshotAt = (index: number, lastTerm: number): RaftMessage => ({
      type: 'install_snapshot', from: leaderId, to: 'n1#1', term: 1, index, lastTerm,
      members: [member('n0'), member('n1')], added: ['n0#1', 'n1#1'], removed: [], app: { applied: index, data: index >= 4 ? ['a'] : [] },
    })

    test('a follower whose log agrees at the snapshot keeps its entries after it', () => {
      const { f, rec } = follower()
      f.step(snapshotAt(4, 1))
      expect(rec.restores).toEqual([4])
      expect(f.logStart).toBe(4)
      expect(f.commitIndex).toBe(4)
      expect(f.lastIndex()).toBe(5)
      expect(f.entryAt(5)).toEqual(entries[4])
      expect(f.takeMessages().at(-1)!.message).toMatchObject({ type: 'append_response', success: true, matchIndex: 4 })
      f.step({ type: 'append_entries', from: leaderId, to: 'n1#1', term: 1, prevIndex: 5, prevTerm: 1, entries: [], commit: 5, unreachable: [] })
      expect(rec.data).toEqual(['a', 'b'])
      expect(rec.applied).toBe(5)
    })

    test('a follower whose log disagrees there has its log replaced', () => {
      const { f, rec } = follower()
      f.step(snapshotAt(4, 2)) // the leader's entry 4 is of term 2: ours is not
      expect(rec.restores).toEqual([4])
      expect(f.logStart).toBe(4)
      expect(f.lastIndex()).toBe(4)
      expect(f.entryAt(5)).toBeUndefined()
      expect([...f.membersAt(4).keys()].sort()).toEqual(['n0#1', 'n1#1'])
    })

    test('a snapshot no newer than what the follower committed changes nothing', () => {
      const { f, rec } = follower()
      f.step({ type: 'append_entries', from: leaderId, to: 'n1#1', term: 1, prevIndex: 5, prevTerm: 1, entries: [], commit: 5, unreachable: [] })
      f.step(snapshotAt(4, 1))
      expect(rec.restores).toEqual([])
      expect(rec.data).toEqual(['a', 'b'])
      expect(f.logStart).toBe(0)
      expect(f.takeMessages().at(-1)!.message).toMatchObject({ type: 'append_response', success: true, matchIndex: 5 })
    })
  })
})

// The shell's clock for the membership core. A busy event loop fires the 10 ms tick timer late;
// if the core counted firings, a busy leader's heartbeats would go out too seldom and its
// followers would elect another leader (what a client flood on the leader's node did). Three real
// ClusterNodes on the in-memory network and a virtual clock; the leader's timers fire only every
// 150 ms, as in a loop whose turns take that long.
import { expect, test } from 'bun:test'
import { MemoryNetwork } from '../../src/cluster/memory-transport'
import { ClusterNode } from '../../src/cluster/node'
import { DEFAULT_TIMING } from '../../src/cluster/timing'
import { ok } from '../../src/result'
import type { Clock, NodeIo } from '../../src/io'
import { VirtualClock } from '../sim/virtual-clock'

/** `clock`, but while `busy.ms` is set its timers fire at most once per that many ms (late, not lost). */
function busyClock(clock: VirtualClock, busy: { ms: number }): Clock {
  let last = clock.now()
  const after = (ms: number, fn: () => void): (() => void) => {
    let cancel = clock.after(ms, function fire() {
      const wait = last + busy.ms - clock.now()
      if (wait > 0) return void (cancel = clock.after(wait, fire))
      last = clock.now()
      fn()
    })
    return () => cancel()
  }
  return { now: clock.now, after, defer: clock.defer, soon: clock.soon, every: clock.every }
}

async function threeNodes(leaderBusy: { ms: number }) {
  const clock = new VirtualClock()
  let seed = 1
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647)
  const network = new MemoryNetwork(clock, random)
  const addresses = ['bun://T@a:1', 'bun://T@b:1', 'bun://T@c:1']
  const nodes = addresses.map((address, i) => {
    const io: NodeIo = { transport: network.factory, clock: i === 0 ? busyClock(clock, leaderBusy) : clock, random, newIncarnation: () => `${i}`, log: () => {} }
    const app = { machine: { apply() {}, snapshot: () => null, restore() {} }, validateEntry: ok, validateSnapshot: ok }
    return new ClusterNode({ systemName: 'T', address, httpUrl: `http://${i}`, seeds: addresses, timing: DEFAULT_TIMING }, io, () => ok({ type: 'none' }), app)
  })
  const listener = { onMembers: () => {}, onMessage: () => ok(undefined), onPeerConnected: () => {}, checkProposal: () => ok(undefined), afterStep: () => {} }
  for (const node of nodes) await node.start(listener)
  const run = (ms: number) => clock.runUntil(clock.elapsed + ms)
  return { nodes, run }
}

test('a leader whose tick timer fires late still heartbeats on time: no election, the same term', async () => {
  const busy = { ms: 0 }
  const { nodes, run } = await threeNodes(busy)
  run(5000)
  const [a, b] = nodes.map((n) => n.view())
  expect(a!.role).toBe('leader')
  expect(b!.members.filter((m) => m.status === 'Up')).toHaveLength(3)
  const term = b!.term
  busy.ms = 150 // every turn of the leader's loop takes 150 ms from now on
  run(20_000)
  expect(nodes[0]!.view().role).toBe('leader')
  for (const follower of nodes.slice(1)) {
    expect(follower.view().term).toBe(term)
    expect(follower.view().leaderId).toBe(nodes[0]!.view().selfId)
  }
})

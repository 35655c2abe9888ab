// Failures on real processes with the default timeouts: a killed leader, a restart on the same
// ports, a paused follower, and losing two of five nodes. Failover times are printed.
import { afterEach, describe, expect, test } from 'bun:test'
import { startCluster, startNode, stopAll, waitFor, waitForConvergence, type NodeHandle } from '../support/cluster'
import { sees, userPool } from '../support/ws-client'

const users = userPool()
afterEach(async () => {
  await users.closeAll()
  await stopAll()
}, 30_000)

const user = (node: NodeHandle, name: string) => users.connect(node.httpUrl, name)

async function leaderOf(nodes: NodeHandle[]): Promise<NodeHandle> {
  const info = await nodes[0]!.info()
  const leader = nodes.find((n) => n.address === info.leader)
  if (!leader) throw new Error(`no leader among ${nodes.map((n) => n.address)}: ${JSON.stringify(info)}`)
  return leader
}

/** Restarts a killed node on the same ports and seeds, as an operator would. */
function restart(node: NodeHandle, all: NodeHandle[]) {
  return startNode({
    clusterPort: node.clusterPort,
    httpPort: node.httpPort,
    seeds: all.map((n) => `127.0.0.1:${n.clusterPort}`),
    name: `${node.name}-restarted`,
  })
}

describe('failover', () => {
  test('SIGKILL of the leader: a new leader, the dead member removed, its users shown as left, chat goes on; a restart rejoins', async () => {
    const nodes = await startCluster(3)
    const leader = await leaderOf(nodes)
    const survivors = nodes.filter((n) => n !== leader)
    const [a, b] = [await user(survivors[0]!, 'anna'), await user(survivors[1]!, 'ben')]
    await user(leader, 'doomed')
    await a.next((f) => f.type === 'system' && f.username === 'doomed' && f.event === 'join')
    const before = (await survivors[0]!.info()).term

    const killedAt = performance.now()
    leader.kill('SIGKILL')
    const newLeader = await waitFor(async () => {
      const infos = await Promise.all(survivors.map((n) => n.info()))
      const leaders = new Set(infos.map((i) => i.leader))
      return leaders.size === 1 && infos[0].leader && infos[0].leader !== leader.address ? infos[0].leader : null
    }, { timeoutMs: 10_000, message: 'no new leader after the leader was killed' })
    const electedMs = performance.now() - killedAt
    await waitFor(async () => {
      const infos = await Promise.all(survivors.map((n) => n.info()))
      return infos.every((i) => i.members.length === 2 && i.members.every((m: any) => m.status === 'Up' && m.address !== leader.address))
    }, { timeoutMs: 15_000, message: 'the dead leader was not removed' })
    const removedMs = performance.now() - killedAt
    console.log(`failover (3 nodes, leader SIGKILL): new leader after ${electedMs.toFixed(0)} ms, dead member removed after ${removedMs.toFixed(0)} ms`)
    expect(survivors.map((n) => n.address)).toContain(newLeader)
    expect((await survivors[0]!.info()).term).toBeGreaterThan(before)

    await a.next((f) => f.type === 'system' && f.username === 'doomed' && f.event === 'leave')
    a.sendChat('still here?')
    expect(await b.next((f) => f.type === 'chat' && f.message === 'still here?')).toMatchObject({ username: 'anna', nodeAddress: survivors[0]!.address })

    const restartedAt = performance.now()
    const again = await restart(leader, nodes)
    // A user who talks at once, while the node may still be joining, is heard by everyone.
    const carl = await user(again, 'carl')
    carl.sendChat('back again')
    await waitForConvergence([...survivors, again], { timeoutMs: 15_000 })
    console.log(`restarted node Up in all views ${(performance.now() - restartedAt).toFixed(0)} ms after its restart`)
    const info = await again.info()
    expect(info.members.map((m: any) => m.status)).toEqual(['Up', 'Up', 'Up'])
    expect(await a.next((f) => f.type === 'chat' && f.message === 'back again')).toMatchObject({ nodeAddress: again.address })
    expect(await b.next((f) => f.type === 'chat' && f.message === 'back again')).toMatchObject({ username: 'carl' })
  }, 60_000)

  test('SIGSTOP a follower past the down timeout: it is removed; after SIGCONT it rejoins by itself and keeps its users', async () => {
    const nodes = await startCluster(3)
    const leader = await leaderOf(nodes)
    const paused = nodes.find((n) => n !== leader)!
    const others = nodes.filter((n) => n !== paused)
    const sleeper = await user(paused, 'sleeper')
    const watcher = await user(others[0]!, 'watcher')
    await waitFor(() => sees(watcher, 'sleeper'), { message: 'the watcher never saw the sleeper' })
    const oldIncarnation = (await paused.info()).incarnation

    paused.kill('SIGSTOP')
    await waitFor(async () => {
      const info = await leader.info()
      return info.members.some((m: any) => m.address === paused.address && m.reachable === false)
    }, { timeoutMs: 5_000, message: 'the paused node was never shown unreachable' })
    await waitFor(async () => {
      const infos = await Promise.all(others.map((n) => n.info()))
      return infos.every((i) => i.members.length === 2)
    }, { timeoutMs: 10_000, message: 'the paused node was not removed' })
    await watcher.next((f) => f.type === 'system' && f.username === 'sleeper' && f.event === 'leave')

    const resumedAt = performance.now()
    paused.kill('SIGCONT')
    await waitForConvergence(nodes, { timeoutMs: 15_000 })
    console.log(`paused follower rejoined ${(performance.now() - resumedAt).toFixed(0)} ms after SIGCONT`)
    const info = await paused.info()
    expect(info.incarnation).not.toBe(oldIncarnation)
    expect(paused.logs()).toContain('rejoining as incarnation')
    expect(sleeper.isClosed()).toBe(false)
    await watcher.next((f) => f.type === 'system' && f.username === 'sleeper' && f.event === 'join')
    sleeper.sendChat('I was asleep')
    expect(await watcher.next((f) => f.type === 'chat' && f.message === 'I was asleep')).toMatchObject({ username: 'sleeper' })
  }, 60_000)

  test('five nodes lose two (the leader among them): the three keep a leader and remove the dead', async () => {
    const nodes = await startCluster(5)
    const leader = await leaderOf(nodes)
    const victims = [leader, nodes.find((n) => n !== leader)!]
    const survivors = nodes.filter((n) => !victims.includes(n))
    const killedAt = performance.now()
    for (const v of victims) v.kill('SIGKILL')
    await waitForConvergence(survivors, { timeoutMs: 20_000 })
    console.log(`failover (5 nodes, leader + 1 SIGKILL): converged on 3 Up members after ${(performance.now() - killedAt).toFixed(0)} ms`)
    const info = await survivors[0]!.info()
    expect(survivors.map((n) => n.address)).toContain(info.leader)
    expect(info.members).toHaveLength(3)
  }, 60_000)
})

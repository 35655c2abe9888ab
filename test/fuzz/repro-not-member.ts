// Reproduction (issue 7, insider wedge): a process that holds the cluster secret but is not a
// member sends one `not_member` frame to each node. Each node takes it as "your removal is
// committed" (Membership.step, case 'not_member', believes any sender) and rejoins as a new
// incarnation that does not bootstrap, so with every node removed nobody founds the cluster
// again: no leader, no members, for good. Found by `bun run fuzz --only cluster.insider_raft
// --seed 2`. Run: bun run test/fuzz/repro-not-member.ts (exit 0: wedged as described; 1: not).
// Believing not_member only from a member of our configuration would not be enough: the handshake
// proves the secret, not the address, so an insider may claim a real member's address in its hello.
import { freePort, HOST, startCluster, stopAll, waitUntil } from '../support/cluster'
import { connectRogue } from '../support/rogue-peer'

const SECRET = 'repro-cluster-secret-0123456789'
const nodes = await startCluster(3, { env: { CLUSTER_SECRET: SECRET } })
let wedged = false
try {
  const infos = await Promise.all(nodes.map((n) => n.info()))
  console.log('before:', infos.map((i) => `${i.selfAddress} leader=${i.leader} term=${i.term} members=${i.members.length}`).join('\n        '))
  const rogueAddress = `bun://WebSocketClusterSystem@${HOST}:${await freePort()}`
  for (const [i, node] of nodes.entries()) {
    const id = `${node.address}#${infos[i]!.incarnation}`
    const rogue = await connectRogue(node.clusterPort)
    const verdict = await rogue.handshake({ address: rogueAddress, secrets: [SECRET], target: node.address })
    if (!verdict.ok) throw new Error(`handshake: ${verdict.error}`)
    rogue.send({ type: 'not_member', from: `${rogueAddress}#r`, to: id })
    await waitUntil(async () => (await node.info()).incarnation !== infos[i]!.incarnation, 5000, 'the node to drop its incarnation')
    rogue.close()
  }
  // Give the cluster far longer than any election or join retry takes.
  const deadline = performance.now() + 20_000
  let last: any[] = []
  while (performance.now() < deadline) {
    last = await Promise.all(nodes.map((n) => n.info()))
    if (last.some((i) => i.leader)) break
    await Bun.sleep(200)
  }
  console.log('20 s later:', last.map((i) => `${i.selfAddress} status=${i.status} leader=${i.leader} members=${i.members.length}`).join('\n            '))
  wedged = last.every((i) => !i.leader && i.members.length === 0)
  console.log(wedged ? 'WEDGED: no leader and no members on any node' : 'recovered')
} finally {
  await stopAll(3000)
}
process.exit(wedged ? 0 : 1)

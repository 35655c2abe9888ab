// A rolling restart on real processes: three nodes, users on each chatting with numbered
// messages; each node in turn gets SIGTERM (drain: `moving` frame, 1012, leave, exit) and is
// started again once it is gone. Every user must be back on another node within 2 s of its node
// being told to stop, and every user must end with every numbered message exactly once, in one
// order the same for everyone: users resume after the last line they saw and send again what
// was not acknowledged, as the page does (test/support/moving-user.ts).
// `ROLLING_USERS=300 bun test test/e2e/rolling-restart.test.ts` measures with more users; the
// figures are printed.
import { afterAll, expect, setDefaultTimeout, test } from 'bun:test'
import { startCluster, startNode, stopAll, waitForConvergence, type NodeHandle } from '../support/cluster'
import { MovingUser } from '../support/moving-user'

setDefaultTimeout(120_000)
const USERS = Number(process.env.ROLLING_USERS ?? 60)
const BACK_WITHIN_MS = 2000

afterAll(() => stopAll())

test(`rolling restart of 3 nodes with ${USERS} users: every user back within ${BACK_WITHIN_MS} ms of its node stopping`, async () => {
  // Every test user comes from one address: lift the per-address caps a real deployment keeps.
  const args = ['--max-connections-per-ip', String(USERS * 4), '--connect-rate', '0']
  let nodes = await startCluster(3, { args })
  const users: MovingUser[] = []
  for (let i = 0; i < USERS; i++) users.push(new MovingUser(`u${i}`, nodes[i % 3]!.httpUrl))
  await Promise.all(users.map((u) => u.connect()))

  let sent = 0
  const talker = setInterval(() => {
    for (let k = 0; k < 3; k++) users[(sent + k * 7) % USERS]!.send(`m${sent++}`)
  }, 50)
  const report: string[] = []
  try {
    for (let i = 0; i < 3; i++) {
      const node = nodes[i]!
      const onIt = users.filter((u) => u.httpUrl === node.httpUrl)
      const before = new Map(onIt.map((u) => [u, u.moves.length]))
      const stoppedAt = performance.now()
      node.kill('SIGTERM')
      const exitCode = await node.exited
      const exitMs = performance.now() - stoppedAt
      const deadline = stoppedAt + 10_000
      while (onIt.some((u) => u.moves.length === before.get(u)) && performance.now() < deadline) await Bun.sleep(20)
      const times = onIt.map((u) => (u.moves.at(-1) && u.moves.length > before.get(u)! ? u.moves.at(-1)!.closedAt + u.moves.at(-1)!.ms - stoppedAt : Infinity))
      const worst = Math.max(...times)
      report.push(`node ${i + 1}: exit ${exitCode} after ${exitMs.toFixed(0)} ms; ${onIt.length} users back on other nodes, worst ${worst.toFixed(0)} ms after SIGTERM`)
      expect(exitCode).toBe(0)
      expect(users.flatMap((u) => u.failures)).toEqual([])
      expect(worst).toBeLessThanOrEqual(BACK_WITHIN_MS)
      const restarted = await startNode({ clusterPort: node.clusterPort, httpPort: node.httpPort, seeds: nodes.map((n) => `127.0.0.1:${n.clusterPort}`), name: `node${i + 1}-restarted`, args })
      nodes = nodes.map((n) => (n === node ? restarted : n))
      await waitForConvergence(nodes, { timeoutMs: 30_000 })
    }
  } finally {
    clearInterval(talker)
  }
  // Everyone still connected at the end: every numbered message once, all in the same order.
  const deadline = performance.now() + 10_000
  const total = sent
  const complete = () => users.every((u) => u.pending === 0 && new Set(u.chats.map((c) => c.message)).size >= total)
  while (!complete() && performance.now() < deadline) await Bun.sleep(50)
  const missing = users.map((u) => total - new Set(u.chats.map((c) => c.message)).size)
  const repeated = users.map((u) => u.chats.length - new Set(u.chats.map((c) => c.id)).size)
  report.push(`${total} messages said during the restarts; per user missing: max ${Math.max(...missing)}, repeated: max ${Math.max(...repeated)}; unacknowledged at the end: ${users.reduce((n, u) => n + u.pending, 0)}`)
  console.log(report.join('\n'))
  expect(Math.max(...missing)).toBe(0)
  expect(Math.max(...repeated)).toBe(0)
  const order = (u: MovingUser) => u.chats.map((c) => `${c.id}:${c.message}`).join(' ')
  const reference = order(users[0]!)
  expect(users.filter((u) => order(u) !== reference).map((u) => u.username)).toEqual([])
  await Promise.all(users.map((u) => u.stop()))
})

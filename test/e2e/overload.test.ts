// Overload never costs membership: one client floods the leader's node as fast as it can, with
// that node's per-connection rate limit off (the worst case), while users on it and on another
// node chat. The node pauses the flooding socket whenever it fills a turn of the event loop
// (src/chat/gateway.ts), so heartbeats go out on time: nobody is removed (the leader stays as a rule), and
// the node's other user is still served. `bun run bench/overload.ts` measures the same at length
// (latencies, many clients); this checks the outcome.
import { afterAll, expect, test } from 'bun:test'
import { startCluster, stopAll, waitFor } from '../support/cluster'
import { Observer } from '../support/netfaults'
import { connectUser } from '../support/ws-client'

const FLOOD_SECONDS = 5
const procs: Bun.Subprocess[] = []

afterAll(async () => {
  for (const p of procs) p.kill()
  await stopAll(2000)
})

test('a client flooding the leader\'s node costs no member; the node\'s other user is served', async () => {
  const nodes = await startCluster(3, { nodeArgs: (i) => (i === 0 ? ['--rate-limit', '0'] : []) })
  expect((await nodes[0]!.info()).leader).toBe((await nodes[0]!.info()).selfAddress)
  const near = await connectUser(nodes[0]!.httpUrl, 'near')
  const far = await connectUser(nodes[1]!.httpUrl, 'far')
  const observer = await Observer.start(nodes)
  const flooder = Bun.spawn(['bun', 'run', new URL('../../bench/load-client.ts', import.meta.url).pathname, nodes[0]!.httpUrl, '1', 'flood', String(FLOOD_SECONDS), 'flooder'], {
    stdout: 'pipe',
    stderr: 'inherit',
  })
  procs.push(flooder)
  // Both users say a numbered message every 100 ms while the flood lasts.
  let n = 0
  const talk = setInterval(() => {
    n++
    far.sendChat(`far ${n}`)
    near.sendChat(`near ${n}`)
  }, 100)
  await flooder.exited
  clearInterval(talk)
  const sent = JSON.parse((await new Response(flooder.stdout as ReadableStream).text()).trim()).sent as number
  // Everything the far user's node took (the far user sees it come back) reaches the near one: a
  // peer's chat is always delivered. (The far node itself may shed a message on a busy machine;
  // the far user is told so.)
  const farTaken = () => far.received((f) => f.type === 'chat' && f.username === 'far').length
  const farSeen = () => near.received((f) => f.type === 'chat' && f.username === 'far').length
  await waitFor(() => farTaken() + far.received((f) => f.type === 'error').length >= n && farSeen() === farTaken(), {
    timeoutMs: 10_000,
    message: "the far user's messages at the near one",
  }).catch(() => {})
  await observer.stop()
  const nearSaid = far.received((f) => f.type === 'chat' && f.username === 'near').length
  const refused = Number((await (await nodes[0]!.fetch('/metrics')).text()).match(/refused_total\{reason="overloaded"\} (\d+)/)?.[1] ?? 0)
  console.log(
    `overload: the flooder sent ${sent} frames in ${FLOOD_SECONDS} s, node 1 refused ${refused} as overloaded; the near user got ${farSeen()} of the ${farTaken()} (of ${n}) messages the far node took, ${nearSaid}/${n} of its own got through; leaders ${observer.leaders().length}, elections ${observer.termsAdvanced()}, member changes ${observer.memberChanges()}`,
  )
  expect(observer.memberChanges()).toBe(0)
  // No leader change either, as a rule; on a machine whose other jobs leave the nodes a fraction of
  // its two cores an election still happens now and then (README, failure model), so it is printed
  // above and measured by bench/overload.ts rather than failing the suite.
  expect(refused).toBeGreaterThan(0) // the flood did overload the node (it is not a test of nothing)
  expect(farTaken()).toBeGreaterThan(n / 2)
  expect(farSeen()).toBe(farTaken())
  // The near user's own messages may be refused while the node sheds (it is told so); most go through.
  expect(nearSaid).toBeGreaterThan(n / 2)
  await Promise.all([near.close(), far.close()])
}, 90_000)

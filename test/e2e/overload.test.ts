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
  // Both users say a numbered message every 100 ms while the flood lasts. The near user sends
  // as the page does, with a clientMsgId, and sends again what was not acknowledged.
  let n = 0
  const sayNear = (i: number) => near.send(JSON.stringify({ type: 'chat', message: `near ${i}`, clientMsgId: `near-${i}` }))
  const talk = setInterval(() => {
    n++
    far.sendChat(`far ${n}`)
    sayNear(n)
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
  // What the node refused while it shed (it said so), the near user sends again, as the page does.
  const acked = () => new Set(near.received((f) => f.type === 'ack').map((f) => f.clientMsgId))
  const tookFirstTime = acked().size
  await waitFor(
    () => {
      const done = acked()
      // A few at a time, as the page paces its resends: a burst is what a shedding node pauses.
      let resent = 0
      for (let i = 1; i <= n && resent < 8; i++) if (!done.has(`near-${i}`)) sayNear(i), resent++
      return done.size === n
    },
    { timeoutMs: 20_000, intervalMs: 500, message: `the near user's messages acknowledged (${acked().size}/${n}; errors ${near.received((f) => f.type === 'error').map((f) => f.code).slice(-3)}; closed ${near.isClosed()})` },
  )
  await waitFor(() => far.received((f) => f.type === 'chat' && f.username === 'near').length >= n, { timeoutMs: 10_000, message: "the near user's messages at the far one" })
  await observer.stop()
  const nearSaid = far.received((f) => f.type === 'chat' && f.username === 'near').length
  const refused = Number((await (await nodes[0]!.fetch('/metrics')).text()).match(/refused_total\{reason="overloaded"\} (\d+)/)?.[1] ?? 0)
  console.log(
    `overload: the flooder sent ${sent} frames in ${FLOOD_SECONDS} s, node 1 refused ${refused} as overloaded; the near user got ${farSeen()} of the ${farTaken()} (of ${n}) messages the far node took, ${tookFirstTime}/${n} of its own taken at the first try, all ${nearSaid} once sent again; leaders ${observer.leaders().length}, elections ${observer.termsAdvanced()}, member changes ${observer.memberChanges()}`,
  )
  expect(observer.memberChanges()).toBe(0)
  // No leader change either, as a rule; on a machine whose other jobs leave the nodes a fraction of
  // its two cores an election still happens now and then (README, failure model), so it is printed
  // above and measured by bench/overload.ts rather than failing the suite.
  expect(refused).toBeGreaterThan(0) // the flood did overload the node (it is not a test of nothing)
  expect(farTaken()).toBeGreaterThan(n / 2)
  expect(farSeen()).toBe(farTaken())
  // The near user's own messages may be refused while the node sheds (it is told so); sent again,
  // every one is taken, once.
  expect(nearSaid).toBe(n)
  expect(new Set(far.received((f) => f.type === 'chat' && f.username === 'near').map((f) => f.message)).size).toBe(n)
  await Promise.all([near.close(), far.close()])
}, 90_000)

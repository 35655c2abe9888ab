// Overload never costs membership. (1) One client floods the leader's node as fast as it can, with
// that node's per-connection rate limit off (the worst case), while users on it and on another
// node chat. The node pauses the flooding socket whenever it fills a turn of the event loop or
// the line window, and closes it (4429) once it sends on regardless (src/chat/gateway.ts), so
// heartbeats go out on time: nobody is removed (the leader stays as a rule), and the node's other
// user is still served. (2) 500 clients open sockets at the leader's node at once
// and each says 20 messages a second (the rate limit): the join storm is admitted a turn's budget at
// a time (the rest 503 and retry), so no member is removed and the leader stays. `bun run
// bench/overload.ts` measures the same at length (latencies against a quiet baseline); this checks
// the outcome.
import { afterAll, afterEach, expect, test } from 'bun:test'
import { startCluster, stopAll, waitFor } from '../support/cluster'
import { Observer } from '../support/netfaults'
import { connectUser } from '../support/ws-client'

const FLOOD_SECONDS = 5
const procs: Bun.Subprocess[] = []

afterAll(async () => {
  for (const p of procs) p.kill()
  await stopAll(2000)
})
// One cluster at a time: the second test must not share the machine with the first one's nodes.
afterEach(async () => {
  for (const p of procs.splice(0)) p.kill()
  await stopAll(2000)
})

type Client = Awaited<ReturnType<typeof connectUser>>

/**
 * Sends again, as the page does, whatever of `near-1`..`near-n` the node has not acknowledged
 * (it refused them while it shed, and said so): a few at a time, as the page paces its resends,
 * since a burst is what a shedding node pauses. Until all are acknowledged.
 */
function resendUntilAcked(near: Client, sayNear: (i: number) => void, n: number, detail = () => ''): Promise<unknown> {
  const acked = () => new Set(near.received((f) => f.type === 'ack').map((f) => f.clientMsgId))
  return waitFor(
    () => {
      const done = acked()
      let resent = 0
      for (let i = 1; i <= n && resent < 8; i++) if (!done.has(`near-${i}`)) sayNear(i), resent++
      return done.size === n
    },
    { timeoutMs: 20_000, intervalMs: 500, message: `the near user's messages acknowledged (${acked().size}/${n}${detail()})` },
  )
}

const pct = (xs: number[], p: number) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!)

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
  await resendUntilAcked(near, sayNear, n, () => `; errors ${near.received((f) => f.type === 'error').map((f) => f.code).slice(-3)}; closed ${near.isClosed()}`)
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

const MANY = 500
const MANY_SECONDS = 8
const MANY_PROCESSES = 2

test(`${MANY} clients at the rate limit opening at once on the leader's node: no member removed, no leader change; every user is served`, async () => {
  const nodes = await startCluster(3, { nodeArgs: (i) => (i === 0 ? ['--max-connections-per-ip', String(MANY + 10)] : []) })
  expect((await nodes[0]!.info()).leader).toBe((await nodes[0]!.info()).selfAddress)
  const near = await connectUser(nodes[0]!.httpUrl, 'near')
  const users = [near, await connectUser(nodes[1]!.httpUrl, 'far'), await connectUser(nodes[2]!.httpUrl, 'farther')]
  // Latency of each user's lines at the others: at the leader's node, and between the other two.
  const atNear: number[] = []
  const apart: number[] = []
  users.forEach((u, r) =>
    u.ws.addEventListener('message', (event) => {
      const f = JSON.parse(String(event.data))
      if (f.type !== 'chat' || f.username === u.username || !/^(near|far|farther) \d+ at \d+$/.test(f.message)) return
      const ms = Date.now() - Number(f.message.split(' ')[3])
      if (r === 0) atNear.push(ms)
      else if (f.username !== 'near') apart.push(ms)
    }),
  )
  const observer = await Observer.start(nodes)
  const load = Array.from({ length: MANY_PROCESSES }, (_, k) =>
    Bun.spawn(['bun', 'run', new URL('../../bench/load-client.ts', import.meta.url).pathname, nodes[0]!.httpUrl, String(MANY / MANY_PROCESSES), '20', String(MANY_SECONDS), `m${k}x`], { stdout: 'pipe', stderr: 'inherit' }),
  )
  procs.push(...load)
  // Each user says a numbered, timestamped line every 100 ms while the load lasts; the near user as
  // the page does (clientMsgId, sent again when not acknowledged).
  let n = 0
  const sayNear = (i: number, at = Date.now()) => near.send(JSON.stringify({ type: 'chat', message: `near ${i} at ${at}`, clientMsgId: `near-${i}` }))
  const talk = setInterval(() => {
    n++
    sayNear(n)
    users[1]!.sendChat(`far ${n} at ${Date.now()}`)
    users[2]!.sendChat(`farther ${n} at ${Date.now()}`)
  }, 100)
  await Promise.all(load.map((p) => p.exited))
  clearInterval(talk)
  const reports = await Promise.all(load.map(async (p) => JSON.parse((await new Response(p.stdout as ReadableStream).text()).trim())))
  await resendUntilAcked(near, sayNear, n)
  // Lines the far nodes took reach the near user (a line a far node shed, its user was told of).
  const taken = (u: (typeof users)[number]) => u.received((f) => f.type === 'chat' && f.username === u.username).length
  const seenAtNear = (name: string) => near.received((f) => f.type === 'chat' && f.username === name).length
  await waitFor(() => seenAtNear('far') === taken(users[1]!) && seenAtNear('farther') === taken(users[2]!), { timeoutMs: 10_000, message: "the far users' lines at the near user" })
  await observer.stop()
  const metrics = await (await nodes[0]!.fetch('/metrics')).text()
  const refused = (reason: string) => Number(metrics.match(new RegExp(`refused_total\\{reason="${reason}"\\} (\\d+)`))?.[1] ?? 0)
  const open = reports.reduce((a, r) => a + r.open, 0)
  const sent = reports.reduce((a, r) => a + r.sent, 0)
  console.log(
    `many clients: ${open}/${MANY} load sockets open at the end (${reports.reduce((a, r) => a + r.retries, 0)} connects refused and retried), ${sent} lines sent, node 1 refused ${refused('overloaded')} as overloaded and ${refused('rate_limited')} as over the rate; latency p50/p99 at the near user ${pct(atNear, 50)}/${pct(atNear, 99)} ms (${atNear.length}), between the other nodes ${pct(apart, 50)}/${pct(apart, 99)} ms (${apart.length}); near user's ${n} all acked; leaders ${observer.leaders().length}, elections ${observer.termsAdvanced()}, member changes ${observer.memberChanges()}`,
  )
  expect(observer.memberChanges()).toBe(0)
  expect(observer.termsAdvanced()).toBe(0)
  expect(observer.leaders()).toHaveLength(1)
  // The load was there: most sockets got in (the rest were still retrying), and spoke at least a
  // second's worth at the limit.
  expect(open).toBeGreaterThan(MANY / 2)
  expect(sent).toBeGreaterThan(MANY * 20)
  expect(taken(users[1]!)).toBeGreaterThan(n / 2)
  await Promise.all(users.map((u) => u.close()))
}, 90_000)

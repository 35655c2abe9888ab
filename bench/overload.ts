// Overload must not cost membership: `bun run bench/overload.ts [--clients 500] [--seconds 10] [--generator-nice 19]`.
// Three nodes on loopback. Probe users (one per node) send timestamped messages every 100 ms and
// measure delivery latency, first quiet, then while node 1 is loaded: (1) one client flooding as
// fast as it can (node 1 runs with --rate-limit 0, the worst case), (2) many clients each at the
// rate limit, spread over several processes. Reports p50/p99 at other nodes' users and at node 1's
// other user, how often a user on node 1 saying a line every 2 s is heard at the first try, shed
// frames, and whether any member was removed or the leader changed.
import { loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { startCluster, stopAll, type NodeHandle } from '../test/support/cluster'
import { Observer } from '../test/support/netfaults'

const { values } = parseArgs({ options: { clients: { type: 'string', default: '500' }, seconds: { type: 'string', default: '10' }, processes: { type: 'string', default: '4' }, only: { type: 'string', default: 'flood,reflood,many' }, 'node1-args': { type: 'string', default: '' }, 'generator-nice': { type: 'string', default: '19' } } })
const seconds = Number(values.seconds)

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const sorted = [...xs].sort((a, b) => a - b)
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!)
}

/**
 * A probe user that looks only at its own kind of line. Every other line (a flood's thousands a
 * second) is matched as text and dropped: a probe that parsed and kept every frame, as the test
 * client does, measured its own garbage collector (spikes of 100 ms and more), not the nodes.
 */
interface ProbeUser {
  ws: WebSocket
  username: string
  errors: number
}

function openProbe(url: string, username: string, onProbe: (from: string, sentAt: number) => void): Promise<ProbeUser> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/ws/chat?username=${username}`)
    const user: ProbeUser = { ws, username, errors: 0 }
    ws.onmessage = (event) => {
      const text = String(event.data)
      if (text.includes('"probe ')) {
        const f = JSON.parse(text)
        if (f.type === 'chat' && f.username !== username) onProbe(f.username, Number(f.message.slice(6)))
      } else if (text.startsWith('{"type":"welcome"')) resolve(user)
      else if (text.startsWith('{"type":"error"')) user.errors++
    }
    ws.onclose = (event) => reject(new Error(`probe ${username} closed: ${event.code} ${event.reason}`))
  })
}

/** `openProbe`, tried again as the page does: a node sheds new sockets while it is behind. */
async function openRetrying(url: string, username: string, onProbe: (from: string, sentAt: number) => void): Promise<ProbeUser> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await openProbe(url, username, onProbe)
    } catch (error) {
      if (attempt === 10) throw error
      await Bun.sleep(200 * attempt) // a retry's backoff, not a wait for a condition
    }
  }
}

/** Probe users: each sends `probe <ms>` every 100 ms; returns latencies by who received them. */
async function probe(nodes: NodeHandle[], ms: number) {
  const tag = Math.random().toString(36).slice(2, 6)
  const names = nodes.map((_, i) => `p${i + 1}${tag}`)
  const latencies: number[][] = nodes.map(() => [])
  /** Between nodes 2 and 3 only: what node 1's load costs users who never touch node 1. */
  const apart: number[] = []
  /** At other nodes' users, lines sent after the load's first second (what a join storm at its start does not reach). */
  const settled: number[] = []
  const startedAt = Date.now()
  const users: ProbeUser[] = []
  for (const [r, node] of nodes.entries()) {
    users.push(
      await openRetrying(node.httpUrl, names[r]!, (from, sentAt) => {
        const latency = Date.now() - sentAt
        latencies[r]!.push(latency)
        if (r > 0 && from !== names[0]) apart.push(latency)
        if (r > 0 && sentAt - startedAt >= 1000) settled.push(latency)
      }),
    )
  }
  // And a user on node 1 who says a line every 2 s, as a person does: is it still heard?
  const talker = await openRetrying(nodes[0]!.httpUrl, `t1${tag}`, () => {})
  let talked = 0
  const open = (u: ProbeUser) => u.ws.readyState === WebSocket.OPEN
  const timer = setInterval(() => users.forEach((u) => open(u) && u.ws.send(JSON.stringify({ type: 'chat', message: `probe ${Date.now()}` }))), 100)
  const talk = setInterval(() => open(talker) && (talked++, talker.ws.send(JSON.stringify({ type: 'chat', message: `talk ${talked}` }))), 2000)
  await Bun.sleep(ms) // the load's length is the measurement, not a wait for a condition
  clearInterval(timer)
  clearInterval(talk)
  await Bun.sleep(1500) // late deliveries still count
  for (const u of [...users, talker]) (u.ws.onclose = null), u.ws.close()
  return { atNode1: latencies[0]!, atOthers: [...latencies[1]!, ...latencies[2]!], apart, settled, errors: users.map((u) => u.errors), talked, talkRefused: talker.errors }
}

async function scenario(name: string, nodeArgs: string[], load: (nodes: NodeHandle[]) => Bun.Subprocess[]) {
  // --node1-args: more flags for node 1, to try settings (e.g. "--max-fanout 50000").
  const extra = values['node1-args'].split(' ').filter(Boolean)
  const nodes = await startCluster(3, { nodeArgs: (i) => (i === 0 ? [...nodeArgs, ...extra] : []) })
  try {
    const quiet = await probe(nodes, 3000)
    const observer = await Observer.start(nodes)
    await nodes[0]!.fetch('/metrics') // the event-loop delay histogram starts over at each scrape: from here it covers the load
    const procs = load(nodes)
    const loaded = await probe(nodes, seconds * 1000)
    await Promise.all(procs.map((p) => p.exited))
    const reports = await Promise.all(procs.map(async (p) => JSON.parse((await new Response(p.stdout as ReadableStream).text()).trim() || '{"sent":0}')))
    const sent = reports.reduce((a, r) => a + r.sent, 0)
    const retries = reports.reduce((a, r) => a + (r.retries ?? 0), 0)
    const reconnects = reports.reduce((a, r) => a + (r.reconnects ?? 0), 0)
    const open = reports.reduce((a, r) => a + (r.open ?? 0), 0)
    // The load generator shares the machine's cores with the nodes: its CPU is part of the picture.
    const loadCpuS = procs.reduce((s, p) => s + (Number(p.resourceUsage()?.cpuTime.user ?? 0) + Number(p.resourceUsage()?.cpuTime.system ?? 0)) / 1e6, 0)
    await observer.stop()
    const metrics = await (await nodes[0]!.fetch('/metrics')).text()
    const shed = metrics.split('\n').find((l) => l.includes('overloaded') && !l.startsWith('#'))?.split(' ')[1] ?? '0'
    const maxLag = metrics.split('\n').find((l) => l.startsWith('nodejs_eventloop_lag_max_seconds'))?.split(' ')[1]
    console.log(`== ${name}: load sent ${sent} messages in ${seconds} s (${open} load sockets open at the end, ${retries} connects refused and retried, ${reconnects} reconnects after a close; load generator CPU ${loadCpuS.toFixed(1)} s at nice ${generatorNice}, machine load average ${loadavg()[0]!.toFixed(1)}); quiet p50/p99 at other nodes ${pct(quiet.atOthers, 50)}/${pct(quiet.atOthers, 99)} ms, at node 1 ${pct(quiet.atNode1, 50)}/${pct(quiet.atNode1, 99)} ms`)
    console.log(`   loaded: at other nodes' users p50/p99 ${pct(loaded.atOthers, 50)}/${pct(loaded.atOthers, 99)} ms (${loaded.atOthers.length} msgs; between nodes 2 and 3 only ${pct(loaded.apart, 50)}/${pct(loaded.apart, 99)} ms, quiet ${pct(quiet.apart, 50)}/${pct(quiet.apart, 99)} ms; after the load's first second ${pct(loaded.settled, 50)}/${pct(loaded.settled, 99)} ms), at node 1's other user ${pct(loaded.atNode1, 50)}/${pct(loaded.atNode1, 99)} ms (${loaded.atNode1.length} msgs); probe errors ${loaded.errors.join('/')}; a user on node 1 saying a line every 2 s: ${loaded.talked - loaded.talkRefused} of ${loaded.talked} taken at the first try`)
    console.log(`   membership: leaders seen ${observer.leaders().length}, elections ${observer.termsAdvanced()}, member-change snapshots ${observer.memberChanges()}; node 1 refused ${shed} frames as overloaded, worst event-loop delay under load ${Math.round(Number(maxLag) * 1000)} ms`)
  } finally {
    await stopAll(2000)
  }
}

/**
 * The load generator runs at this niceness (--generator-nice; 0 to run it as the nodes run): it
 * stands for clients on other machines. On this 2-core machine, un-niced, it takes the CPU the
 * other nodes need, and their users' p99 moved by 60-190 ms with nothing of node 1 in it.
 */
const generatorNice = Number(values['generator-nice'])
const client = (url: string, clients: number, rate: string, tag: string) =>
  Bun.spawn(['nice', '-n', String(generatorNice), 'bun', 'run', new URL('./load-client.ts', import.meta.url).pathname, url, String(clients), rate, String(seconds), tag], { stdout: 'pipe', stderr: 'inherit' })

const only = new Set(values.only.split(','))
try {
  if (only.has('flood')) await scenario('one client flooding node 1 (no rate limit there)', ['--rate-limit', '0'], (nodes) => [client(nodes[0]!.httpUrl, 1, 'flood', 'flood')])
  if (only.has('reflood')) await scenario('one client flooding node 1 and reconnecting at once after every close (default limits)', [], (nodes) => [client(nodes[0]!.httpUrl, 1, 'reflood', 'reflood')])
  const clients = Number(values.clients)
  const procs = Number(values.processes)
  if (only.has('many')) await scenario(`${clients} clients at the rate limit (20/s) on node 1, ${procs} processes`, ['--max-connections-per-ip', String(clients + 10)], (nodes) =>
    Array.from({ length: procs }, (_, k) => client(nodes[0]!.httpUrl, Math.ceil(clients / procs), '20', `l${k}x`)),
  )
} finally {
  await stopAll(2000)
}
process.exit(0)

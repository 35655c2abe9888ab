// Ours vs the baseline people would pick today: Socket.IO with its Redis adapter.
// Prints figures side by side, asserts nothing about timings.
//
//   bun run bench/compare.ts                 # full run, about 1 min on 2 cores
//   bun run bench/compare.ts --quick         # smoke run
//   bun run bench/compare.ts --help
//
// Scenario B of cluster-chat.ts, twice, in one run on one machine with one load shape:
//   ours:      3 nodes of this server (test/support/cluster.ts), C clients spread over them;
//   Socket.IO: 3 nodes of bench/socketio-baseline/server.ts and one redis-server between them
//              (started here on a free loopback port, stopped afterwards), C socket.io-client
//              clients (`transports: ['websocket']`) spread the same way.
// Both are driven and measured by cluster-chat.ts's ChatLoad (same message texts, same pacing,
// same clock), then RSS per idle connection on one fresh node of each.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { io, type Socket } from 'socket.io-client'
import { freePort, startCluster, stopAll } from '../test/support/cluster'
import { children, childrenStillRunning, findRedis, socketIoCommand, spawnChild, startedChildren, stopChild } from './children'
import {
  aboveIdle,
  benchmark,
  ChatLoad,
  deliveredPerS,
  fmt,
  inBatches,
  int,
  leftBehind,
  LOAD_FLAGS_HELP,
  loadTable,
  loadWarnings,
  now,
  onCleanup,
  parseOptions,
  perDelivery,
  BENCH_NODE_ARGS,
  rssKiB,
  runMemory,
  runScenario,
  shell,
  sleep,
  spread,
  startedPids,
  table,
  track,
  type LoadColumn,
  type LoadFigures,
  type MemoryResult,
  type Options,
  type ScenarioResult,
} from './cluster-chat'

const HELP = `usage: bun run bench/compare.ts [flags]
Scenario B (3 nodes) of cluster-chat.ts against ours and against Socket.IO + Redis.
${LOAD_FLAGS_HELP}
  --runtime R       runtime of the Socket.IO nodes: node (default; bundled with bun build
                    --target node first) or bun`

const NODES = 3
const WATCHDOG_S = 180
/** Socket.IO nodes and redis-server still running after the final stop (killed then). */
let childrenLeft: number[] = []

// ---------------------------------------------------------------- Socket.IO clients

/** Every socket.io-client socket this process opened, so an interrupt or a failure can close them. */
const sioSockets = new Set<Socket>()

/** Connects `username` to `url`; resolves on `connect`. `onChat` gets each chat text and its receipt time. */
function sioConnect(url: string, username: string, onChat: (text: string, t: number) => void, timeoutMs = 10_000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: timeoutMs, auth: { username } })
    sioSockets.add(socket)
    socket.on('chat', (frame: { message?: string }) => {
      const t = now()
      onChat(frame.message ?? '', t)
    })
    socket.once('connect', () => resolve(socket))
    socket.once('connect_error', (error) => reject(new Error(`${username}: ${url}: ${error.message}`)))
  })
}

async function sioCloseAll(sockets: Iterable<Socket>): Promise<void> {
  for (const socket of sockets) {
    socket.disconnect()
    sioSockets.delete(socket)
  }
  await sleep(300) // let the close frames go out
}

/** Scenario B against Socket.IO nodes at `urls`; `pids` are theirs and redis-server's. */
async function runSocketIo(label: string, urls: string[], pids: number[], o: Options): Promise<ScenarioResult> {
  const C = o.clients
  const nodeOf = (i: number) => i % urls.length
  let sockets: Socket[] = []
  const load = new ChatLoad({ clients: C, pids, nodeOf, send: (sender, text) => sockets[sender]!.emit('chat', text) })
  const warmups = new Int32Array(C)
  const connectStart = now()
  sockets = await inBatches(C, 50, (i) =>
    sioConnect(urls[nodeOf(i)]!, `sio-u${i}`, (text, t) => {
      if (text.startsWith('w|')) warmups[i]!++
      else load.receive(i, text, t)
    }),
  )
  const connectMs = now() - connectStart
  // Settled once a message from a client on each node reached every client (through Redis).
  const probes = Math.min(C, urls.length)
  for (let n = 0; n < probes; n++) sockets[n]!.emit('chat', `w|${n}`)
  const deadline = now() + 10_000
  while (!warmups.every((c) => c === probes)) {
    if (now() > deadline) throw new Error(`${label}: warm-up messages reached ${warmups.filter((c) => c === probes).length} of ${C} clients`)
    await sleep(20)
  }
  const phases = await load.phasesOf(o)
  await sioCloseAll(sockets)
  return { label, nodeCount: urls.length, clientsPerNode: spread(C, urls.length), connectMs, ...phases, stray: load.stray, joins: [] }
}

interface SioMemory {
  connections: number
  rssBeforeKiB: number
  rssAfterKiB: number
  openMs: number
}

/** RSS per idle connection on one fresh Socket.IO node (with its Redis adapter). */
async function socketIoMemory(k: number, command: string[], redisUrl: string): Promise<SioMemory> {
  const port = await freePort()
  const node = await spawnChild('sio-mem', [...command, '--port', String(port), '--redis', redisUrl, '--name', 'mem'], `ready ${port}`)
  try {
    await sleep(1000) // startup garbage, first GC, as for ours
    const rssBeforeKiB = rssKiB(node.pid)
    const start = now()
    const sockets = await inBatches(k, 200, (i) => sioConnect(`http://127.0.0.1:${port}`, `idle-${i}`, () => {}, 30_000))
    const openMs = now() - start
    await sleep(1000) // nothing is broadcast on a join here; let the handshakes settle
    const rssAfterKiB = rssKiB(node.pid)
    await sioCloseAll(sockets)
    return { connections: k, rssBeforeKiB, rssAfterKiB, openMs }
  } finally {
    await stopChild(node)
  }
}

// ---------------------------------------------------------------- report

function report(o: Options, lines: string[], runtime: string, ours: ScenarioResult | null, theirs: ScenarioResult | null, oursMem: MemoryResult | null, theirsMem: SioMemory | null, totalMs: number): void {
  const out: string[] = ['', '='.repeat(80), 'compare: ours vs Socket.IO + Redis adapter, 3 nodes each', '='.repeat(80), ...lines]
  out.push(
    `Socket.IO nodes: bench/socketio-baseline/server.ts under ${runtime === 'bun' ? `bun ${Bun.version}` : `node ${shell('node --version')}`}, ` +
      `socket.io-client with transports ['websocket']; one ${shell('redis-server --version').split(' ').slice(0, 3).join(' ')} on loopback`,
    `load: ${o.clients} clients, ${o.senders} send; paced ${o.senders} x ${o.messages} = ${int(o.senders * o.messages)} messages at ${o.rate > 0 ? `${o.rate} msg/s` : 'max'}` +
      (o.burstMessages > 0 ? `, then unpaced ${o.senders} x ${o.burstMessages}` : '') +
      `; every message goes to all ${o.clients} clients (sender included)`,
  )
  const sides = [ours, theirs].filter((s): s is ScenarioResult => s !== null)
  if (ours && theirs) {
    const phase = (s: ScenarioResult, paced: boolean) => (paced ? s.paced : s.burst)
    const both = (fn: (f: LoadFigures, s: ScenarioResult) => string, paced: boolean) => {
      const a = phase(ours, paced)
      const b = phase(theirs, paced)
      return [a ? fn(a, ours) : '-', b ? fn(b, theirs) : '-']
    }
    const ratio = (fn: (f: LoadFigures, s: ScenarioResult) => number, paced: boolean) => {
      const a = phase(ours, paced)
      const b = phase(theirs, paced)
      return a && b ? `x${fmt(fn(b, theirs) / fn(a, ours), 2)}` : '-'
    }
    const lat = (f: LoadFigures) => [f.latency.p50, f.latency.p95, f.latency.p99, f.latency.max].map((v) => fmt(v, 2)).join(' / ')
    const us = (seconds: number, f: LoadFigures) => (seconds * 1e6) / Math.max(1, f.received)
    const redisUs = (f: LoadFigures, s: ScenarioResult) => (s === theirs ? fmt(us(f.serverCpuS.at(-1)!, f), 2) : '-')
    const perConn = (m: { rssBeforeKiB: number; rssAfterKiB: number; connections: number } | null) =>
      m ? fmt((m.rssAfterKiB - m.rssBeforeKiB) / m.connections, 2) : 'n/a'
    const rows: string[][] = [['SIDE BY SIDE', 'ours (3 nodes)', 'Socket.IO + Redis (3 nodes)', 'Socket.IO / ours']]
    for (const paced of [true, false]) {
      if (!ours.burst && !paced) continue
      const what = paced ? `paced (${o.rate > 0 ? `${int(o.rate)} msg/s offered` : 'max'})` : 'unpaced'
      rows.push(
        [`delivered msgs/s, ${what}`, ...both((f) => int(deliveredPerS(f)), paced), ratio(deliveredPerS, paced)],
        [`latency p50 / p95 / p99 / max ms, ${what}`, ...both(lat, paced), ratio((f) => f.latency.p50, paced) + ' (p50)'],
        [`LOST deliveries, ${what}`, ...both((f) => `${int(f.lost)} of ${int(f.expected)}`, paced), ''],
        [`server CPU us per delivery, ${what}`, ...both((f) => fmt(perDelivery(f) * 1e6, 2), paced), ratio(perDelivery, paced)],
        ['  the same, less idle CPU', ...both((f, s) => fmt(us(aboveIdle(f, s), f), 2), paced), ratio((f, s) => aboveIdle(f, s) / f.received, paced)],
        ['  of which redis-server', ...both(redisUs, paced), ''],
        [`client (this process) CPU %, ${what}`, ...both((f) => fmt(f.clientCpuPct, 0), paced), ''],
      )
    }
    rows.push(
      ['server CPU idle with clients connected, % per process', ...[ours, theirs].map((s) => s.idleCpuPct.map((c) => fmt(c, 1)).join('/')), ''],
      [
        `RSS per idle connection KiB (one fresh node, ${int(oursMem?.connections ?? theirsMem?.connections ?? 0)} connections)`,
        perConn(oursMem),
        perConn(theirsMem),
        oursMem && theirsMem ? `x${fmt((theirsMem.rssAfterKiB - theirsMem.rssBeforeKiB) / (oursMem.rssAfterKiB - oursMem.rssBeforeKiB), 2)}` : '-',
      ],
      ['  node RSS before / after opening them, MiB', ...[oursMem, theirsMem].map((m) => (m ? `${fmt(m.rssBeforeKiB / 1024)} / ${fmt(m.rssAfterKiB / 1024)}` : 'n/a')), ''],
    )
    out.push('', table(rows))
    out.push(
      'Socket.IO server CPU is its 3 nodes plus redis-server (the per-process row below lists redis last).',
      'Ours pushes a `system` and a `presence` frame to every user on each join (and the user list to the joiner);',
      'the Socket.IO baseline sends nothing on a join, so our RSS figure includes that join storm and theirs does not.',
    )
  }
  const loads: LoadColumn[] = []
  for (const s of sides) loads.push({ title: `${s.label} paced`, s, f: s.paced })
  for (const s of sides) if (s.burst) loads.push({ title: `${s.label} unpaced`, s, f: s.burst })
  if (loads.length) out.push('', loadTable(loads))

  const warnings = loadWarnings(loads)
  for (const s of sides) if (s.stray) warnings.push(`${s.label}: ${int(s.stray)} chat frames outside any phase`)
  if (warnings.length) out.push('', ...warnings.map((w) => `!! ${w}`))
  out.push(
    '',
    'the 2 cores are shared by the servers and this client process: figures are relative, not capacity claims',
    `processes started: ${startedPids.size} of ours, ${startedChildren.size} Socket.IO/redis; still running after the final stop: ` +
      `${leftBehind.length + childrenLeft.length}` +
      (leftBehind.length + childrenLeft.length ? ` (pids ${[...leftBehind, ...childrenLeft].join(', ')}, killed with SIGKILL)` : ''),
    `total run time ${fmt(totalMs / 1000)} s`,
  )
  console.log(out.join('\n'))
}

// ---------------------------------------------------------------- main

const { options: o, extra } = parseOptions(Bun.argv.slice(2), HELP, { runtime: { type: 'string', default: 'node' } })
o.joinSamples = 0 // the baseline has no presence to time
const runtime = String(extra.runtime)
if (runtime !== 'node' && runtime !== 'bun') {
  console.error(`--runtime must be node or bun, got ${JSON.stringify(runtime)}\n${HELP}`)
  process.exit(2)
}
let ours: ScenarioResult | null = null
let theirs: ScenarioResult | null = null
let oursMem: MemoryResult | null = null
let theirsMem: SioMemory | null = null

// Before anything starts (and before the watchdog: an install may take a while).
const redisServer: string =
  findRedis() ??
  (() => {
    console.error(
      '\ncompare cannot run: redis-server is not installed, and scripts/deps.sh --bench could not install it (see above).\n' +
        "As root, run `apt-get update && apt-get install -y redis-server` (Debian's package), then run this again.",
    )
    return process.exit(1)
  })()

const buildDir = mkdtempSync(join(tmpdir(), 'compare-'))
onCleanup(async () => {
  try {
    await sioCloseAll([...sioSockets])
    await Promise.all([...children.values()].map((child) => stopChild(child)))
    childrenLeft = childrenStillRunning(['redis-server', 'socketio'])
  } finally {
    rmSync(buildDir, { recursive: true, force: true })
  }
})

async function run(log: (line: string) => void, idle: number): Promise<void> {
  const command = socketIoCommand(runtime, buildDir)

  log(`ours: starting a ${NODES}-node cluster`)
  const cluster = track(await startCluster(NODES, { args: BENCH_NODE_ARGS }))
  log(`ours: ${o.clients} clients over ${NODES} nodes`)
  ours = await runScenario('ours', cluster, o)
  log('ours: done')
  await stopAll(8000)

  const redisPort = await freePort()
  const redis = await spawnChild('redis', [redisServer, '--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], 'Ready to accept connections')
  const redisUrl = `redis://127.0.0.1:${redisPort}`
  log(`Socket.IO: redis-server on port ${redisPort}; starting ${NODES} Socket.IO nodes under ${runtime}`)
  const ports = await Promise.all(Array.from({ length: NODES }, () => freePort()))
  const nodes = await Promise.all(
    ports.map((port, n) => spawnChild(`sio${n + 1}`, [...command, '--port', String(port), '--redis', redisUrl, '--name', `sio${n + 1}`], `ready ${port}`)),
  )
  log(`Socket.IO: ${o.clients} clients over ${NODES} nodes`)
  theirs = await runSocketIo(
    'Socket.IO',
    ports.map((port) => `http://127.0.0.1:${port}`),
    [...nodes.map((node) => node.pid), redis.pid],
    o,
  )
  log('Socket.IO: done')
  await Promise.all(nodes.map((node) => stopChild(node)))

  if (idle > 0) {
    log(`memory: ${idle} idle connections on a fresh node of ours`)
    oursMem = await runMemory(idle)
    log(`memory: ${idle} idle connections on a fresh Socket.IO node`)
    theirsMem = await socketIoMemory(idle, command, redisUrl)
  }
  await stopChild(redis)
}

await benchmark('compare', WATCHDOG_S, o.idle, run, (lines, totalMs) => report(o, lines, runtime, ours, theirs, oursMem, theirsMem, totalMs))

// RSS per idle chat socket, on the node that holds it: N idle connections opened from this process
// to one node of this tree, to one node of each baseline tree (optional) and to the one-process Bun
// ceiling (bench/scale/ceiling-server.ts), in turn, in one run, so all see the same machine.
//
//   bun run bench/memory.ts [--users 5000] [--rounds 2] [--baseline <git ref>,<git ref>...] [--types 20] [--node-args='--history-on-join 0']
//
// Each server is a fresh process. Its RSS is read before the connections (idle 2 s after start)
// and once they are quiet (no frame for 1 s, then 3 s more): "steady". Then it is asked over IPC
// (bench/memory/stats.ts) for a full GC and its JS heap: "after GC" (and "GC+3 s", once the
// allocators had time to return freed pages), heap and JSC's extra memory
// (strings, buffers held by JS objects), and the live objects by type, so the bytes can be told
// apart: JS heap against native (Bun's sockets, uWS, the allocator). Our node runs with the join
// budget off (bench/memory/node.ts). The baseline is exported with `git archive` into the temp
// directory (no worktree) and uses this tree's node_modules. Prints figures; asserts nothing.
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { Subprocess } from 'bun'
import { freePort } from '../test/support/cluster'
import { BENCH_NODE_ARGS } from './cluster-chat'
import type { MemoryStats } from './memory/stats'

const REPO = resolve(import.meta.dir, '..')
const { values } = parseArgs({
  args: Bun.argv.slice(2),
  options: { users: { type: 'string', default: '5000' }, rounds: { type: 'string', default: '2' }, baseline: { type: 'string' }, types: { type: 'string', default: '20' }, 'node-args': { type: 'string', default: '' } },
  strict: true,
})
const N = Number(values.users)
const ROUNDS = Number(values.rounds)
const QUIET_MS = 1000
const STEADY_MS = 3000

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])

async function until(what: string, ok: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = performance.now() + ms
  while (!(await ok())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(50)
  }
}

function git(args: string[]): string {
  const p = Bun.spawnSync(['git', ...args], { cwd: REPO, stdout: 'pipe', stderr: 'pipe' })
  if (p.exitCode !== 0) throw new Error(`git ${args.join(' ')}: ${p.stderr.toString()}`)
  return p.stdout.toString().trim()
}

/** The tree at `ref`, exported once into the temp directory, with this tree's dependencies. */
function exportTree(ref: string): string {
  const sha = git(['rev-parse', '--short', ref])
  const dir = join(tmpdir(), `wsc-mem-${sha}`)
  if (!existsSync(join(dir, 'src/node.ts'))) {
    mkdirSync(dir, { recursive: true })
    const p = Bun.spawnSync(['sh', '-c', `git archive ${sha} | tar -x -C ${dir}`], { cwd: REPO, stderr: 'pipe' })
    if (p.exitCode !== 0) throw new Error(`git archive ${sha}: ${p.stderr.toString()}`)
  }
  if (!existsSync(join(dir, 'node_modules'))) symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'))
  return dir
}

interface Server {
  url: string
  pid: number
  memory(gc: boolean): Promise<MemoryStats>
  stop(): Promise<void>
}

type System = { label: string; kind: 'ours'; tree: string } | { label: string; kind: 'ceiling' }

async function start(system: System): Promise<Server> {
  const port = await freePort()
  let argv: string[]
  if (system.kind === 'ceiling') argv = ['bun', 'run', 'bench/scale/ceiling-server.ts', '--port', String(port)]
  else {
    const cluster = String(await freePort())
    argv = ['bun', 'run', 'bench/memory/node.ts', '--host', '127.0.0.1', '--cluster-port', cluster, '--http-port', String(port), '--seeds', `127.0.0.1:${cluster}`, ...BENCH_NODE_ARGS, ...values['node-args']!.split(' ').filter(Boolean)]
  }
  let answer: ((s: MemoryStats) => void) | null = null
  let out = ''
  const proc: Subprocess = Bun.spawn(argv, {
    cwd: REPO,
    env: { ...process.env, MEM_TREE: system.kind === 'ours' ? system.tree : '' },
    stdout: 'pipe',
    stderr: 'inherit',
    ipc: (m) => answer?.(m as MemoryStats),
  })
  void (async () => {
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) out += new TextDecoder().decode(chunk)
  })()
  await until(`${system.label} to listen`, () => out.includes('ready') || proc.exitCode !== null, 30_000)
  if (proc.exitCode !== null) throw new Error(`${system.label} exited ${proc.exitCode}: ${out}`)
  if (system.kind === 'ours') {
    await until(`${system.label} to be ready`, async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.ok === true, 30_000)
  }
  return {
    url: `ws://127.0.0.1:${port}/ws/chat`,
    pid: proc.pid,
    memory: (gc) =>
      new Promise((resolve) => {
        answer = (s) => {
          answer = null
          resolve(s)
        }
        proc.send({ type: 'memory', gc })
      }),
    async stop() {
      proc.kill('SIGTERM')
      await proc.exited
    },
  }
}

/** Client side: the sockets and every frame they received. */
let frames = 0
let open: WebSocket[] = []

function connect(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    let welcomed = false
    ws.onmessage = () => {
      frames++
      if (!welcomed) {
        welcomed = true
        resolve(ws)
      }
    }
    ws.onclose = (e) => welcomed || reject(new Error(`closed ${e.code} ${e.reason} before a welcome`))
  })
}

/** Handshakes refused (a node behind on its loop answers 503) and tried again, as the page does. */
let retries = 0

async function connectRetrying(url: string): Promise<WebSocket> {
  const giveUpAt = performance.now() + 180_000
  for (let attempt = 1; ; attempt++) {
    try {
      return await connect(url)
    } catch (error) {
      if (performance.now() > giveUpAt) throw error
      retries++
      await sleep(Math.min(1000, 50 * attempt))
    }
  }
}

async function connectAll(url: string, n: number, width: number): Promise<void> {
  let next = 0
  const lane = async () => {
    while (next < n) {
      const i = next++
      open.push(await connectRetrying(`${url}?username=u${i}`))
    }
  }
  await Promise.all(Array.from({ length: width }, lane))
}

interface Sample {
  label: string
  round: number
  steadyKiB: number
  gcKiB: number
  settledKiB: number
  heapKiB: number
  heapCapacityKiB: number
  extraKiB: number
  objects: number
  types: Record<string, number>
  seconds: number
  retries: number
  load: string
}

async function measure(system: System, round: number): Promise<Sample> {
  const server = await start(system)
  try {
    await sleep(2000) // start-up garbage and the first GC, as a node just started
    const before = rssKiB(server.pid)
    const beforeGc = await server.memory(true)
    await sleep(STEADY_MS) // the allocators give freed pages back to the system in their own time
    const beforeSettled = rssKiB(server.pid)
    const t0 = performance.now()
    frames = 0
    retries = 0
    await connectAll(server.url, N, 100)
    // Quiet: the joins' presence and system lines have all arrived.
    let last = -1
    let since = performance.now()
    await until(
      'the connections to go quiet',
      () => {
        if (frames !== last) [last, since] = [frames, performance.now()]
        return performance.now() - since >= QUIET_MS
      },
      600_000,
    )
    const seconds = (performance.now() - t0) / 1000
    await sleep(STEADY_MS)
    const steady = rssKiB(server.pid)
    const after = await server.memory(true)
    await sleep(STEADY_MS)
    const settled = rssKiB(server.pid)
    const types: Record<string, number> = {}
    for (const [t, c] of Object.entries(after.types)) {
      const d = c - (beforeGc.types[t] ?? 0)
      if (d !== 0) types[t] = d
    }
    return {
      label: system.label,
      round,
      steadyKiB: (steady - before) / N,
      gcKiB: (after.rssKiB - beforeGc.rssKiB) / N,
      settledKiB: (settled - beforeSettled) / N,
      heapKiB: (after.heapKiB - beforeGc.heapKiB) / N,
      heapCapacityKiB: (after.heapCapacityKiB - beforeGc.heapCapacityKiB) / N,
      extraKiB: (after.extraKiB - beforeGc.extraKiB) / N,
      objects: (after.objects - beforeGc.objects) / N,
      types,
      seconds,
      retries,
      load: loadavg(),
    }
  } finally {
    await server.stop()
    const closing = open
    open = []
    for (const ws of closing) ws.close()
    await until('the client sockets to close', () => closing.every((ws) => ws.readyState === WebSocket.CLOSED), 60_000)
  }
}

const systems: System[] = [{ label: 'ceiling', kind: 'ceiling' }]
for (const ref of values.baseline ? values.baseline.split(',') : []) systems.push({ label: `base ${git(['rev-parse', '--short', ref])}`, kind: 'ours', tree: exportTree(ref) })
systems.push({ label: `this tree${git(['status', '--porcelain', 'src']) ? ' (uncommitted changes)' : ` ${git(['rev-parse', '--short', 'HEAD'])}`}`, kind: 'ours', tree: REPO })

console.log(`${N} idle connections, ${ROUNDS} rounds${values['node-args'] ? `, our node with ${values['node-args']}` : ''}; ${navigator.hardwareConcurrency} cores, Bun ${Bun.version}; load ${loadavg()}`)
const samples: Sample[] = []
for (let round = 1; round <= ROUNDS; round++) {
  for (const system of systems) {
    const s = await measure(system, round)
    samples.push(s)
    const f = (x: number) => x.toFixed(2).padStart(6)
    console.log(
      `${s.label.padEnd(34)} round ${round}: KiB/conn steady ${f(s.steadyKiB)}  after GC ${f(s.gcKiB)}  GC+3 s ${f(s.settledKiB)}  JS heap ${f(s.heapKiB)} (capacity ${f(s.heapCapacityKiB)})  extra ${f(s.extraKiB)}  objects/conn ${s.objects.toFixed(1)}  (${s.seconds.toFixed(1)} s to quiet, ${s.retries} retries, load ${s.load})`,
    )
  }
}
const TOP = Number(values.types)
for (const system of systems) {
  const last = samples.filter((s) => s.label === system.label).at(-1)!
  const top = Object.entries(last.types)
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]))
    .slice(0, TOP)
    .map(([t, c]) => `${t} ${(c / N).toFixed(2)}`)
  console.log(`${system.label}: live objects per connection by type: ${top.join(', ')}`)
}
console.log(`load at the end ${loadavg()}`)

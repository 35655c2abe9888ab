// Idle CPU of 3-node clusters, side by side: one cluster per source tree, all started at once and
// measured over the same seconds, so a shared machine's load falls on each alike. Each node's
// user + system time comes from /proc/<pid>/stat; nothing connects to the nodes while measured.
//
//   bun run bench/idle.ts                          # this tree
//   bun run bench/idle.ts --trees /tmp/base,.      # an older tree (e.g. `git archive`) against this one
//   bun run bench/idle.ts --seconds 60 --rounds 3  # rounds: clusters restarted, measured again
//   bun run bench/idle.ts --warmup 120             # seconds between forming and measuring (default 3)
//   bun run bench/idle.ts --trees .,. --args '|--heartbeat-ms 200'  # flags per cluster, '|' between
import { parseArgs } from 'node:util'
import { resolve } from 'node:path'
import { cpuSeconds } from './cluster-chat'

const { values } = parseArgs({
  options: {
    trees: { type: 'string', default: '.' },
    args: { type: 'string', default: '' },
    seconds: { type: 'string', default: '30' },
    rounds: { type: 'string', default: '1' },
    warmup: { type: 'string', default: '3' },
    'base-port': { type: 'string', default: '27100' },
  },
})
const trees = values.trees!.split(',').map((t) => resolve(t))
const extraArgs = values.args!.split('|').map((a) => a.split(' ').filter(Boolean))
const seconds = Number(values.seconds)
const rounds = Number(values.rounds)
const warmupMs = Number(values.warmup) * 1000
const basePort = Number(values['base-port'])
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Cluster {
  tree: string
  args: string[]
  procs: ReturnType<typeof Bun.spawn>[]
  http: number[]
}

function startCluster(tree: string, slot: number, args: string[]): Cluster {
  const ports = [0, 1, 2].map((i) => basePort + slot * 10 + i)
  const seeds = ports.map((p) => `127.0.0.1:${p}`).join(',')
  const http = ports.map((p) => p + 5)
  const procs = ports.map((port, i) =>
    Bun.spawn(['bun', 'run', `${tree}/src/index.ts`, '--cluster-port', String(port), '--http-port', String(http[i]), '--seeds', seeds, '--log-level', 'warn', ...args], {
      cwd: tree,
      stdout: 'ignore',
      stderr: 'inherit',
    }),
  )
  return { tree, args, procs, http }
}

/** Every node sees three Up members and a leader. */
async function converged(c: Cluster): Promise<boolean> {
  for (const port of c.http) {
    try {
      const info = (await (await fetch(`http://127.0.0.1:${port}/api/cluster-info`)).json()) as { leader: string | null; members: { status: string }[] }
      if (!info.leader || info.members.filter((m) => m.status === 'Up').length !== 3) return false
    } catch {
      return false
    }
  }
  return true
}

const loadavg = async () => (await Bun.file('/proc/loadavg').text()).split(' ').slice(0, 3).join(' ')

for (let round = 1; round <= rounds; round++) {
  const clusters = trees.map((tree, slot) => startCluster(tree, slot, extraArgs[slot] ?? []))
  try {
    const startedAt = Date.now()
    const deadline = startedAt + 30_000
    const formedMs: number[] = []
    for (const c of clusters) {
      while (!(await converged(c))) {
        if (Date.now() > deadline) throw new Error(`${c.tree}: no 3-node cluster within 30 s`)
        await sleep(50)
      }
      formedMs.push(Date.now() - startedAt)
    }
    console.log(`round ${round}: clusters formed (processes started to all Up, in order of checking) after ${formedMs.join(' / ')} ms`)
    // Start-up compiling and the join's traffic are not idle (nor, for a minute or two, the JIT
    // compiling what the heartbeats run: --warmup 120 leaves it out).
    await sleep(warmupMs)
    const before = clusters.map((c) => c.procs.map((p) => cpuSeconds(p.pid)))
    const load = await loadavg()
    const t0 = performance.now()
    await sleep(seconds * 1000)
    const elapsed = (performance.now() - t0) / 1000
    console.log(`round ${round}: ${seconds} s, load average at the start ${load}`)
    clusters.forEach((c, i) => {
      const pct = c.procs.map((p, j) => (100 * (cpuSeconds(p.pid) - before[i]![j]!)) / elapsed)
      const mean = pct.reduce((a, b) => a + b, 0) / pct.length
      console.log(`  ${c.tree}${c.args.length ? ` ${c.args.join(' ')}` : ''}: ${pct.map((x) => x.toFixed(2)).join(' / ')} % of a core per node (mean ${mean.toFixed(2)})`)
    })
  } finally {
    for (const c of clusters) for (const p of c.procs) p.kill('SIGKILL')
    await Promise.all(clusters.flatMap((c) => c.procs.map((p) => p.exited)))
  }
}

// What the one transcript costs: the same 3-node load (bench/cluster-chat.ts scenario B) run on
// this tree and on the commit before chat went through the Raft log, alternately, in one run,
// so both see the same machine and the same load from everything else. Prints figures; asserts
// nothing.
//
//   bun run bench/transcript-cost.ts                 # 3 rounds each, default load (40,000 deliveries/s paced)
//   bun run bench/transcript-cost.ts --rounds 5 --baseline <git ref>
//
// The baseline is checked out once into a git worktree under the system's temp directory.
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { startCluster, stopAll } from '../test/support/cluster'
import { BENCH_NODE_ARGS, deliveredPerS, fmt, runScenario, type LoadFigures, type Options } from './cluster-chat'

/** The last commit where chat went straight from node to node (before the transcript). */
const PRE_TRANSCRIPT = '133f627'
const REPO = resolve(import.meta.dir, '..')

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, baseline: { type: 'string', default: PRE_TRANSCRIPT }, quick: { type: 'boolean', default: false } },
})
const rounds = Number(values.rounds)
const load: Options = values.quick
  ? { clients: 30, senders: 6, messages: 40, rate: 200, burstMessages: 40, idle: 0, joinSamples: 1, quick: true }
  : { clients: 100, senders: 20, messages: 200, rate: 400, burstMessages: 200, idle: 0, joinSamples: 1, quick: false }

function run(argv: string[], cwd: string): void {
  const p = Bun.spawnSync(argv, { cwd, stdout: 'pipe', stderr: 'pipe' })
  if (p.exitCode !== 0) throw new Error(`${argv.join(' ')} failed: ${p.stderr.toString().slice(0, 2000)}`)
}

function baselineTree(ref: string): string {
  const dir = join(tmpdir(), `wsc-baseline-${ref.replace(/[^A-Za-z0-9]/g, '_')}`)
  if (!existsSync(join(dir, 'src/index.ts'))) {
    console.log(`checking out ${ref} into ${dir} ...`)
    run(['git', 'worktree', 'add', '--force', '--detach', dir, ref], REPO)
  }
  if (!existsSync(join(dir, 'node_modules'))) run(['bun', 'install', '--frozen-lockfile'], dir)
  return dir
}

interface Sample {
  paced: LoadFigures
  burst: LoadFigures | null
}

async function measure(label: string, entry: string): Promise<Sample> {
  const nodes = await startCluster(3, { args: BENCH_NODE_ARGS, command: ['bun', 'run', entry] })
  try {
    const s = await runScenario(label, nodes, load)
    return { paced: s.paced, burst: s.burst }
  } finally {
    await stopAll()
  }
}

const base = baselineTree(values.baseline!)
const trees = [
  { label: 'before', entry: join(base, 'src/index.ts'), samples: [] as Sample[] },
  { label: 'transcript', entry: join(REPO, 'src/index.ts'), samples: [] as Sample[] },
]
for (let round = 1; round <= rounds; round++) {
  for (const tree of round % 2 === 1 ? trees : [...trees].reverse()) {
    console.log(`round ${round}/${rounds}: ${tree.label}`)
    tree.samples.push(await measure(tree.label, tree.entry))
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const range = (xs: number[], digits: number) => `${fmt(median(xs), digits)} (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`
const rows: Array<[string, (s: Sample) => number | null, number]> = [
  [`paced ${load.rate} msg/s x ${load.clients} clients: latency p50 ms`, (s) => s.paced.latency.p50, 2],
  ['paced: latency p99 ms', (s) => s.paced.latency.p99, 2],
  ['paced: lost', (s) => s.paced.lost, 0],
  ['paced: duplicates', (s) => s.paced.duplicates, 0],
  ['unpaced: delivered msgs/s', (s) => (s.burst ? deliveredPerS(s.burst) : null), 0],
  ['unpaced: latency p99 ms', (s) => s.burst?.latency.p99 ?? null, 1],
  ['unpaced: lost', (s) => s.burst?.lost ?? null, 0],
]
console.log(`\nmedian (min–max) over ${rounds} rounds each, alternating; baseline ${values.baseline}`)
console.log(['', ...trees.map((t) => t.label)].map((c, i) => (i === 0 ? c.padEnd(52) : c.padStart(28))).join(''))
for (const [name, get, digits] of rows) {
  const cells = trees.map((t) => {
    const xs = t.samples.map(get).filter((x): x is number => x !== null)
    return xs.length > 0 ? range(xs, digits) : '-'
  })
  console.log([name.padEnd(52), ...cells.map((c) => c.padStart(28))].join(''))
}
const burst = (t: (typeof trees)[number]) => median(t.samples.map((s) => (s.burst ? deliveredPerS(s.burst) : 0)))
const p50 = (t: (typeof trees)[number]) => median(t.samples.map((s) => s.paced.latency.p50))
console.log(`\ntranscript vs before: paced p50 ${fmt(p50(trees[1]!) - p50(trees[0]!), 2)} ms; unpaced deliveries/s ${fmt((100 * burst(trees[1]!)) / burst(trees[0]!), 0)}%`)

// Runs the membership simulator over many seeds: `bun run sim [--seeds N] [--from N]`, or one
// seed with its trace: `bun run sim --seed N --verbose`. With `--whole` it runs the whole-node
// simulator instead (`--hostile` for the transport that loses, duplicates and reorders frames,
// `--strict` to demand delivery of messages sent during the faults). Exits non-zero on the first
// failure.
import { runSeed, SimulationFailure, type SimStats } from './simulator'
import { runWholeSeed, type WholeStats } from './whole/world'

interface Args {
  from: number
  count: number
  verbose: boolean
  whole: boolean
  hostile: boolean
  strict: boolean
}

function parseArgs(argv: string[]): Args {
  const args: Args = { from: 0, count: 1000, verbose: false, whole: false, hostile: false, strict: false }
  const number = (flag: string, value: string | undefined) => {
    const n = Number(value)
    if (value === undefined || !Number.isSafeInteger(n) || n < 0) usage(`${flag} needs a non-negative integer`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!
    if (flag === '--seeds') args.count = number(flag, argv[++i])
    else if (flag === '--from') args.from = number(flag, argv[++i])
    else if (flag === '--seed') {
      args.from = number(flag, argv[++i])
      args.count = 1
    } else if (flag === '--verbose' || flag === '-v') args.verbose = true
    else if (flag === '--whole') args.whole = true
    else if (flag === '--hostile') args.hostile = true
    else if (flag === '--strict') args.strict = true
    else usage(`unknown argument ${flag}`)
  }
  return args
}

function usage(problem: string): never {
  console.error(`${problem}\nusage: bun run sim [--whole [--hostile] [--strict]] [--seeds N (default 1000)] [--from N] [--seed N] [--verbose]`)
  process.exit(2)
}

const args = parseArgs(process.argv.slice(2))
if (args.whole) await runWhole(args)
const totals = {
  elections: 0, commits: 0, steps: 0, ticks: 0, incarnations: 0, delivered: 0, dropped: 0, duplicated: 0,
  partitions: 0, pauses: 0, crashes: 0, leaves: 0, rejoins: 0,
}
let convergedMax = { ticks: -1, seed: -1 }
const started = performance.now()
let lastReport = started
let done = 0

for (let seed = args.from; seed < args.from + args.count; seed++) {
  let stats: SimStats
  try {
    stats = runSeed(seed, args.verbose ? { trace: (line) => console.log(line) } : {})
  } catch (error) {
    if (error instanceof SimulationFailure) {
      console.error(`\nFAIL after ${done} passing seeds\n${error.message}`)
      process.exit(1)
    }
    console.error(`\nseed ${seed} crashed the simulator\nreplay: bun run sim --seed ${seed} --verbose`)
    throw error
  }
  done++
  for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += stats[key]
  if (stats.convergedAfter > convergedMax.ticks) convergedMax = { ticks: stats.convergedAfter, seed }
  const now = performance.now()
  if (!args.verbose && now - lastReport > 5000) {
    lastReport = now
    console.log(`  ${done}/${args.count} seeds, ${rate(done, now - started)} seeds/s`)
  }
}

const elapsed = performance.now() - started
const t = totals
console.log(
  [
    `${done} seeds (${args.from}..${args.from + args.count - 1}) passed in ${(elapsed / 1000).toFixed(1)} s: ${rate(done, elapsed)} seeds/s`,
    `  ${t.elections} elections, ${t.commits} commits, ${t.incarnations} incarnations, ${t.ticks} ticks, ${t.steps} steps (${rate(t.steps, elapsed)} steps/s)`,
    `  faults: ${t.dropped} dropped and ${t.duplicated} duplicated of ${t.delivered} delivered, ${t.partitions} partitions, ` +
      `${t.pauses} pauses, ${t.crashes} crashes, ${t.leaves} leaves, ${t.rejoins} removed-while-alive rejoins`,
    `  slowest convergence after the faults stopped: ${convergedMax.ticks} ticks (seed ${convergedMax.seed})`,
  ].join('\n'),
)

function rate(count: number, ms: number): string {
  return ms > 0 ? (count / (ms / 1000)).toFixed(count / (ms / 1000) < 10 ? 1 : 0) : '-'
}

async function runWhole(args: Args): Promise<never> {
  const options = { profile: args.hostile ? ('hostile' as const) : ('tcp' as const), strictDelivery: args.strict }
  const totals = { chats: 0, deliveries: 0, users: 0, crashes: 0, leaves: 0, partitions: 0, resets: 0, dropped: 0, duplicated: 0, virtualMs: 0 }
  let slowest = { ms: -1, seed: -1 }
  const started = performance.now()
  let lastReport = started
  let done = 0
  for (let seed = args.from; seed < args.from + args.count; seed++) {
    let stats: WholeStats
    try {
      stats = await runWholeSeed(seed, args.verbose ? { ...options, trace: (line) => console.log(line) } : options)
    } catch (error) {
      if (error instanceof SimulationFailure) {
        console.error(`\nFAIL after ${done} passing seeds\n${error.message}`)
        process.exit(1)
      }
      console.error(`\nseed ${seed} crashed the simulator`)
      throw error
    }
    done++
    for (const key of Object.keys(totals) as (keyof typeof totals)[]) totals[key] += stats[key]
    if (stats.convergedAfterMs > slowest.ms) slowest = { ms: stats.convergedAfterMs, seed }
    const now = performance.now()
    if (!args.verbose && now - lastReport > 5000) {
      lastReport = now
      console.log(`  ${done}/${args.count} seeds, ${rate(done, now - started)} seeds/s`)
    }
  }
  const elapsed = performance.now() - started
  const t = totals
  console.log(
    [
      `${done} whole-node seeds (${args.from}..${args.from + args.count - 1}, profile ${options.profile}${args.strict ? ', strict delivery' : ''}) passed in ${(elapsed / 1000).toFixed(1)} s: ${rate(done, elapsed)} seeds/s, ${(t.virtualMs / 1000).toFixed(0)} virtual s`,
      `  ${t.users} connections, ${t.chats} chat messages, ${t.deliveries} deliveries checked`,
      `  faults: ${t.partitions} partitions, ${t.crashes} crashes, ${t.leaves} leaves, ${t.resets} connection resets, ${t.dropped} frames dropped, ${t.duplicated} duplicated`,
      `  slowest convergence after the faults stopped: ${slowest.ms} ms (seed ${slowest.seed})`,
    ].join('\n'),
  )
  process.exit(0)
}

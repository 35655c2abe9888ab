// Runs the membership simulator over many seeds: `bun run sim [--seeds N] [--from N]`, or one
// seed with its trace: `bun run sim --seed N --verbose`. With `--whole` it runs the whole-node
// simulator instead (`--hostile` for the transport that loses, duplicates and reorders frames,
// `--strict` to judge the presence lists under it too, which travel at most once and fail there),
// on `--workers N` threads (default: one per core; a single seed or `--verbose` runs on one).
// Exits non-zero on the first failure (the lowest failing seed of the batch that found it).
import { runSeed, SimulationFailure } from './simulator'
import { defaultWorkers, runSeedsInParallel } from './whole/parallel'
import { runWholeSeed } from './whole/world'

interface Args {
  from: number
  count: number
  verbose: boolean
  whole: boolean
  hostile: boolean
  strict: boolean
  workers: number
}

function parseArgs(argv: string[]): Args {
  const args: Args = { from: 0, count: 1000, verbose: false, whole: false, hostile: false, strict: false, workers: defaultWorkers() }
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
    else if (flag === '--workers') args.workers = Math.max(1, number(flag, argv[++i]))
    else usage(`unknown argument ${flag}`)
  }
  return args
}

function usage(problem: string): never {
  console.error(`${problem}\nusage: bun run sim [--whole [--hostile] [--strict] [--workers N]] [--seeds N (default 1000)] [--from N] [--seed N] [--verbose]`)
  process.exit(2)
}

const args = parseArgs(process.argv.slice(2))
const trace = args.verbose ? (line: string) => console.log(line) : undefined

/** Runs every seed, stops at the first failure with its replay line, and sums the stats. */
async function runAll<S extends object>(run: (seed: number) => S | Promise<S>, slowestKey: keyof S) {
  const totals: Record<string, number> = {}
  let slowest = { value: -1, seed: -1 }
  const started = performance.now()
  let lastReport = started
  let done = 0
  for (let seed = args.from; seed < args.from + args.count; seed++) {
    let stats: S
    try {
      stats = await run(seed)
    } catch (error) {
      if (error instanceof SimulationFailure) {
        console.error(`\nFAIL after ${done} passing seeds\n${error.message}`)
        process.exit(1)
      }
      console.error(`\nseed ${seed} crashed the simulator`)
      throw error
    }
    done++
    for (const [key, value] of Object.entries(stats)) if (typeof value === 'number') totals[key] = (totals[key] ?? 0) + value
    if ((stats[slowestKey] as number) > slowest.value) slowest = { value: stats[slowestKey] as number, seed }
    const now = performance.now()
    if (!args.verbose && now - lastReport > 5000) {
      lastReport = now
      console.log(`  ${done}/${args.count} seeds, ${rate(done, now - started)} seeds/s`)
    }
  }
  const elapsed = performance.now() - started
  const head = `${done} seeds (${args.from}..${args.from + args.count - 1}) passed in ${(elapsed / 1000).toFixed(1)} s: ${rate(done, elapsed)} seeds/s`
  return { t: totals, slowest, elapsed, head }
}

/** The whole-node simulator on worker threads, in batches so progress shows; stops at the first batch with a failure. */
async function runWholeInParallel(options: { profile: 'tcp' | 'hostile'; strictPresence: boolean }) {
  const totals: Record<string, number> = {}
  const started = performance.now()
  const batch = Math.max(args.workers * 50, 200)
  let done = 0
  while (done < args.count) {
    const count = Math.min(batch, args.count - done)
    const result = await runSeedsInParallel(args.from + done, count, options, args.workers)
    for (const [key, value] of Object.entries(result.sums)) totals[key] = (totals[key] ?? 0) + value
    if (result.failure) {
      console.error(`\nFAIL (seeds ${args.from + done}..${args.from + done + count - 1} on ${args.workers} workers; ${done + result.seeds} passing seeds in all)\n${result.failure.message}`)
      process.exit(1)
    }
    done += count
    console.log(`  ${done}/${args.count} seeds, ${rate(done, performance.now() - started)} seeds/s`)
  }
  const elapsed = performance.now() - started
  const head = `${done} seeds (${args.from}..${args.from + args.count - 1}) passed in ${(elapsed / 1000).toFixed(1)} s on ${args.workers} workers: ${rate(done, elapsed)} seeds/s`
  return { t: totals, head }
}

if (args.whole) {
  const options = { profile: args.hostile ? ('hostile' as const) : ('tcp' as const), strictPresence: args.strict, trace }
  const parallel = args.count > 1 && !args.verbose && args.workers > 1
  const { t, slowest, head } = parallel
    ? { ...(await runWholeInParallel({ profile: options.profile, strictPresence: options.strictPresence })), slowest: null }
    : await runAll((seed) => runWholeSeed(seed, options), 'convergedAfterMs')
  console.log(
    [
      `whole-node simulator, profile ${options.profile}${args.strict ? ', presence judged' : ''}: ${head}, ${((t.virtualMs ?? 0) / 1000).toFixed(0)} virtual s`,
      `  ${t.users} connections (${t.resumes} resumes), ${t.chats} chat messages (${t.acked} acks), ${t.lines} transcript lines (${t.sharedLines} telling of several users), ${t.deliveries} line deliveries checked`,
      `  ${t.snapshots} snapshot installs seen, ${t.incomplete} history frames saying complete:false`,
      `  faults: ${t.partitions} partitions, ${t.crashes} crashes, ${t.leaves} leaves, ${t.resets} connection resets, ${t.dropped} frames dropped, ${t.duplicated} duplicated`,
      ...(slowest ? [`  slowest convergence after the faults stopped: ${slowest.value} ms (seed ${slowest.seed})`] : []),
    ].join('\n'),
  )
} else {
  const { t, slowest, elapsed, head } = await runAll((seed) => runSeed(seed, { trace }), 'convergedAfter')
  console.log(
    [
      head,
      `  ${t.elections} elections, ${t.commits} commits, ${t.incarnations} incarnations, ${t.ticks} ticks, ${t.steps} steps (${rate(t.steps ?? 0, elapsed)} steps/s)`,
      `  faults: ${t.dropped} dropped and ${t.duplicated} duplicated of ${t.delivered} delivered, ${t.partitions} partitions, ` +
        `${t.pauses} pauses, ${t.crashes} crashes, ${t.leaves} leaves, ${t.rejoins} removed-while-alive rejoins`,
      `  slowest convergence after the faults stopped: ${slowest.value} ticks (seed ${slowest.seed})`,
    ].join('\n'),
  )
}

function rate(count: number, ms: number): string {
  return ms > 0 ? (count / (ms / 1000)).toFixed(count / (ms / 1000) < 10 ? 1 : 0) : '-'
}

// bun run fuzz --seconds N [--seed S] [--only k1,k2] [--exclude k1,k2] [--lanes N] [--rate N] [--list]
// Exit status: 0 pass, 1 findings, 2 bad arguments. Ctrl-C stops early and still stops every node.
import { randomSeed } from './rng'
import { ALL_KINDS, runFuzz } from './fuzz'

const USAGE = 'usage: bun run fuzz --seconds N [--seed S] [--only kind,prefix.] [--exclude kind,prefix.] [--lanes N] [--rate inputs/s] [--list]'

function parse(argv: string[]) {
  const out = { seconds: 30, seed: randomSeed(), only: undefined as string[] | undefined, exclude: [] as string[], lanes: 6, rate: 150, list: false }
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!
    const value = () => {
      const v = argv[++i]
      if (v === undefined) throw new Error(`${flag} needs a value`)
      return v
    }
    const int = (max: number) => {
      const v = value()
      const n = Number(v)
      if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`${flag}: not an integer in 0..${max}: ${v}`)
      return n
    }
    if (flag === '--seconds') out.seconds = int(3600)
    else if (flag === '--seed') out.seed = int(0xffffffff)
    else if (flag === '--only') out.only = value().split(',').filter(Boolean)
    else if (flag === '--exclude') out.exclude = value().split(',').filter(Boolean)
    else if (flag === '--lanes') out.lanes = Math.max(1, int(64))
    else if (flag === '--rate') out.rate = Math.max(1, int(10_000))
    else if (flag === '--list') out.list = true
    else throw new Error(`unknown argument ${flag}`)
  }
  return out
}

let args: ReturnType<typeof parse>
try {
  args = parse(process.argv.slice(2))
} catch (error) {
  console.error(`error: ${(error as Error).message}\n${USAGE}`)
  process.exit(2)
}
if (args.list) {
  for (const k of ALL_KINDS) console.log(`${k.name.padEnd(22)} ${k.about}`)
  process.exit(0)
}

const abort = new AbortController()
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    console.error(`${signal}: stopping the fuzzer and its nodes`)
    abort.abort()
  })
}

console.log(`seed ${args.seed}`)
try {
  const result = await runFuzz({
    seconds: args.seconds,
    seed: args.seed,
    only: args.only,
    exclude: args.exclude,
    lanes: args.lanes,
    inputsPerSecond: args.rate,
    abort: abort.signal,
    log: (line) => console.error(line),
  })
  console.log(result.summary)
  process.exit(result.failures.length === 0 ? 0 : 1)
} catch (error) {
  console.error(`error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\nreplay: bun run fuzz --seed ${args.seed}`)
  process.exit(1)
}

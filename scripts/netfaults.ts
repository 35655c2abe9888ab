// Measurement runs of the real-network fault scenarios (test/support/netfaults.ts), longer than CI
// can afford: `bun run netfaults [--runs 20] [--only cut,isolate,overload] [--args "..."]`.
// Needs root with CAP_NET_ADMIN and nftables (scripts/deps.sh --netns); prints one line per run
// and a summary, and removes every namespace and process it made, also on failure.
import { parseArgs } from 'node:util'
import { stopAll } from '../test/support/cluster'
import { destroyAllLabs, netnsUnavailable } from '../test/support/netns'
import { cutLink, formatResult, isolateLeader, overloadLeader, startLabCluster, type FaultResult } from '../test/support/netfaults'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '20' },
    only: { type: 'string', default: 'cut,isolate,overload' },
    args: { type: 'string', default: '' },
  },
})
const runs = Number(values.runs)
const only = new Set(values.only!.split(','))
const nodeArgs = values.args ? values.args.split(/\s+/) : []

const why = netnsUnavailable()
if (why) {
  console.error(`netfaults: cannot run: ${why}`)
  process.exit(2)
}

function summary(name: string, results: FaultResult[]) {
  const bad = results.filter((r) => r.tally.lost || r.tally.duplicated || r.tally.reordered || r.memberChanges || r.leaders > 1 || r.elections)
  const heals = results.map((r) => r.healMs ?? Infinity).sort((a, b) => a - b)
  console.log(
    `== ${name}: ${results.length} runs, ${bad.length} disturbed; lost ${sum(results, (r) => r.tally.lost)}, dup ${sum(results, (r) => r.tally.duplicated)}, reordered ${sum(results, (r) => r.tally.reordered)}, runs with member changes ${results.filter((r) => r.memberChanges).length}, with leader change ${results.filter((r) => r.leaders > 1 || r.elections).length}; one view after ${results[0]?.after ?? 'heal'}: median ${Math.round(heals[Math.floor(heals.length / 2)]!)} ms, worst ${Math.round(heals.at(-1)!)} ms`,
  )
}
const sum = (rs: FaultResult[], f: (r: FaultResult) => number) => rs.reduce((s, r) => s + f(r), 0)

try {
  const cluster = await startLabCluster(3, nodeArgs)
  try {
    if (only.has('cut')) {
      for (const pair of ['followers', 'leader-follower'] as const) {
        const results: FaultResult[] = []
        for (let i = 0; i < runs; i++) {
          const r = await cutLink(cluster, pair, 2000)
          console.log(`  ${i + 1}: ${formatResult(r)}`)
          results.push(r)
        }
        summary(`2 s cut, ${pair}`, results)
      }
    }
    if (only.has('isolate')) {
      for (const ms of [8000, 30_000]) {
        const r = await isolateLeader(cluster, ms, 40_000)
        console.log(`  ${formatResult(r)}`)
        summary(`leader isolated ${ms / 1000} s`, [r])
      }
    }
  } finally {
    await cluster.stop()
  }
  if (only.has('overload')) {
    // Its own cluster: no rate limit (the flood's worst case) and room for 500 clients from one address.
    const loaded = await startLabCluster(3, [...nodeArgs, '--rate-limit', '0', '--max-connections-per-ip', '600'])
    try {
      for (const load of ['flood', 'many'] as const) {
        const results: FaultResult[] = []
        for (let i = 0; i < Math.max(1, Math.round(runs / 4)); i++) {
          const r = await overloadLeader(loaded, load, 10)
          console.log(`  ${i + 1}: ${formatResult(r)}; the load sent ${r.loadSent}`)
          results.push(r)
        }
        summary(`leader's node loaded 10 s (${load})`, results)
      }
    } finally {
      await loaded.stop()
    }
  }
} finally {
  await stopAll(2000)
  destroyAllLabs()
}
process.exit(0)

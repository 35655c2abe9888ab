// Whole-cluster stop, measured: `bun run scripts/stop-all.ts [--runs 10] [--size 3]` starts a
// cluster on loopback, sends SIGTERM to every node at once and reports how long each took to exit.
import { parseArgs } from 'node:util'
import { startCluster, stopAll } from '../test/support/cluster'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' }, size: { type: 'string', default: '3' } } })
const worst: number[] = []
try {
  for (let run = 1; run <= Number(values.runs); run++) {
    const nodes = await startCluster(Number(values.size))
    const start = performance.now()
    for (const node of nodes) node.kill('SIGTERM')
    const exits = await Promise.all(nodes.map((node) => node.exited.then(() => performance.now() - start)))
    await stopAll(1000)
    worst.push(Math.max(...exits))
    const unconfirmed = nodes.filter((n) => n.logs().includes('leave was not confirmed')).length
    console.log(`run ${run}: exits ${exits.map((ms) => Math.round(ms)).join(', ')} ms; ${unconfirmed} left unconfirmed`)
  }
} finally {
  await stopAll(1000)
}
console.log(`== whole-cluster stop: ${worst.length} runs, worst exit ${Math.round(Math.max(...worst))} ms, median of worsts ${Math.round(worst.sort((a, b) => a - b)[Math.floor(worst.length / 2)]!)} ms`)
process.exit(0)

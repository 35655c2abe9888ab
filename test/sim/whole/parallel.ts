// Runs whole-node seeds on worker threads (one per core by default): a seed is a pure function of
// its number, so seeds split across workers give the same verdicts as one loop, in a fraction of
// the time. Each worker stops at its first failure; the failure with the lowest seed is reported.
import { availableParallelism } from 'node:os'
import type { WholeOptions, WholeStats } from './world'

export interface Totals {
  seeds: number
  sums: Record<string, number>
  /** The lowest failing seed, with the invariant and the message that replays it. */
  failure: { seed: number; invariant: string; message: string } | null
}

export type WorkerRequest = { from: number; count: number; stride: number; options: Omit<WholeOptions, 'trace'> }
export type WorkerReply =
  | { kind: 'done'; seeds: number; sums: Record<string, number> }
  | { kind: 'failure'; seeds: number; sums: Record<string, number>; seed: number; invariant: string; message: string }
  | { kind: 'error'; seed: number; message: string }

/** Seeds `from`, `from + 1`, ... (`count` of them), worker i taking every `workers`-th one from `from + i`. */
export async function runSeedsInParallel(from: number, count: number, options: Omit<WholeOptions, 'trace'> = {}, workers = defaultWorkers()): Promise<Totals> {
  const n = Math.max(1, Math.min(workers, count))
  const replies = await Promise.all(
    Array.from({ length: n }, (_, i) => {
      const worker = new Worker(new URL('./seed-worker.ts', import.meta.url).href)
      return new Promise<WorkerReply>((resolve, reject) => {
        worker.onmessage = (event: MessageEvent<WorkerReply>) => {
          resolve(event.data)
          worker.terminate()
        }
        worker.onerror = (event) => {
          reject(new Error(`seed worker failed: ${event.message}`))
          worker.terminate()
        }
        worker.postMessage({ from: from + i, count: Math.ceil((count - i) / n), stride: n, options } satisfies WorkerRequest)
      })
    }),
  )
  const totals: Totals = { seeds: 0, sums: {}, failure: null }
  for (const reply of replies) {
    if (reply.kind === 'error') throw new Error(`seed ${reply.seed} crashed the simulator: ${reply.message}`)
    totals.seeds += reply.seeds
    for (const [key, value] of Object.entries(reply.sums)) totals.sums[key] = (totals.sums[key] ?? 0) + value
    if (reply.kind === 'failure' && (totals.failure === null || reply.seed < totals.failure.seed)) totals.failure = { seed: reply.seed, invariant: reply.invariant, message: reply.message }
  }
  return totals
}

export function defaultWorkers(): number {
  const env = Number(process.env.SIM_WORKERS)
  return Number.isSafeInteger(env) && env > 0 ? env : Math.max(1, availableParallelism())
}

export function addStats(sums: Record<string, number>, stats: WholeStats): void {
  for (const [key, value] of Object.entries(stats)) if (typeof value === 'number' && key !== 'seed') sums[key] = (sums[key] ?? 0) + value
}

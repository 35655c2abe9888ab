// One worker of parallel.ts: runs its share of the seeds and answers once.
import { SimulationFailure } from '../simulator'
import { addStats, type WorkerReply, type WorkerRequest } from './parallel'
import { runWholeSeed } from './world'

declare const self: Worker

self.onmessage = async (event: MessageEvent<WorkerRequest>) => {
  const { from, count, stride, options } = event.data
  const sums: Record<string, number> = {}
  let seeds = 0
  for (let k = 0; k < count; k++) {
    const seed = from + k * stride
    try {
      addStats(sums, await runWholeSeed(seed, options))
      seeds++
    } catch (error) {
      const reply: WorkerReply =
        error instanceof SimulationFailure
          ? { kind: 'failure', seeds, sums, seed, invariant: error.invariant, message: error.message }
          : { kind: 'error', seed, message: error instanceof Error ? `${error.message}\n${error.stack}` : String(error) }
      self.postMessage(reply)
      return
    }
  }
  self.postMessage({ kind: 'done', seeds, sums } satisfies WorkerReply)
}

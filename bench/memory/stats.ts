// What bench/memory.ts asks of a server it measures, over Bun's IPC channel: its RSS and JS heap,
// after a full garbage collection when asked. Only a process started by the benchmark with an IPC
// channel answers (process.send is undefined otherwise), so nothing here is reachable over HTTP.
import { heapStats } from 'bun:jsc'

export interface MemoryStats {
  rssKiB: number
  /** JS heap in use and what JSC reports as held outside it by JS objects (strings, buffers). */
  heapKiB: number
  /** What the JS heap holds from the system, live or not (its blocks, partly filled). */
  heapCapacityKiB: number
  extraKiB: number
  objects: number
  /** Live JS objects by type. */
  types: Record<string, number>
}

export type MemoryRequest = { type: 'memory'; gc: boolean }

export function memoryStats(gc: boolean): MemoryStats {
  if (gc) Bun.gc(true)
  const h = heapStats()
  return {
    rssKiB: Math.round(process.memoryUsage().rss / 1024),
    heapKiB: Math.round(h.heapSize / 1024),
    heapCapacityKiB: Math.round(h.heapCapacity / 1024),
    extraKiB: Math.round(h.extraMemorySize / 1024),
    objects: h.objectCount,
    types: h.objectTypeCounts,
  }
}

/** Answers the benchmark's memory requests, when this process has an IPC channel. */
export function answerMemoryRequests(): void {
  if (!process.send) return
  process.on('message', (m: MemoryRequest) => {
    if (m?.type === 'memory') process.send!(memoryStats(m.gc))
  })
}

// Event-loop lag, measured by how late a short timer fires, and the one decision made from it:
// whether the node is overloaded and should shed client work (refuse new chat frames and new
// sockets) so the cluster's own traffic is still handled on time. A node that falls behind
// answers heartbeats late and is voted out; shedding its users' extra load is the cheaper loss.
import type { Clock } from './io'

export interface LoadOptions {
  /** How often the probe timer runs. */
  intervalMs: number
  /** Lag above which the node sheds client work. */
  thresholdMs: number
}

// 100 ms: a third of the link timeout and a fifth of the election timeout; a shorter blip (a GC,
// start-up compiling) is not worth refusing users for. A probe every 50 ms (not 20: a timer that
// wakes an idle node 50 times a second costs it about 0.6 % of a core here, 20 times about 0.25 %)
// still finds a loop that is behind within 3 × (50 + 100) ms.
export const DEFAULT_LOAD: LoadOptions = { intervalMs: 50, thresholdMs: 100 }
/** Start-up (loading and compiling code, joining) stalls the loop once; it is not load to shed. */
const WARM_UP_MS = 1000
/**
 * Late probes in a row before the node sheds. One late probe is a stall (a GC, a busy neighbour
 * on a shared machine): refusing users for it would fail them for nothing. A flood keeps every
 * probe late.
 */
const SUSTAINED_PROBES = 3

export class LagMonitor {
  /** Recent lag: the latest drift, or a decaying memory of a larger one (shedding outlasts a spike a little). */
  lagMs = 0
  /** Worst drift seen, for /metrics and logs. */
  maxLagMs = 0
  private last = 0
  private startedAt = 0
  /** Probes in a row that came later than the threshold. */
  private lateInARow = 0
  private shedding = false

  constructor(
    private readonly clock: Clock,
    private readonly options: LoadOptions = DEFAULT_LOAD,
  ) {}

  start(): () => void {
    this.last = this.startedAt = this.clock.now()
    return this.clock.every(this.options.intervalMs, () => this.probe())
  }

  private probe(): void {
    const now = this.clock.now()
    const drift = Math.max(0, now - this.last - this.options.intervalMs)
    this.last = now
    if (now - this.startedAt < WARM_UP_MS) return
    this.lagMs = Math.max(drift, this.lagMs * 0.5)
    this.maxLagMs = Math.max(this.maxLagMs, drift)
    this.lateInARow = drift > this.options.thresholdMs ? this.lateInARow + 1 : 0
    // Shedding starts once the loop is behind, not stalled once, and lasts while the memory of
    // the lag does (a little past the last late probe).
    if (this.lateInARow >= SUSTAINED_PROBES) this.shedding = true
    else if (this.lagMs <= this.options.thresholdMs) this.shedding = false
  }

  overloaded(): boolean {
    return this.shedding
  }
}

// Event-loop lag, measured by how late a short timer fires, and the one decision made from it:
// whether the node is overloaded and should shed client work (refuse new chat frames and new
// sockets) so the cluster's own traffic is still handled on time. A node that falls behind
// answers heartbeats late and is voted out; shedding its users' extra load is the cheaper loss.
// Only client work is shed, so the probe runs only while clients are about: every question the
// gateway and the HTTP layer ask (on each frame, each new socket) wakes it, and it stops after a
// quiet second. An idle node then has no timer firing 20 times a second for nobody.
import type { Clock } from './io'

export interface LoadOptions {
  /** How often the probe timer runs. */
  intervalMs: number
  /** Lag above which the node sheds client work. */
  thresholdMs: number
  /**
   * How long one turn of the loop may go on past a probe's due time before the node is `behind`
   * in it: client sockets still sending then are paused (see gateway.ts), so the timers and the
   * cluster's sockets get their turn within about this long, whatever one client sends.
   */
  turnMs: number
}

// 100 ms: a third of the link timeout and a fifth of the election timeout; a shorter blip (a GC,
// start-up compiling) is not worth refusing users for. A probe every 50 ms (not 20: a timer that
// wakes an idle node 50 times a second costs it about 0.6 % of a core here, 20 times about 0.25 %)
// still finds a loop that is behind within 3 × (50 + 100) ms.
// 10 ms of one turn for client frames: every peer frame read in the turn waits that long at most,
// and twice per line on the leader (a proposal in, the acknowledgements back).
export const DEFAULT_LOAD: LoadOptions = { intervalMs: 50, thresholdMs: 100, turnMs: 10 }
/** Start-up (loading and compiling code, joining) stalls the loop once; it is not load to shed. */
const WARM_UP_MS = 1000
/** The probe stops once nobody has asked for this long (and nothing is shed or waiting). */
const QUIET_MS = 1000
/**
 * Late probes in a row before the node sheds. One late probe is a stall (a GC, a busy neighbour
 * on a shared machine): refusing users for it would fail them for nothing. A flood keeps every
 * probe late.
 */
const SUSTAINED_PROBES = 3
/**
 * Share of the time between two probes this process must have spent on a CPU for their lateness
 * to be its own. Less, and the machine did not run it (other processes on the same cores): the
 * loop was not busy, and refusing its users would not give it the CPU back.
 */
const OWN_SHARE = 0.5

/**
 * The fan-out budget (--max-fanout) is what this node serves with the cores to itself; on a
 * machine whose other work leaves it a fraction of one, a node taking on all of it fell behind and
 * was off the CPU for 0.6-1 s at a time (its heartbeats with it). The part it takes on is cut by
 * SHARE_CUT at every probe more than SHARE_LATE_MS late (a turn over 100 ms), down to SHARE_MIN,
 * and grows back by SHARE_STEP at every probe on time (from the floor to all of it in about a second).
 */
const SHARE_LATE_MS = 50
const SHARE_CUT = 0.7
const SHARE_MIN = 0.05
const SHARE_STEP = 0.05

export class LagMonitor {
  /** The part of its fan-out budget the node takes on now (see SHARE_LATE_MS). */
  fanoutShare = 1
  /** Recent lag: the latest drift, or a decaying memory of a larger one (shedding outlasts a spike a little). */
  lagMs = 0
  /** Worst drift seen, for /metrics and logs. */
  maxLagMs = 0
  private last = 0
  private startedAt = 0
  /** Probes in a row that came later than the threshold. */
  private lateInARow = 0
  private shedding = false
  /** Probes so far: the turns between two probes share a number. */
  private probes = 0
  /** Called at the next probe that comes on time (see `whenOnTime`). */
  private waiting: Array<() => void> = []
  /** This process's CPU time at the last probe, ms. */
  private lastCpu = 0
  private started = false
  /** Stops the probe timer; null while it is not running. */
  private stopProbe: (() => void) | null = null
  private askedAt = 0
  /** When the client work of the turn now running began; null between turns (see `turnStart`). */
  private turnAt: number | null = null

  /** `cpuMs`: CPU time this process has used (all its threads), ms; absent, every lateness counts as its own. */
  constructor(
    private readonly clock: Clock,
    private readonly options: LoadOptions = DEFAULT_LOAD,
    private readonly cpuMs?: () => number,
  ) {}

  start(): () => void {
    this.startedAt = this.clock.now()
    this.started = true
    this.asked()
    return () => {
      this.started = false
      this.sleep()
    }
  }

  /** A client is about: the probe runs (from now, if it was not running). */
  private asked(): void {
    this.askedAt = this.clock.now()
    if (this.stopProbe || !this.started) return
    this.last = this.askedAt
    this.lastCpu = this.cpuMs?.() ?? 0
    this.stopProbe = this.clock.every(this.options.intervalMs, () => this.probe())
  }

  private sleep(): void {
    this.stopProbe?.()
    this.stopProbe = null
    this.lagMs = 0
    this.lateInARow = 0
    this.fanoutShare = 1
  }

  private probe(): void {
    if (!this.stopProbe) return
    const now = this.clock.now()
    const drift = Math.max(0, now - this.last - this.options.intervalMs)
    const own = this.ownShare(now)
    this.last = now
    this.lastCpu = this.cpuMs?.() ?? 0
    this.probes++
    if (now - this.startedAt < WARM_UP_MS) return
    this.lagMs = Math.max(drift, this.lagMs * 0.5)
    this.maxLagMs = Math.max(this.maxLagMs, drift)
    this.lateInARow = drift > this.options.thresholdMs && own >= OWN_SHARE ? this.lateInARow + 1 : 0
    this.fanoutShare = drift > SHARE_LATE_MS ? Math.max(SHARE_MIN, this.fanoutShare * SHARE_CUT) : Math.min(1, this.fanoutShare + SHARE_STEP)
    // Shedding starts once the loop is behind, not stalled once, and lasts while the memory of
    // the lag does (a little past the last late probe).
    if (this.lateInARow >= SUSTAINED_PROBES) this.shedding = true
    else if (this.lagMs <= this.options.thresholdMs) this.shedding = false
    if (drift <= this.options.thresholdMs && this.waiting.length > 0) {
      const waiting = this.waiting
      this.waiting = []
      for (const fn of waiting) fn()
    }
    if (now - this.askedAt > QUIET_MS && !this.shedding && this.waiting.length === 0 && this.lagMs <= this.options.thresholdMs) this.sleep()
  }

  /**
   * Whether the turn now running has gone on too long: the probe, due `intervalMs` after the
   * last one, is more than `turnMs` late and cannot run until the turn ends. Read from inside the
   * turn, on every client frame, so a flood is stopped within the turn it starts in, not three
   * probes later. `budgetMs` instead of `turnMs`: for work that costs more to refuse wrongly.
   */
  behind(budgetMs = this.options.turnMs): boolean {
    this.asked()
    const now = this.clock.now()
    return (this.last > this.startedAt && now - this.last > this.options.intervalMs + budgetMs) || now - this.turnStart(now) > budgetMs
  }

  /**
   * When this turn's first client work came (the first question asked in it): a turn that began
   * just after a probe would otherwise run intervalMs + budgetMs before the probe's lateness showed
   * it, and a flooding client's read of thousands of frames held the cluster's sockets that long.
   */
  private turnStart(now: number): number {
    if (this.turnAt !== null) return this.turnAt
    this.turnAt = now
    this.clock.defer(() => (this.turnAt = null))
    return now
  }

  /**
   * `behind`, and through this process's own work (not a machine that did not run it): the test
   * for work that is rarer than frames and costs more to refuse wrongly, such as new sockets.
   */
  busyBehind(budgetMs?: number): boolean {
    return this.behind(budgetMs) && this.ownShare(this.clock.now()) >= OWN_SHARE
  }

  /** Share of the time since the last probe this process spent on a CPU (1 without `cpuMs`). */
  private ownShare(now: number): number {
    if (!this.cpuMs) return 1
    return (this.cpuMs() - this.lastCpu) / Math.max(1, now - this.last)
  }

  /** Which turn of the loop this is: probes so far (the turns between two probes share it). */
  turn(): number {
    this.asked()
    return this.probes
  }

  /** Calls `fn` once, at the next probe that is not late past the threshold: the loop caught up. */
  whenOnTime(fn: () => void): void {
    this.asked()
    this.waiting.push(fn)
  }

  overloaded(): boolean {
    this.asked()
    return this.shedding
  }
}

// The membership core counts time in ticks; the shell ticks every TICK_MS. Milliseconds from the
// command line are turned into ticks here, once, and checked in ticks: the unit the core runs on,
// so a setting that passes here cannot fail inside the node.
import { err, ok, type Result } from '../result'

export const TICK_MS = 10

export interface Timing {
  heartbeatTicks: number
  electionTicksMin: number
  electionTicksMax: number
  unreachableTicks: number
  downTicks: number
  bootstrapTicks: number
  joinRetryTicks: number
}

export interface TimingMs {
  heartbeatMs: number
  electionTimeoutMs: number
  unreachableAfterMs: number
  downAfterMs: number
  bootstrapTimeoutMs: number
}

/** The rules the core relies on; the messages name the flags that set each value. */
export function checkTiming(t: Timing): Result<Timing> {
  if (t.heartbeatTicks < 1) return err(`--heartbeat-ms must be at least one tick (${TICK_MS} ms)`)
  if (t.electionTicksMin <= t.heartbeatTicks * 2) {
    return err(`--election-timeout-ms (${t.electionTicksMin * TICK_MS} ms after rounding to ${TICK_MS} ms ticks) must exceed twice --heartbeat-ms (${t.heartbeatTicks * TICK_MS} ms)`)
  }
  if (t.electionTicksMax <= t.electionTicksMin) return err('the election timeout range must not be empty')
  if (t.unreachableTicks <= t.heartbeatTicks) return err(`--unreachable-after-ms (${t.unreachableTicks * TICK_MS} ms) must exceed --heartbeat-ms (${t.heartbeatTicks * TICK_MS} ms)`)
  if (t.downTicks <= t.unreachableTicks) return err(`--down-after-ms (${t.downTicks * TICK_MS} ms) must exceed --unreachable-after-ms (${t.unreachableTicks * TICK_MS} ms)`)
  if (t.downTicks <= t.electionTicksMax) return err(`--down-after-ms (${t.downTicks * TICK_MS} ms) must exceed the longest election timeout (${t.electionTicksMax * TICK_MS} ms)`)
  return ok(t)
}

export function timingFromMs(ms: TimingMs): Result<Timing> {
  const ticks = (value: number) => Math.max(1, Math.round(value / TICK_MS))
  return checkTiming({
    heartbeatTicks: ticks(ms.heartbeatMs),
    electionTicksMin: ticks(ms.electionTimeoutMs),
    electionTicksMax: ticks(ms.electionTimeoutMs * 2),
    unreachableTicks: ticks(ms.unreachableAfterMs),
    downTicks: ticks(ms.downAfterMs),
    bootstrapTicks: ticks(ms.bootstrapTimeoutMs),
    // A joiner asks again often enough to find a new leader quickly, but not in a tight loop.
    joinRetryTicks: ticks(Math.min(200, ms.electionTimeoutMs / 2)),
  })
}

export const DEFAULT_TIMING_MS: TimingMs = {
  heartbeatMs: 100,
  electionTimeoutMs: 500,
  unreachableAfterMs: 1000,
  downAfterMs: 3000,
  bootstrapTimeoutMs: 1500,
}

function defaultTiming(): Timing {
  const timing = timingFromMs(DEFAULT_TIMING_MS)
  if (!timing.ok) throw new Error(`default timing is invalid: ${timing.error}`)
  return timing.value
}

/** The shell's defaults in ticks: what the simulator and the tests run with. */
export const DEFAULT_TIMING: Timing = defaultTiming()

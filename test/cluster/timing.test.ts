import { describe, expect, test } from 'bun:test'
import { checkTiming, DEFAULT_TIMING, DEFAULT_TIMING_MS, TICK_MS, timingFromMs } from '../../src/cluster/timing'

describe('timing', () => {
  test('the defaults convert to the ticks the shell has always run with', () => {
    expect(DEFAULT_TIMING).toEqual({
      heartbeatTicks: 10, electionTicksMin: 50, electionTicksMax: 100, unreachableTicks: 100, downTicks: 300, bootstrapTicks: 150, joinRetryTicks: 20,
    })
    expect(TICK_MS).toBe(10)
  })

  test.each([
    [{ heartbeatTicks: 0 }, '--heartbeat-ms must be at least one tick'],
    [{ electionTicksMin: 20 }, 'must exceed twice --heartbeat-ms'],
    [{ electionTicksMax: 50 }, 'range must not be empty'],
    [{ unreachableTicks: 10 }, '--unreachable-after-ms'],
    [{ downTicks: 100 }, 'must exceed --unreachable-after-ms'],
    [{ downTicks: 101, unreachableTicks: 100, electionTicksMax: 150 }, 'longest election timeout'],
  ])('refuses %p', (change, message) => {
    const result = checkTiming({ ...DEFAULT_TIMING, ...change })
    expect(result.ok).toBe(false)
    expect(!result.ok && result.error).toContain(message)
  })

  test('rounding to ticks is checked too: 5 ms heartbeat with a 15 ms election timeout is refused', () => {
    // 5 ms rounds to 1 tick and 15 ms to 2 ticks: not more than twice the heartbeat.
    const result = timingFromMs({ ...DEFAULT_TIMING_MS, heartbeatMs: 5, electionTimeoutMs: 15 })
    expect(result.ok).toBe(false)
    expect(!result.ok && result.error).toContain('--election-timeout-ms')
  })
})

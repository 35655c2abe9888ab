// The lag monitor on a hand-driven clock: a timer that fires late is lag; lag past the threshold
// is overload, which fades a few probes after the loop catches up.
import { expect, test } from 'bun:test'
import type { Clock } from '../src/io'
import { LagMonitor } from '../src/load'

function manualClock() {
  let now = 0
  let tick: () => void = () => {}
  const clock: Clock = {
    now: () => now,
    every: (_ms, fn) => ((tick = fn), () => {}),
    after: () => () => {},
  }
  return { clock, fire: (atMs: number) => ((now = atMs), tick()) }
}

test('a probe 120 ms late is overload; it ends a few on-time probes later', () => {
  const { clock, fire } = manualClock()
  const load = new LagMonitor(clock, { intervalMs: 20, thresholdMs: 50 })
  load.start()
  fire(500) // start-up stalls are not counted
  expect(load.overloaded()).toBe(false)
  fire(990)
  fire(1010)
  fire(1030)
  expect(load.overloaded()).toBe(false)
  fire(1170) // 120 ms late
  expect(load.lagMs).toBe(120)
  expect(load.overloaded()).toBe(true)
  let t = 1170
  let probes = 0
  while (load.overloaded()) {
    fire((t += 20))
    probes++
  }
  expect(probes).toBeLessThanOrEqual(4)
  expect(load.maxLagMs).toBe(120)
})

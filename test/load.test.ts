// The lag monitor on a hand-driven clock: a timer that fires late is lag; lag past the threshold
// is overload, which fades a few probes after the loop catches up. The probe runs while clients
// are about (the monitor is asked something) and stops after a quiet second.
import { expect, test } from 'bun:test'
import type { Clock } from '../src/io'
import { LagMonitor } from '../src/load'

/** `fire` runs the probe timer, if it is set; `probing` tells whether it is. */
function manualClock() {
  let now = 0
  let tick: (() => void) | null = null
  const clock: Clock = {
    now: () => now,
    every: (_ms, fn) => ((tick = fn), () => void (tick = null)),
    after: () => () => {},
    defer: (fn) => fn(),
    soon: (fn) => fn(),
  }
  return { clock, fire: (atMs: number) => ((now = atMs), tick?.()), probing: () => tick !== null }
}

test('one late probe is a stall, not overload', () => {
  const { clock, fire } = manualClock()
  const load = new LagMonitor(clock, { intervalMs: 20, thresholdMs: 50, turnMs: 30 })
  load.start()
  fire(990) // still warming up
  load.overloaded() // a client frame
  fire(1010)
  fire(1170) // 140 ms late, once
  expect(load.lagMs).toBe(140)
  expect(load.overloaded()).toBe(false)
  for (let t = 1190; t <= 1300; t += 20) fire(t)
  expect(load.overloaded()).toBe(false)
})

test('probes late three times in a row are overload; it ends a few on-time probes later', () => {
  const { clock, fire } = manualClock()
  const load = new LagMonitor(clock, { intervalMs: 20, thresholdMs: 50, turnMs: 30 })
  load.start()
  fire(500) // start-up stalls are not counted
  expect(load.overloaded()).toBe(false)
  fire(990)
  fire(1010)
  fire(1030)
  expect(load.overloaded()).toBe(false)
  fire(1170) // 120 ms late
  expect(load.lagMs).toBe(120)
  expect(load.overloaded()).toBe(false)
  fire(1310) // and again
  fire(1450) // and again: the loop is behind, not stalled once
  expect(load.overloaded()).toBe(true)
  let t = 1450
  let probes = 0
  while (load.overloaded()) {
    fire((t += 20))
    probes++
  }
  expect(probes).toBeLessThanOrEqual(4)
  expect(load.maxLagMs).toBe(120)
})

test('a turn late past its budget is `behind`; `whenOnTime` runs at the first probe that is not late past the threshold', () => {
  const { clock, fire } = manualClock()
  let now = 0
  const c: Clock = { ...clock, now: () => now }
  const load = new LagMonitor(c, { intervalMs: 20, thresholdMs: 100, turnMs: 30 })
  load.start()
  for (now = 20; now < 1100; now += 20) fire(now), load.overloaded() // the last probe at 1080; clients about
  const turn = load.turn()
  now = 1080 + 40 // 40 ms into the turn after the probe at 1080: the next probe is 20 ms late
  expect(load.behind()).toBe(false)
  now = 1080 + 51
  expect(load.behind()).toBe(true)
  expect(load.behind(100)).toBe(false)
  now = 1080 + 280
  let caughtUp = 0
  load.whenOnTime(() => caughtUp++)
  fire(now) // 260 ms late: not on time yet
  expect(caughtUp).toBe(0)
  expect(load.turn()).toBe(turn + 1)
  now += 20
  fire(now)
  expect(caughtUp).toBe(1)
  expect(load.behind()).toBe(false)
})

test('a turn is also `behind` once its client work has run past the budget, however recent the last probe', () => {
  let now = 0
  let probe = () => {}
  const endOfTurn: Array<() => void> = []
  const clock: Clock = { now: () => now, every: (_ms, fn) => ((probe = fn), () => {}), after: () => () => {}, defer: (fn) => void endOfTurn.push(fn), soon: (fn) => fn() }
  const endTurn = () => endOfTurn.splice(0).forEach((fn) => fn())
  const load = new LagMonitor(clock, { intervalMs: 50, thresholdMs: 100, turnMs: 10 })
  load.start()
  for (now = 50; now <= 1100; now += 50) probe(), load.overloaded(), endTurn()
  now = 1101 // a turn begins just after the probe at 1100: its first client frame
  expect(load.behind()).toBe(false)
  now = 1111
  expect(load.behind()).toBe(false)
  now = 1112 // 11 ms of client work in this turn; the next probe is not even due
  expect(load.behind()).toBe(true)
  expect(load.behind(100)).toBe(false)
  endTurn()
  expect(load.behind()).toBe(false) // the next turn starts afresh
})

test('late probes while this process hardly ran are the machine\'s, not load to shed; late while it was busy, they are', () => {
  const { clock, fire: fireAt } = manualClock()
  let cpu = 0
  const load = new LagMonitor(clock, { intervalMs: 20, thresholdMs: 50, turnMs: 30 }, () => cpu)
  load.start()
  // A client asks before each probe: the probe stays awake.
  const fire = (t: number) => (load.turn(), fireAt(t))
  fire(990)
  fire(1010)
  // Three probes 120 ms late, with 10 ms of CPU each: other processes had the cores.
  for (const t of [1150, 1290, 1430]) {
    cpu += 10
    fire(t)
  }
  expect(load.lagMs).toBe(120)
  expect(load.overloaded()).toBe(false)
  // Caught up, then three late probes with this process on a CPU all along.
  for (let t = 1450; t <= 1600; t += 20) fire(t)
  for (const t of [1740, 1880, 2020]) {
    cpu += 130
    fire(t)
  }
  expect(load.overloaded()).toBe(true)
})

test('busyBehind: a long turn counts only when this process spent it on a CPU', () => {
  let now = 0
  let cpu = 0
  const clock: Clock = { now: () => now, every: (_ms, fn) => ((tick = fn), () => {}), after: () => () => {}, defer: (fn) => fn(), soon: (fn) => fn() }
  let tick = () => {}
  const load = new LagMonitor(clock, { intervalMs: 20, thresholdMs: 50, turnMs: 30 }, () => cpu)
  load.start()
  now = 1000
  tick()
  now = 1060 // 40 ms past the probe's due time, 10 ms of it on a CPU
  cpu += 10
  expect(load.behind()).toBe(true)
  expect(load.busyBehind()).toBe(false)
  cpu += 40 // now 50 of the 60 ms
  expect(load.busyBehind()).toBe(true)
})

test('the probe stops after a quiet second and starts again when a client is about', () => {
  const { clock, fire, probing } = manualClock()
  let now = 0
  const c: Clock = { ...clock, now: () => now }
  const load = new LagMonitor(c, { intervalMs: 20, thresholdMs: 100, turnMs: 30 })
  load.start()
  for (now = 20; now <= 1000; now += 20) fire(now)
  expect(probing()).toBe(true)
  now = 1020
  fire(now)
  expect(probing()).toBe(false)
  // Long after the last probe, a client frame: the turn is not `behind` for the probe that slept.
  now = 60_000
  expect(load.behind()).toBe(false)
  expect(probing()).toBe(true)
  now += 51 + 20
  expect(load.behind()).toBe(true)
  // A loop that is behind keeps the probe running without clients until it is on time again.
  for (let i = 0; i < 3; i++) fire((now += 150))
  expect(load.overloaded()).toBe(true)
  now += 2000
  fire(now)
  expect(probing()).toBe(true)
  while (load.overloaded()) fire((now += 20))
  for (let i = 0; i < 60 && probing(); i++) fire((now += 20))
  expect(probing()).toBe(false)
})

test('the fan-out share: cut by 30 % at every probe a turn over 100 ms made late, down to 5 %; back by 5 % at every probe on time', () => {
  const { clock, fire } = manualClock()
  const load = new LagMonitor(clock, { intervalMs: 50, thresholdMs: 100, turnMs: 30 })
  load.start()
  let t = 990
  fire(t) // still warming up
  // A client asks before each probe, so the probe stays awake.
  const probe = (lateMs: number) => (load.turn(), fire((t += 50 + lateMs)))
  probe(0)
  expect(load.fanoutShare).toBe(1)
  probe(40) // a turn of 90 ms: not late enough to cut
  expect(load.fanoutShare).toBe(1)
  probe(60)
  expect(load.fanoutShare).toBeCloseTo(0.7)
  probe(300)
  expect(load.fanoutShare).toBeCloseTo(0.49)
  for (let i = 0; i < 20; i++) probe(500)
  expect(load.fanoutShare).toBe(0.05)
  probe(0)
  expect(load.fanoutShare).toBeCloseTo(0.1)
  for (let i = 0; i < 19; i++) probe(0) // about a second on time: all of it again
  expect(load.fanoutShare).toBe(1)
})

// A clock that only moves when told to: the simulator's time. Timers fire in order of their due
// time, and timers due at the same moment in the order they were set, so frames a connection
// sends at one instant arrive in the order they were sent, and one seed is one run.
import type { Clock } from '../../src/io'

interface Timer {
  due: number
  seq: number
  fn: () => void
  cancelled: boolean
}

export class VirtualClock implements Clock {
  private t = 0
  private seq = 0
  private readonly heap: Timer[] = []

  constructor(private readonly epochMs = 1_700_000_000_000) {}

  /** Virtual milliseconds since the clock was made. */
  get elapsed(): number {
    return this.t
  }

  readonly now = (): number => this.epochMs + this.t

  readonly after = (ms: number, fn: () => void): (() => void) => {
    const timer: Timer = { due: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false }
    this.push(timer)
    return () => void (timer.cancelled = true)
  }

  /** At the same virtual instant, after everything already due then (timers run in the order they were set). */
  readonly defer = (fn: () => void): void => void this.after(0, fn)
  /** As `defer`: the simulator has no turns within a turn, and a step's answers go at once in virtual time either way. */
  readonly soon = this.defer

  readonly every = (ms: number, fn: () => void): (() => void) => {
    let cancelled = false
    let cancelNext = () => {}
    const schedule = () => {
      cancelNext = this.after(ms, () => {
        if (cancelled) return
        schedule()
        fn()
      })
    }
    schedule()
    return () => {
      cancelled = true
      cancelNext()
    }
  }

  /** Fires every timer due up to `elapsed` ms, in order, calling `afterEach` after each one; then time is `elapsed`. */
  runUntil(elapsed: number, afterEach?: () => void): void {
    for (;;) {
      const next = this.heap[0]
      if (!next || next.due > elapsed) break
      this.pop()
      if (next.cancelled) continue
      this.t = next.due
      next.fn()
      afterEach?.()
    }
    this.t = Math.max(this.t, elapsed)
  }

  private less(a: Timer, b: Timer): boolean {
    return a.due < b.due || (a.due === b.due && a.seq < b.seq)
  }

  private push(timer: Timer): void {
    const h = this.heap
    h.push(timer)
    let i = h.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.less(h[i]!, h[parent]!)) break
      ;[h[i], h[parent]] = [h[parent]!, h[i]!]
      i = parent
    }
  }

  private pop(): void {
    const h = this.heap
    const last = h.pop()!
    if (h.length === 0) return
    h[0] = last
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r
      if (m === i) break
      ;[h[i], h[m]] = [h[m]!, h[i]!]
      i = m
    }
  }
}

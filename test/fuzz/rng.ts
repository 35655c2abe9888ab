// A small seeded random source (splitmix32-style mixing over a 32-bit state). Every decision the
// fuzzer makes is drawn from one of these, so a seed replays the same schedule of inputs (timing
// and the nodes' own randomness aside).
export class Rng {
  private state: number

  constructor(seed: number) {
    this.state = seed >>> 0
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0
    let z = this.state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return ((z ^ (z >>> 16)) >>> 0) / 0x1_0000_0000
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }

  chance(p: number): boolean {
    return this.next() < p
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list')
    return items[Math.floor(this.next() * items.length)]!
  }

  /** Picks by weight: `[[weight, value], ...]`. */
  weighted<T>(items: readonly (readonly [number, T])[]): T {
    const total = items.reduce((sum, [w]) => sum + w, 0)
    let x = this.next() * total
    for (const [w, value] of items) {
      x -= w
      if (x < 0) return value
    }
    return items[items.length - 1]![1]
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) out[i] = Math.floor(this.next() * 256)
    return out
  }

  /** A length skewed towards small values, up to `max`. */
  size(max: number): number {
    return Math.min(max, Math.floor(Math.pow(this.next(), 3) * (max + 1)))
  }

  /** An independent stream for `label` (a lane, a connection), stable for a given seed. */
  fork(label: number): Rng {
    return new Rng(Math.imul(this.state ^ 0x5bd1e995, 31) + Math.imul(label + 1, 0x27d4eb2d))
  }
}

export const randomSeed = (): number => (Math.random() * 0x1_0000_0000) >>> 0

// Bounds on what the fuzzer may do: a token bucket for inputs and one for bytes, and a cap on
// open connections. Every action takes from them before it acts.
export class TokenBucket {
  private tokens: number
  private last = performance.now()

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst
  }

  /** Waits until `n` tokens are available (n above the burst waits for a full bucket), unless `stopped()`. */
  async take(n: number, stopped: () => boolean): Promise<boolean> {
    const need = Math.min(n, this.burst)
    for (;;) {
      const now = performance.now()
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond)
      this.last = now
      if (this.tokens >= need) {
        this.tokens -= need
        return true
      }
      if (stopped()) return false
      await Bun.sleep(Math.max(1, Math.min(100, ((need - this.tokens) / this.perSecond) * 1000)))
    }
  }
}

export class Gate {
  private open = 0
  private waiters: (() => void)[] = []

  constructor(private readonly max: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    while (this.open >= this.max) await new Promise<void>((resolve) => this.waiters.push(resolve))
    this.open++
    try {
      return await fn()
    } finally {
      this.open--
      this.waiters.shift()?.()
    }
  }

  get inUse(): number {
    return this.open
  }
}

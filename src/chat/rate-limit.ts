// Per-connection message rate: a token bucket, and the rule that closes a client that keeps
// flooding. Pure: the caller passes the time, so the simulator and the tests stay deterministic.
//
// The bucket holds up to `burst` tokens and refills at `perSecond` tokens a second; each chat
// frame takes one. A frame with no token is refused (not delivered). More than
// FLOOD.refusalsMax refusals within FLOOD.windowMs means the client ignores the refusals, so it
// is closed (4429) instead of being answered forever.

export interface RateLimit {
  /** Refill rate; 0 turns the limit off. */
  perSecond: number
  burst: number
}

export const FLOOD = { refusalsMax: 20, windowMs: 10_000 } as const

export type Verdict = 'accept' | 'refuse' | 'flood'

/**
 * One connection's bucket. The limit is the node's, passed in on each frame, not kept here; and
 * the state is meant to be inherited (the gateway's session is a bucket), so an idle connection
 * costs no object of its own for it.
 */
export class TokenBucket {
  private tokens: number
  private last: number
  private windowStart = Number.NEGATIVE_INFINITY
  private refusals = 0

  constructor(limit: RateLimit, now: number) {
    this.tokens = limit.burst
    this.last = now
  }

  /** One frame arrived at `now` (milliseconds, never earlier than the previous call's). */
  take(limit: RateLimit, now: number): Verdict {
    if (limit.perSecond <= 0) return 'accept'
    // A clock that steps back (NTP) must not drain or overfill the bucket.
    const elapsed = Math.max(0, now - this.last)
    this.last = Math.max(this.last, now)
    this.tokens = Math.min(limit.burst, this.tokens + (elapsed * limit.perSecond) / 1000)
    if (this.tokens >= 1) {
      this.tokens -= 1
      return 'accept'
    }
    if (now - this.windowStart >= FLOOD.windowMs) {
      this.windowStart = now
      this.refusals = 0
    }
    this.refusals += 1
    return this.refusals > FLOOD.refusalsMax ? 'flood' : 'refuse'
  }
}

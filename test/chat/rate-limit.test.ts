// The token bucket and the flooding rule, on an injected clock.
import { describe, expect, test } from 'bun:test'
import { FLOOD, TokenBucket, type RateLimit } from '../../src/chat/rate-limit'

/** A bucket and its limit, as the gateway holds them (the limit is the node's, the bucket the session's). */
function limited(limit: RateLimit, now: number) {
  const bucket = new TokenBucket(limit, now)
  return { take: (t: number) => bucket.take(limit, t) }
}
type MessageLimiter = ReturnType<typeof limited>

const verdicts = (limiter: MessageLimiter, times: number[]) => times.map((t) => limiter.take(t))

describe('TokenBucket', () => {
  test('a burst of `burst` messages passes at once, the next is refused', () => {
    const limiter = limited({ perSecond: 20, burst: 40 }, 0)
    const first = verdicts(limiter, Array(40).fill(0))
    expect(first.every((v) => v === 'accept')).toBe(true)
    expect(limiter.take(0)).toBe('refuse')
  })

  test('tokens come back at the configured rate, never above the burst', () => {
    const limiter = limited({ perSecond: 20, burst: 40 }, 0)
    verdicts(limiter, Array(40).fill(0))
    expect(limiter.take(49)).toBe('refuse') // 0.98 of a token
    expect(limiter.take(50)).toBe('accept') // one token after 50 ms at 20/s
    // A long pause refills to the burst, not beyond.
    const later = verdicts(limiter, Array(41).fill(1_000_000))
    expect(later.filter((v) => v === 'accept')).toHaveLength(40)
  })

  test('a steady sender at the rate is never refused', () => {
    const limiter = limited({ perSecond: 20, burst: 1 }, 0)
    const times = Array.from({ length: 1000 }, (_, i) => (i + 1) * 50)
    expect(verdicts(limiter, times).every((v) => v === 'accept')).toBe(true)
  })

  test(`more than ${FLOOD.refusalsMax} refusals within ${FLOOD.windowMs} ms is flooding`, () => {
    const limiter = limited({ perSecond: 1, burst: 1 }, 0)
    expect(limiter.take(0)).toBe('accept')
    const refused = verdicts(limiter, Array(FLOOD.refusalsMax).fill(10))
    expect(refused.every((v) => v === 'refuse')).toBe(true)
    expect(limiter.take(20)).toBe('flood')
  })

  test('refusals spread over more than the window are not flooding', () => {
    const limiter = limited({ perSecond: 0.001, burst: 1 }, 0)
    limiter.take(0)
    const step = FLOOD.windowMs / FLOOD.refusalsMax // exactly refusalsMax per window
    const times = Array.from({ length: 200 }, (_, i) => 1 + i * step)
    expect(verdicts(limiter, times).includes('flood')).toBe(false)
  })

  test('a clock that steps back neither refills nor breaks the bucket; rate 0 is no limit', () => {
    const limiter = limited({ perSecond: 10, burst: 2 }, 1000)
    expect(verdicts(limiter, [1000, 1000, 0, 500])).toEqual(['accept', 'accept', 'refuse', 'refuse'])
    const off = limited({ perSecond: 0, burst: 1 }, 0)
    expect(verdicts(off, Array(500).fill(0)).every((v) => v === 'accept')).toBe(true)
  })
})

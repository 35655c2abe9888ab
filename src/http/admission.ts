// Whether a chat socket upgrade may go ahead, decided before the upgrade so the answer is a plain
// HTTP status: 403 for a foreign origin, 429 when the client's address has too many sockets,
// 503 when the node has too many. Pure bookkeeping: the shell passes origins and addresses in.

export type UpgradeRefusal = { status: 403 | 429 | 503; error: string }

/**
 * Browsers always send `Origin` on a WebSocket upgrade; a page on another site is refused so it
 * cannot chat in its visitor's name. A request without `Origin` is not from a browser page (any
 * other client can claim any origin anyway), so it passes. `allowed: null` allows every origin.
 */
export function originRefusal(origin: string | null, allowed: readonly string[] | null): UpgradeRefusal | null {
  if (allowed === null || origin === null) return null
  return allowed.includes(origin.toLowerCase()) ? null : { status: 403, error: `origin ${origin.slice(0, 200)} is not allowed` }
}

export interface ConnectionCaps {
  perIp: number
  total: number
  /** New sockets a second per client address (a bucket of 10 seconds' worth); 0: no limit. */
  connectsPerIpPerSecond?: number
  /** True while the node is behind on its own work (src/load.ts): new sockets are refused with 503. */
  overloaded?: () => boolean
}

/** Bound on the addresses whose connect rate is remembered: full buckets are forgotten first. */
const RATE_BUCKETS_MAX = 10_000
/**
 * How long a name closed for flooding (4429) may not connect again from the same address. A
 * client that reconnected at once after each close did it about 100 times a second within the
 * connect rate, each time a join and a leave line for every user in the cluster (their p99 rose by
 * 30-100 ms). Per name and address: others behind the same address are not punished for it.
 */
export const FLOOD_PENALTY_MS = 10_000

/** Open chat sockets, per client address and in all. */
export class ConnectionCounts {
  private readonly byIp = new Map<string, number>()
  /** Per address: tokens left for new sockets, and when they were counted. */
  private readonly connects = new Map<string, { tokens: number; at: number }>()
  /** `address name` → until when that name may not connect from that address (FLOOD_PENALTY_MS). */
  private readonly penalties = new Map<string, number>()
  private total = 0

  constructor(private readonly caps: ConnectionCaps) {}

  /** Whether one more socket from `ip` would go over a cap, or the node sheds new sockets now. */
  refusal(ip: string): UpgradeRefusal | null {
    if (this.caps.overloaded?.()) return { status: 503, error: 'this node is overloaded; try another node or later' }
    return this.capRefusal(ip)
  }

  /** Whether one more socket from `ip` would go over a cap. */
  private capRefusal(ip: string): UpgradeRefusal | null {
    if (this.total >= this.caps.total) return { status: 503, error: `this node is at its limit of ${this.caps.total} connections; try another node or later` }
    if ((this.byIp.get(ip) ?? 0) >= this.caps.perIp) return { status: 429, error: `at most ${this.caps.perIp} connections per client address` }
    return null
  }

  /**
   * Takes one new-socket token of `ip` at `now` (ms), or says why not: a client that reconnects
   * in a loop (closed for flooding, say) would otherwise cost every user a join and a leave each
   * time. The bucket holds 10 seconds' worth, so a page reload or a drain's move passes.
   */
  connectRefusal(ip: string, now: number): UpgradeRefusal | null {
    const rate = this.caps.connectsPerIpPerSecond ?? 0
    if (rate <= 0) return null
    const burst = rate * 10
    const bucket = this.connects.get(ip) ?? { tokens: burst, at: now }
    bucket.tokens = Math.min(burst, bucket.tokens + (Math.max(0, now - bucket.at) * rate) / 1000)
    bucket.at = Math.max(bucket.at, now)
    if (bucket.tokens < 1) return { status: 429, error: `at most ${rate} new connections a second per client address` }
    bucket.tokens -= 1
    this.connects.set(ip, bucket)
    if (this.connects.size > RATE_BUCKETS_MAX) this.forgetFull(now, rate, burst)
    return null
  }

  /** A socket of `name` from `ip` was closed for flooding. */
  penalize(ip: string, name: string, now: number): void {
    if (this.penalties.size >= RATE_BUCKETS_MAX) for (const [key, until] of this.penalties) if (until <= now) this.penalties.delete(key)
    if (this.penalties.size < RATE_BUCKETS_MAX) this.penalties.set(`${ip} ${name}`, now + FLOOD_PENALTY_MS)
  }

  /** Whether `name` from `ip` is still kept out for flooding. */
  penaltyRefusal(ip: string, name: string, now: number): UpgradeRefusal | null {
    if (this.penalties.size === 0) return null
    const key = `${ip} ${name}`
    const until = this.penalties.get(key)
    if (until === undefined) return null
    if (until <= now) return void this.penalties.delete(key), null
    return { status: 429, error: `closed for flooding: ${name.slice(0, 64)} may connect again from this address in ${Math.ceil((until - now) / 1000)} s` }
  }

  private forgetFull(now: number, rate: number, burst: number): void {
    for (const [ip, b] of this.connects) if (b.tokens + ((now - b.at) * rate) / 1000 >= burst) this.connects.delete(ip)
  }

  /**
   * Counts a socket that opened; false (and nothing counted) when it is over a cap: two upgrades
   * raced past `refusal`. Load is not asked again: the upgrade was admitted under it, and asking
   * twice would count one socket twice.
   */
  acquire(ip: string): boolean {
    if (this.capRefusal(ip)) return false
    this.byIp.set(ip, (this.byIp.get(ip) ?? 0) + 1)
    this.total += 1
    return true
  }

  release(ip: string): void {
    const n = this.byIp.get(ip) ?? 0
    if (n <= 0) return
    if (n === 1) this.byIp.delete(ip)
    else this.byIp.set(ip, n - 1)
    this.total -= 1
  }

  counts(): { total: number; addresses: number } {
    return { total: this.total, addresses: this.byIp.size }
  }
}

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
  /** True while the node is behind on its own work (src/load.ts): new sockets are refused with 503. */
  overloaded?: () => boolean
}

/** Open chat sockets, per client address and in all. */
export class ConnectionCounts {
  private readonly byIp = new Map<string, number>()
  private total = 0

  constructor(private readonly caps: ConnectionCaps) {}

  /** Whether one more socket from `ip` would go over a cap. */
  refusal(ip: string): UpgradeRefusal | null {
    if (this.caps.overloaded?.()) return { status: 503, error: 'this node is overloaded; try another node or later' }
    if (this.total >= this.caps.total) return { status: 503, error: `this node is at its limit of ${this.caps.total} connections; try another node or later` }
    if ((this.byIp.get(ip) ?? 0) >= this.caps.perIp) return { status: 429, error: `at most ${this.caps.perIp} connections per client address` }
    return null
  }

  /** Counts a socket that opened; false (and nothing counted) when it is over a cap. */
  acquire(ip: string): boolean {
    if (this.refusal(ip)) return false
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

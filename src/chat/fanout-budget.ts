// How many chat deliveries to local users a node takes on per second. A message said on this
// node costs one delivery per local user, so 500 users each within their own rate limit can
// still ask for millions a second; past what the node can push, its event loop falls behind and
// its heartbeats go out late. The budget refuses new messages from local users before that
// (they get `overloaded` and may send again), while messages already in the cluster (from other
// nodes) are always delivered and only use up the budget. Pure: time is passed in.

/**
 * What relaying a message to one other member costs, in local deliveries: the peer decodes,
 * checks and publishes it (5-10 µs here, against 1-2 µs a delivery to a local user). A node with
 * few users of its own but one flooding client otherwise took on tens of thousands of messages a
 * second within its budget, and every other member had to take them all.
 */
export const RELAY_DELIVERIES = 5

/** The budget a message said on this node uses: its local deliveries and its relays. */
export const messageCost = (localUsers: number, peers: number) => localUsers + RELAY_DELIVERIES * peers

/**
 * How much of a second's budget may go at once. A whole second's worth (100,000 deliveries: 200
 * messages to 500 users) all said in one turn of the event loop made that turn take 0.3-1.3 s on
 * this machine, and the node's heartbeats waited behind it.
 */
const BURST_SECONDS = 0.1

export class FanoutBudget {
  private tokens: number
  private last: number
  private readonly burst: number

  /** `perSecond` deliveries a second, a tenth of a second's worth at once; 0 turns the budget off. */
  constructor(
    private readonly perSecond: number,
    now: number,
  ) {
    this.burst = perSecond * BURST_SECONDS
    this.tokens = this.burst
    this.last = now
  }

  /**
   * Whether a message to `deliveries` users may be said now; takes them if so. `share` (0-1) is the
   * part of the budget the node can serve now (LagMonitor.fanoutShare): it refills that much slower.
   * `light`: said by a user who had said nothing for a while (see LIGHT_MS in gateway.ts). Such a
   * message may also take the budget into debt, down to one burst, which the others then wait out:
   * when 500 users each at the rate limit keep the budget empty, refusing whoever comes next
   * refused a user saying a line now and then as often as them (a third to two thirds of its
   * lines). The debt is repaid from the same rate, so the node still takes on no more than
   * `perSecond` over time, however many users are light.
   */
  take(deliveries: number, now: number, share = 1, light = false): boolean {
    if (this.perSecond <= 0) return true
    this.refill(now, share)
    const burst = this.burst * share
    if (this.tokens < Math.min(deliveries, burst) - (light ? burst : 0)) return false
    this.tokens -= deliveries
    return true
  }

  /** Deliveries that happen whatever the budget (messages from other nodes): they use it up. */
  spend(deliveries: number, now: number, share = 1): void {
    if (this.perSecond <= 0) return
    this.refill(now, share)
    // Down to one second's debt at most, so a burst from elsewhere refuses local users for at most a second.
    this.tokens = Math.max(-this.perSecond, this.tokens - deliveries)
  }

  private refill(now: number, share: number): void {
    const elapsed = Math.max(0, now - this.last)
    this.last = Math.max(this.last, now)
    this.tokens = Math.min(this.burst * share, this.tokens + (elapsed * this.perSecond * share) / 1000)
  }
}

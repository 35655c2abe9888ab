// Which join and leave entries a node proposes for its users. Every line of the transcript goes to
// every user in the cluster, so a storm told one line per user costs N joins × N users frames
// (5,000 reconnecting users: 25 million). In a big room a node's joins (or leaves) are gathered
// instead and go as one entry, which the transcript makes one line ("alice, bob and 48 others
// joined the chat"): at most one such entry of this node in flight at a time, and in a room of U
// users at most one every U / USERS_PER_MS ms, so their lines cost every node about the same
// number of frames a second however big the room. A lone join in a quiet room still goes at
// once, and a small room keeps one line per join and per leave, exactly as before. Pure: time
// and the room's size come in as arguments.
import { PRESENCE_NAMES_MAX } from './entries'

/** Below this many users in the cluster nothing is gathered: one line per join, one per leave. */
export const SMALL_ROOM = 100
/** Users a gathered line may reach per millisecond since the last one: a room of 20,000 gets at most one a second. */
const USERS_PER_MS = 20
const SPACING_MAX_MS = 1_000

export type PresenceEvent = 'join' | 'leave'
export interface Gathered {
  type: PresenceEvent
  usernames: string[]
  /** When the first of them joined or left. */
  timestamp: number
}

export class PresenceLines {
  private held: Gathered | null = null
  private lastOut = -Infinity

  /** `smallRoom`: below this many users nothing is gathered. */
  constructor(private readonly smallRoom = SMALL_ROOM) {}

  /** Names waiting to be proposed. */
  get size(): number {
    return this.held?.usernames.length ?? 0
  }

  /**
   * A user of this node joined or left. Returns what is to be proposed now, oldest first: what
   * was held of the other kind (the order of a node's joins and leaves is kept), and this one
   * when nothing holds it back (`due`).
   */
  add(type: PresenceEvent, username: string, now: number, roomSize: number, inFlight: boolean): Gathered[] {
    const out: Gathered[] = []
    if (this.held && this.held.type !== type) out.push(this.take(now))
    if (this.held) this.held.usernames.push(username)
    else this.held = { type, usernames: [username], timestamp: now }
    if (this.held.usernames.length >= PRESENCE_NAMES_MAX || this.due(now, roomSize, inFlight || out.length > 0) === 0) out.push(this.take(now))
    return out
  }

  /**
   * Milliseconds until what is held may go (0: now), or null when nothing is held or it waits for
   * the entry in flight to land. A small room never waits.
   */
  due(now: number, roomSize: number, inFlight: boolean): number | null {
    if (!this.held) return null
    if (roomSize < this.smallRoom) return 0
    if (inFlight) return null
    return Math.max(0, this.lastOut + Math.min(SPACING_MAX_MS, roomSize / USERS_PER_MS) - now)
  }

  /** Whatever is held, to be proposed now (before a chat line of this node, or a drain); null when nothing is. */
  flush(now: number): Gathered | null {
    return this.held ? this.take(now) : null
  }

  private take(now: number): Gathered {
    const held = this.held!
    this.held = null
    this.lastOut = now
    return held
  }
}

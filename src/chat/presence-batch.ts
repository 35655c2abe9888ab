// Presence changes, coalesced: during a join storm every change told one by one costs each local
// user one frame per change (N joins, N² frames) and each peer one cluster frame per change. So
// changes are gathered and told at once: local users get one
// `{"type":"presence","joins":[…],"leaves":[…]}` frame per short window (as Phoenix's
// presence_diff), peers one `presence_batch` of this node's own users per turn of the event loop.
// The first change after a quiet spell goes out to users on the next turn, so a lone join is told
// as fast as before; changes that follow within the window wait for its end.
//
// Both buffers keep the net change per user, so a frame never contradicts itself: a user who
// left and came back within one window is told as a leave and a join, applied in that order
// (leaves first, then joins); one who joined and left is told as a leave alone, since a user
// who connected meanwhile got a `users` frame that lists it.
import type { ChatUser } from './messages'
import type { PresenceChange } from './presence'
import type { ServerMessage, UserEntry } from './protocol'

/** Users one cluster frame carries at most (as the room's snapshot chunks). */
export const PEER_FRAME_USERS_MAX = 5_000

/** One presence frame's worth of changes to local users' lists, applied leaves first. */
export type PresenceDiff = { joins: UserEntry[]; leaves: UserEntry[] }

/** Net changes to the user list users hold, keyed by name and node (a name may pass between nodes). */
export class PresenceDiffBuffer {
  private readonly pending = new Map<string, { leave?: UserEntry; join?: UserEntry }>()
  /** The entries whose joins wait here, by identity (presence.ts hands out one object per listed entry). */
  private readonly joining = new Set<UserEntry>()

  add({ event, user }: PresenceChange): void {
    const id = `${user.nodeAddress}\u0000${user.username}`
    const entry = this.pending.get(id) ?? {}
    if (entry.join) this.joining.delete(entry.join)
    if (event === 'join') {
      entry.join = user
      this.joining.add(user)
    } else {
      // Joined within this window: whoever was told of it by a `users` frame must hear the leave.
      entry.leave ??= user
      delete entry.join
    }
    if (entry.join || entry.leave) this.pending.set(id, entry)
    else this.pending.delete(id)
  }

  get empty(): boolean {
    return this.pending.size === 0
  }

  /** Whether this entry's join waits in the buffer (a `users` frame leaves it to the presence frame). */
  joinPending(user: UserEntry): boolean {
    return this.joining.has(user)
  }

  take(): PresenceDiff | null {
    if (this.pending.size === 0) return null
    const diff: PresenceDiff = { joins: [], leaves: [] }
    for (const { join, leave } of this.pending.values()) {
      if (leave) diff.leaves.push(leave)
      if (join) diff.joins.push(join)
    }
    this.pending.clear()
    this.joining.clear()
    return diff
  }
}

/** Net changes to this node's own users, for peers: each name is either present (as this user) or gone. */
export class LocalUsersBuffer {
  private readonly pending = new Map<string, ChatUser | null>()

  join(user: ChatUser): void {
    this.pending.set(user.username, user)
  }

  leave(username: string): void {
    this.pending.set(username, null)
  }

  get empty(): boolean {
    return this.pending.size === 0
  }

  take(): { joins: ChatUser[]; leaves: string[] } | null {
    if (this.pending.size === 0) return null
    const joins: ChatUser[] = []
    const leaves: string[] = []
    for (const [username, user] of this.pending) {
      if (user) joins.push(user)
      else leaves.push(username)
    }
    this.pending.clear()
    return { joins, leaves }
  }
}

export interface PresenceBatchDeps {
  /** How long changes after the first are gathered, in ms. */
  windowMs: number
  now: () => number
  /** Runs `fn` once after `ms`; absent, every change is told at once (no coalescing). */
  after?: (ms: number, fn: () => void) => unknown
  /** One encoded frame to every local user. */
  publish: (json: string) => void
  /** This node's own users' changes to every other member. */
  broadcast: (batch: { joins: ChatUser[]; leaves: string[] }) => void
}

/** The two buffers and when they are flushed. */
export class PresenceBatch {
  private readonly toUsers = new PresenceDiffBuffer()
  private readonly toPeers = new LocalUsersBuffer()
  private usersScheduled = false
  private peersScheduled = false
  private lastFlush = -Infinity
  /** The encoded `users` frame while the list it holds stays as it is (usersFrame). */
  private usersJson: string | null = null

  constructor(private readonly d: PresenceBatchDeps) {}

  /** A change to the list local users hold. */
  announce(change: PresenceChange): void {
    if (change.event === 'leave') this.usersJson = null
    this.toUsers.add(change)
    this.scheduleUsers()
  }

  /**
   * A local user joined (`user`) or left (`null`, by name): to be told to the peers on the next
   * turn of the event loop, not at the end of a window. A user who moves (a drain, a dropped
   * connection) reconnects to another node at once, and that node must have heard of the leave
   * by then; a storm's changes still go together, as many arrive in one turn.
   */
  local(username: string, user: ChatUser | null): void {
    if (user) this.toPeers.join(user)
    else this.toPeers.leave(username)
    if (!this.d.after) return this.flushPeers()
    if (this.peersScheduled) return
    this.peersScheduled = true
    this.d.after(0, () => {
      this.peersScheduled = false
      this.flushPeers()
    })
  }

  /**
   * The `users` frame a new socket starts from: the list without the joins that wait for the
   * window. The socket is subscribed already, so the presence frame tells it those joins, and a
   * storm's joiners are not sent each other twice. Joins leave that list as it is, so it is
   * encoded once per window, not once per joiner; a leave or a flush changes it.
   */
  usersFrame(users: () => UserEntry[]): string {
    this.usersJson ??= JSON.stringify({ type: 'users', users: users().filter((u) => !this.toUsers.joinPending(u)) } satisfies ServerMessage)
    return this.usersJson
  }

  /** Tells everything pending now (a drain: peers must hear of the leaves before users reconnect there). */
  flush(): void {
    this.flushPeers()
    this.flushUsers()
  }

  private flushPeers(): void {
    const peers = this.toPeers.take()
    if (!peers) return
    // In pieces, so no cluster frame nears the transport's frame size limit; leaves before
    // joins, across the pieces too (a name may leave and another spelling of it join).
    const { leaves, joins } = peers
    for (let i = 0; i < leaves.length + joins.length; i += PEER_FRAME_USERS_MAX) {
      const end = i + PEER_FRAME_USERS_MAX
      this.d.broadcast({ leaves: leaves.slice(i, end), joins: joins.slice(Math.max(0, i - leaves.length), Math.max(0, end - leaves.length)) })
    }
  }

  private flushUsers(): void {
    this.lastFlush = this.d.now()
    this.usersJson = null
    const users = this.toUsers.take()
    if (users) this.d.publish(JSON.stringify({ type: 'presence', ...users } satisfies ServerMessage))
  }

  private scheduleUsers(): void {
    if (!this.d.after) return this.flushUsers()
    if (this.usersScheduled) return
    this.usersScheduled = true
    const wait = Math.max(0, this.lastFlush + this.d.windowMs - this.d.now())
    this.d.after(wait, () => {
      this.usersScheduled = false
      this.flushUsers()
    })
  }
}

// Who is online where. Each node owns its local users and learns the others' from snapshots and
// deltas; a remote user counts only while its node is a member. When two nodes admit the same
// name at the same moment, the earlier connection wins (ties go to the smaller node address), and
// every node decides the same way without asking anyone.
//
// Names are compared by `usernameKey` (their look-alike skeleton): "ace" and Cyrillic "асе" are one
// name here, so at most one of them is online. Entries keep the name as its user typed it.
import type { ChatUser } from './messages'
import type { UserEntry } from './protocol'
import { usernameKey } from './username'

export type PresenceChange = { event: 'join' | 'leave'; user: UserEntry }

export class Presence {
  // Every map is keyed by usernameKey(username). A local user's entry is the one `visible` lists
  // while it holds its name: one object per local user, not one here and a copy there.
  private readonly local = new Map<string, UserEntry>()
  private readonly remote = new Map<string, Map<string, ChatUser>>()
  private members = new Set<string>()
  private readonly visible = new Map<string, UserEntry>()

  constructor(private readonly selfAddress: string) {}

  users(): UserEntry[] {
    return [...this.visible.values()]
  }

  /** Who holds this name or a look-alike of it, cluster-wide. */
  owner(username: string): UserEntry | undefined {
    return this.visible.get(usernameKey(username))
  }

  /** The local user holding this name or a look-alike of it. */
  localUser(username: string): ChatUser | undefined {
    return this.local.get(usernameKey(username))
  }

  /** Users online cluster-wide. */
  get count(): number {
    return this.visible.size
  }

  get localCount(): number {
    return this.local.size
  }

  /** As peers are told of them: without this node's address, which they file them under anyway. */
  localUsers(): ChatUser[] {
    return [...this.local.values()].map(({ username, connectedAt }) => ({ username, connectedAt }))
  }

  isLocal(username: string): boolean {
    return this.local.has(usernameKey(username))
  }

  addLocal(user: ChatUser): PresenceChange[] {
    const key = usernameKey(user.username)
    this.local.set(key, { username: user.username, nodeAddress: this.selfAddress, connectedAt: user.connectedAt })
    return this.refresh([key])
  }

  removeLocal(username: string): PresenceChange[] {
    const key = usernameKey(username)
    this.local.delete(key)
    return this.refresh([key])
  }

  replaceRemote(address: string, users: ChatUser[]): PresenceChange[] {
    const old = this.remote.get(address)
    const next = new Map(users.map((u) => [usernameKey(u.username), u]))
    this.remote.set(address, next)
    return this.refresh([...(old?.keys() ?? []), ...next.keys()])
  }

  addRemote(address: string, user: ChatUser): PresenceChange[] {
    let users = this.remote.get(address)
    if (!users) this.remote.set(address, (users = new Map()))
    const key = usernameKey(user.username)
    users.set(key, user)
    return this.refresh([key])
  }

  /** A peer's batch of its own users' changes: leaves first, then joins, told as one set of changes. */
  updateRemote(address: string, joins: ChatUser[], leaves: string[]): PresenceChange[] {
    let users = this.remote.get(address)
    if (!users) this.remote.set(address, (users = new Map()))
    const keys: string[] = []
    for (const username of leaves) {
      const key = usernameKey(username)
      users.delete(key)
      keys.push(key)
    }
    for (const user of joins) {
      const key = usernameKey(user.username)
      users.set(key, user)
      keys.push(key)
    }
    return this.refresh(keys)
  }

  removeRemote(address: string, username: string): PresenceChange[] {
    const key = usernameKey(username)
    this.remote.get(address)?.delete(key)
    return this.refresh([key])
  }

  setMembers(addresses: Iterable<string>): PresenceChange[] {
    this.members = new Set(addresses)
    const names = new Set(this.visible.keys())
    for (const users of this.remote.values()) for (const name of users.keys()) names.add(name)
    return this.refresh(names)
  }

  /** Recomputes who holds each name (by key); the changes are what users should be told. */
  private refresh(keys: Iterable<string>): PresenceChange[] {
    const changes: PresenceChange[] = []
    for (const key of new Set(keys)) {
      const before = this.visible.get(key)
      const winner = this.winner(key)
      // The same entry keeps its object: one per listed user, which presence-batch.ts tells apart by identity.
      const same = before && winner && winner.nodeAddress === before.nodeAddress && winner.username === before.username && winner.connectedAt === before.connectedAt
      const after = same ? before : winner
      if (after) this.visible.set(key, after)
      else this.visible.delete(key)
      const moved = before && after && (after.nodeAddress !== before.nodeAddress || after.username !== before.username)
      if (before && (!after || moved)) changes.push({ event: 'leave', user: before })
      if (after && (!before || moved)) changes.push({ event: 'join', user: after })
    }
    return changes
  }

  private winner(key: string): UserEntry | undefined {
    let best = this.local.get(key)
    for (const [address, users] of this.remote) {
      if (!this.members.has(address) || address === this.selfAddress) continue
      const user = users.get(key)
      if (user && (!best || user.connectedAt < best.connectedAt || (user.connectedAt === best.connectedAt && address < best.nodeAddress))) {
        best = { username: user.username, nodeAddress: address, connectedAt: user.connectedAt }
      }
    }
    return best
  }
}

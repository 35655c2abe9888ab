// Who is online where. Each node owns its local users and learns the others' from snapshots and
// deltas; a remote user counts only while its node is a member. When two nodes admit the same
// name at the same moment, the earlier connection wins (ties go to the smaller node address), and
// every node decides the same way without asking anyone.
import type { ChatUser } from './messages'
import type { UserEntry } from './protocol'

export type PresenceChange = { event: 'join' | 'leave'; user: UserEntry }

export class Presence {
  private readonly local = new Map<string, ChatUser>()
  private readonly remote = new Map<string, Map<string, ChatUser>>()
  private members = new Set<string>()
  private readonly visible = new Map<string, UserEntry>()

  constructor(private readonly selfAddress: string) {}

  users(): UserEntry[] {
    return [...this.visible.values()]
  }

  owner(username: string): UserEntry | undefined {
    return this.visible.get(username)
  }

  get localCount(): number {
    return this.local.size
  }

  localUsers(): ChatUser[] {
    return [...this.local.values()]
  }

  isLocal(username: string): boolean {
    return this.local.has(username)
  }

  addLocal(user: ChatUser): PresenceChange[] {
    this.local.set(user.username, user)
    return this.refresh([user.username])
  }

  removeLocal(username: string): PresenceChange[] {
    this.local.delete(username)
    return this.refresh([username])
  }

  replaceRemote(address: string, users: ChatUser[]): PresenceChange[] {
    const old = this.remote.get(address)
    this.remote.set(address, new Map(users.map((u) => [u.username, u])))
    return this.refresh([...(old?.keys() ?? []), ...users.map((u) => u.username)])
  }

  addRemote(address: string, user: ChatUser): PresenceChange[] {
    let users = this.remote.get(address)
    if (!users) this.remote.set(address, (users = new Map()))
    users.set(user.username, user)
    return this.refresh([user.username])
  }

  removeRemote(address: string, username: string): PresenceChange[] {
    this.remote.get(address)?.delete(username)
    return this.refresh([username])
  }

  setMembers(addresses: Iterable<string>): PresenceChange[] {
    this.members = new Set(addresses)
    const names = new Set(this.visible.keys())
    for (const users of this.remote.values()) for (const name of users.keys()) names.add(name)
    return this.refresh(names)
  }

  /** Recomputes who holds each name; the changes are what users should be told. */
  private refresh(usernames: Iterable<string>): PresenceChange[] {
    const changes: PresenceChange[] = []
    for (const username of new Set(usernames)) {
      const before = this.visible.get(username)
      const after = this.winner(username)
      if (after) this.visible.set(username, after)
      else this.visible.delete(username)
      if (before && (!after || after.nodeAddress !== before.nodeAddress)) changes.push({ event: 'leave', user: before })
      if (after && (!before || after.nodeAddress !== before.nodeAddress)) changes.push({ event: 'join', user: after })
    }
    return changes
  }

  private winner(username: string): UserEntry | undefined {
    let best: UserEntry | undefined
    const consider = (nodeAddress: string, user: ChatUser | undefined) => {
      if (!user) return
      const candidate = { username, nodeAddress, connectedAt: user.connectedAt }
      if (!best || candidate.connectedAt < best.connectedAt || (candidate.connectedAt === best.connectedAt && nodeAddress < best.nodeAddress)) {
        best = candidate
      }
    }
    consider(this.selfAddress, this.local.get(username))
    for (const [address, users] of this.remote) if (this.members.has(address) && address !== this.selfAddress) consider(address, users.get(username))
    return best
  }
}

// The chat room of one node: local users come and go through the WebSocket layer, remote
// chat and presence arrive from the cluster, and everything local users must see goes out
// through one `publish` of pre-encoded JSON (one encoding per node, not per user).
import type { Lang } from '../config'
import type { Peer } from '../cluster/transport'
import { err, ok, type Result } from '../result'
import type { ChatMessage, ChatRelay, ChatUser } from './messages'
import { checkPeerMessage } from './peer-rules'
import { FanoutBudget } from './fanout-budget'
import { Presence, type PresenceChange } from './presence'
import { PEER_FRAME_USERS_MAX, PresenceBatch } from './presence-batch'
import { CloseCode, hasForbiddenControl, systemMessage, type ServerMessage, type UserEntry } from './protocol'

const SNAPSHOT_CHUNK = PEER_FRAME_USERS_MAX
/** How long presence changes are gathered into one frame during a storm (presence-batch.ts). */
const PRESENCE_WINDOW_MS = 50

export interface RoomDeps {
  selfAddress: string
  lang: Lang
  maxMessageLength: number
  now: () => number
  /** Sends one encoded frame to every local user. */
  publish: (json: string) => void
  /** Sends to every other member once (the node holds it while it does not know them yet). */
  broadcast: (message: ChatMessage) => void
  /** Sends to one node. */
  sendTo: (address: string, message: ChatMessage) => void
  /** Disconnects a local user (used when a name turns out to be taken elsewhere). */
  disconnect: (username: string, code: number, reason: string) => void
  /** Chat deliveries to local users a second this node takes on (fanout-budget.ts); 0 or absent: no limit. */
  fanoutPerSecond?: number
  /** Runs `fn` once after `ms`: presence changes are coalesced with it; absent, each is told at once. */
  after?: (ms: number, fn: () => void) => unknown
}

export type SayError = { code: 'message_too_long' | 'bad_message' | 'overloaded'; message: string }
/** `delivered: false` for a blank message, which is ignored. */
export type SayResult = Result<{ delivered: boolean }, SayError>

export class ChatRoom {
  /** Counters for /metrics: chat said by local users, and chat handed to local users (one per user). */
  readonly stats = { chatFromUsers: 0, chatFromPeers: 0, chatDelivered: 0 }
  private readonly presence: Presence
  private members = new Set<string>()
  private readonly budget: FanoutBudget
  private readonly batch: PresenceBatch

  constructor(private readonly d: RoomDeps) {
    this.presence = new Presence(d.selfAddress)
    this.budget = new FanoutBudget(d.fanoutPerSecond ?? 0, d.now())
    const broadcast = (b: { joins: ChatUser[]; leaves: string[] }) => d.broadcast({ type: 'presence_batch', ...b })
    this.batch = new PresenceBatch({ windowMs: PRESENCE_WINDOW_MS, now: d.now, after: d.after, publish: d.publish, broadcast })
  }

  /** Tells pending presence changes now, to peers and local users (a drain). */
  flushPresence(): void {
    this.batch.flush()
  }

  users(): UserEntry[] {
    return this.presence.users()
  }

  /** The encoded `users` frame a new socket starts from; joins still waiting for their presence frame come in that frame. */
  usersJson(): string {
    return this.batch.usersFrame(() => this.users())
  }

  /** Whether nobody in the cluster (as far as this node knows) holds the name or a look-alike of it. */
  available(username: string): boolean {
    return !this.presence.owner(username) && !this.presence.isLocal(username)
  }

  /** Admits a local user whose name was found `available`. */
  join(username: string): void {
    const user = { username, connectedAt: this.d.now() }
    this.apply(this.presence.addLocal(user))
    this.batch.local(username, user)
  }

  leave(username: string): void {
    // Exactly this name: a look-alike of it is another user (who may hold the key by now).
    if (this.presence.localUser(username)?.username !== username) return
    this.apply(this.presence.removeLocal(username))
    this.batch.local(username, null)
  }

  say(username: string, text: string): SayResult {
    if (text.trim() === '') return ok({ delivered: false })
    if (hasForbiddenControl(text)) return err({ code: 'bad_message', message: 'messages may not contain control characters other than newline and tab' })
    if (text.length > this.d.maxMessageLength && [...text].length > this.d.maxMessageLength) {
      return err({ code: 'message_too_long', message: `messages are limited to ${this.d.maxMessageLength} characters` })
    }
    if (!this.budget.take(this.presence.localCount, this.d.now())) {
      return err({ code: 'overloaded', message: 'this node is delivering all it can; this message was not delivered, send it again shortly' })
    }
    const chat: ChatRelay = { type: 'chat', username, message: text, nodeAddress: this.d.selfAddress, timestamp: this.d.now() }
    this.stats.chatFromUsers++
    this.publishChat(chat)
    this.d.broadcast(chat)
    return ok({ delivered: true })
  }

  /**
   * A message from a peer node. Presence is filed under the peer's own address, so a peer cannot
   * speak for another node's users; the rest is checked by peer-rules.ts. A refusal is returned
   * for the shell to close that peer's connection.
   */
  onPeerMessage(peer: Peer, m: ChatMessage): Result<void> {
    const checked = checkPeerMessage(peer, m, this.d.maxMessageLength)
    if (!checked.ok) return checked
    this.deliver(peer, m)
    return ok(undefined)
  }

  private deliver(peer: Peer, m: ChatMessage): void {
    switch (m.type) {
      case 'chat': {
        // Only the documented fields: a peer's extra fields (a msgpack uint64 decodes as a BigInt,
        // which JSON.stringify throws on) must neither break the relay nor reach browsers.
        const { username, message, nodeAddress, timestamp } = m
        this.stats.chatFromPeers++
        this.budget.spend(this.presence.localCount, this.d.now())
        return this.publishChat({ type: 'chat', username, message, nodeAddress, timestamp })
      }
      case 'presence_snapshot':
        return this.apply(this.presence.replaceRemote(peer.address, m.users))
      case 'presence_join':
        return this.apply(this.presence.addRemote(peer.address, m.user))
      case 'presence_leave':
        return this.apply(this.presence.removeRemote(peer.address, m.username))
      case 'presence_batch':
        return this.apply(this.presence.updateRemote(peer.address, m.joins, m.leaves))
    }
  }

  private publishChat(chat: ChatRelay): void {
    this.stats.chatDelivered += this.presence.localCount
    this.d.publish(JSON.stringify(chat))
  }

  /** A fresh connection (or a new member) gets the whole picture of our users first. */
  sendSnapshot(address: string): void {
    // Big rooms go in pieces so no frame nears the transport's frame size limit.
    const users = this.presence.localUsers()
    this.d.sendTo(address, { type: 'presence_snapshot', users: users.slice(0, SNAPSHOT_CHUNK) })
    for (let i = SNAPSHOT_CHUNK; i < users.length; i += SNAPSHOT_CHUNK) this.d.sendTo(address, { type: 'presence_batch', joins: users.slice(i, i + SNAPSHOT_CHUNK), leaves: [] })
  }

  /**
   * The other members changed. New ones get our snapshot; when this node itself just became Up
   * (`selfUp`: a first join or a rejoin, and peers may have missed our presence changes while we
   * were not a member) every member does.
   */
  setMembers(addresses: string[], selfUp = false): void {
    const next = new Set(addresses.filter((a) => a !== this.d.selfAddress))
    const snapshotTo = [...next].filter((a) => selfUp || !this.members.has(a))
    this.members = next
    this.apply(this.presence.setMembers(next))
    for (const address of snapshotTo) this.sendSnapshot(address)
  }

  /** Settles names that another node's user holds, then tells local users what changed. */
  private apply(changes: PresenceChange[]): void {
    this.giveWay(changes)
    this.announce(changes)
  }

  /** A name we admitted locally is held by an earlier user elsewhere: ours gives way. */
  private giveWay(changes: PresenceChange[]): void {
    for (const { event, user } of changes) {
      if (event !== 'join' || user.nodeAddress === this.d.selfAddress) continue
      // Ours may be a look-alike of theirs (same key, other spelling): close ours by its own name.
      const mine = this.presence.localUser(user.username)
      if (!mine) continue
      this.d.disconnect(mine.username, CloseCode.usernameTaken, 'username taken')
      this.presence.removeLocal(mine.username)
      this.batch.local(mine.username, null)
    }
  }

  private announce(changes: PresenceChange[]): void {
    for (const { event, user } of changes) {
      // Clients keep their user list from these deltas, gathered into one frame per short window
      // (presence-batch.ts), never the whole list (that would make N joins cost N² bytes).
      this.batch.announce({ event, user })
      const moved = changes.filter((c) => c.user.username === user.username).length > 1
      if (moved) continue // the name passed from one node to another: it stayed online
      this.d.publish(JSON.stringify(systemMessage(this.d.lang, event, user.username, this.d.now())))
    }
  }
}

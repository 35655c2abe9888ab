// The chat room of one node: local users come and go through the WebSocket layer, presence
// arrives from the cluster, and chat goes through the transcript (src/transcript/): this node
// proposes its users' lines, and delivers every line the transcript applies, in transcript order,
// to its local users through one `publish` of pre-encoded JSON (one encoding per node, not per user).
import type { Lang } from '../config'
import type { Peer } from '../cluster/transport'
import { err, ok, type Result } from '../result'
import type { Line, TranscriptEntry } from '../transcript/entries'
import type { Draft, Outbox } from '../transcript/outbox'
import type { Transcript } from '../transcript/transcript'
import { PresenceLines, type Gathered, type PresenceEvent } from '../transcript/presence-lines'
import type { ChatMessage, ChatUser } from './messages'
import { checkPeerMessage, checkProposal } from './peer-rules'
import { FanoutBudget, messageCost } from './fanout-budget'
import { Presence, type PresenceChange } from './presence'
import { PEER_FRAME_USERS_MAX, PresenceBatch } from './presence-batch'
import { CloseCode, hasForbiddenControl, lineFrame, type ChatLine, type HistoryFrame, type ServerMessage, type SystemMessage, type UserEntry } from './protocol'
import type { ClientSocket } from './sockets'

const SNAPSHOT_CHUNK = PEER_FRAME_USERS_MAX
/** How long presence changes are gathered into one frame during a storm (presence-batch.ts). */
const PRESENCE_WINDOW_MS = 50
/** Most lines a page of /api/messages holds. */
export const PAGE_MAX = 500
/** How long a resume from a line this node has not applied yet may wait for it. */
const RESUME_WAIT_MS = 10_000
/**
 * When this node's users say more than the cluster applies, its lines queue in front of everyone's
 * (there is one log). Its users' new lines are refused as `overloaded`, while the log takes its
 * proposals (a leader is known and this incarnation is a member), once LINES_AHEAD of them wait and the oldest was proposed more than LINE_WAIT_MS ago,
 * or LINES_AHEAD_MAX wait. One flooding client (no rate limit) otherwise kept 10,000 in flight,
 * and every user in the cluster saw lines 1.2-3.4 s late; with the wait alone, bursts taken in one
 * turn still cost other nodes' users a p99 of 150 ms (32-39 ms with the cap). Bursts under the cap
 * that a working cluster takes within the wait (users moving together send what they held) and
 * what was held through a partition (it waits from its proposal after the heal, or after the
 * node's rejoin as a new incarnation is committed) are not refused: a bare count of 32 refused
 * both, and a node rejoining after an 8 s isolation refused its user's lines for a second.
 */
export const LINES_AHEAD = 64
export const LINE_WAIT_MS = 50
export const LINES_AHEAD_MAX = 128

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
  /** The part of that budget the node can serve now (LagMonitor.fanoutShare); absent: all of it. */
  fanoutShare?: () => number
  /** Sends one encoded frame to one local user (acks). */
  sendToUser: (username: string, json: string) => void
  transcript: Transcript
  outbox: Outbox
  /** Proposes entries to the replicated log (ClusterNode.propose), at the end of this turn; the outbox keeps them until applied. */
  propose: (entries: TranscriptEntry[]) => void
  /** This node's incarnation id (the origin of its entries) and the leader it knows. */
  selfId: () => string
  leaderId: () => string | null
  /** Whether what this node proposes now goes into the log: a leader is known and this incarnation is a member (not while it rejoins). */
  takesProposals: () => boolean
  /** Lines a new connection gets in its history frame; 0: none (a resume still replays). */
  historyOnJoin: number
  /** Runs `fn` once after `ms`: presence changes are coalesced with it; absent, each is told at once. */
  after?: (ms: number, fn: () => void) => unknown
  /** Users in the cluster from which joins and leaves are gathered into shared lines (default SMALL_ROOM). */
  gatherFrom?: number
}

/** Where a connection resumes: after line `since` of transcript `epoch` (both from an earlier history or line). */
export interface Resume {
  since?: number
  epoch?: string
}

export type SayError = { code: 'message_too_long' | 'bad_message' | 'overloaded' | 'unavailable'; message: string }
/** `delivered: false` for a blank message, which is ignored. */
export type SayResult = Result<{ delivered: boolean }, SayError>

export class ChatRoom {
  /** Counters for /metrics: chat said by local users, and chat handed to local users (one per user). */
  readonly stats = { chatFromUsers: 0, chatFromPeers: 0, chatDelivered: 0 }
  private readonly presence: Presence
  private members = new Set<string>()
  private readonly budget: FanoutBudget
  /** The transcript delivered to local users: everything up to `cursor` of `epoch`. */
  private epoch = ''
  private cursor = 0
  private lastLeader: string | null = null
  /** Connections resuming from a line this node has not applied yet: admitted once it has (or at `until`). */
  private waiting: Array<{ socket: ClientSocket; since: number; epoch: string | undefined; until: number; fresh?: boolean }> = []
  /** Makes keys for lines without a clientMsgId, unique within this process. */
  private made = 0
  private readonly batch: PresenceBatch
  /** Lines' encoded frames, while the transcript holds the lines. */
  private readonly encoded = new WeakMap<Line, string>()
  /** The encoded recent history, and the state of the transcript it was encoded at. */
  private history: { key: string; json: string | null } | undefined
  /** This node's joins and leaves on their way to the transcript, gathered in a big room. */
  private readonly lines: PresenceLines
  private linesTimer = false

  constructor(private readonly d: RoomDeps) {
    this.presence = new Presence(d.selfAddress)
    this.lines = new PresenceLines(d.gatherFrom)
    this.budget = new FanoutBudget(d.fanoutPerSecond ?? 0, d.now())
    const broadcast = (b: { joins: ChatUser[]; leaves: string[] }) => d.broadcast({ type: 'presence_batch', ...b })
    this.batch = new PresenceBatch({ windowMs: PRESENCE_WINDOW_MS, now: d.now, after: d.after, publish: d.publish, broadcast })
  }

  /** Tells pending presence changes now, to peers and local users, and proposes the joins and leaves held (a drain). */
  flushPresence(): void {
    this.batch.flush()
    this.flushLines()
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
    this.gather('join', username)
  }

  leave(username: string): void {
    // Exactly this name: a look-alike of it is another user (who may hold the key by now).
    if (this.presence.localUser(username)?.username !== username) return
    this.apply(this.presence.removeLocal(username))
    this.batch.local(username, null)
    this.proposeLeave(username)
  }

  /**
   * Sends a new connection its history (after `welcome` and `users`), then subscribes it to
   * live lines: with nothing between them missing or repeated. A resume from a line this node
   * has not applied yet waits until it has.
   */
  admit(socket: ClientSocket, resume: Resume): void {
    const since = resume.since
    // A node that has not learnt the transcript yet (just started) cannot tell another epoch from its own: it waits.
    const sameEpoch = resume.epoch === undefined || resume.epoch === this.epoch || this.epoch === ''
    if (since !== undefined && sameEpoch && !this.reached(since)) {
      this.waiting.push({ socket, since, epoch: resume.epoch, until: this.d.now() + RESUME_WAIT_MS })
      return
    }
    // While the transcript is rebuilt after a rejoin it holds nothing yet: the recent history waits for it too.
    if (since === undefined && this.epoch !== '' && !this.reached(this.cursor)) {
      this.waiting.push({ socket, since: this.cursor, epoch: undefined, until: this.d.now() + RESUME_WAIT_MS, fresh: true })
      return
    }
    if (since === undefined) {
      const json = this.recentHistoryJson()
      if (json) socket.send(json)
    } else {
      socket.send(this.historyJson(sameEpoch ? this.historyAfter(since) : { ...(this.recentHistory() ?? NO_LINES), complete: false }))
    }
    socket.subscribe()
  }

  /** A connection closed: it waits for nothing any more. */
  forget(socket: ClientSocket): void {
    if (this.waiting.length > 0) this.waiting = this.waiting.filter((w) => w.socket !== socket)
  }

  /** Lines before `before` (all when absent), oldest first, at most `limit`: /api/messages. */
  page(before: number | undefined, limit: number): HistoryFrame {
    const t = this.d.transcript
    const lines = before === undefined ? t.latest(limit) : t.before(before, limit)
    return { type: 'history', epoch: this.epoch, messages: lines.map((l) => this.frameOf(l)), complete: lines.length === limit || t.covers(0) }
  }

  /** Entries proposed and not yet in the transcript (for /metrics). */
  get pending(): number {
    return this.d.outbox.size
  }

  /** The newest line held, and how many are (for /metrics). */
  get lastId(): number {
    return this.d.transcript.lastId
  }

  get linesHeld(): number {
    return this.d.transcript.size
  }

  /** `light`: the user had said nothing for a while; it may borrow from the fan-out budget (FanoutBudget.take). */
  say(username: string, text: string, clientMsgId?: string, light = false): SayResult {
    if (text.trim() === '') return ok({ delivered: false })
    if (hasForbiddenControl(text)) return err({ code: 'bad_message', message: 'messages may not contain control characters other than newline and tab' })
    if (text.length > this.d.maxMessageLength && [...text].length > this.d.maxMessageLength) {
      return err({ code: 'message_too_long', message: `messages are limited to ${this.d.maxMessageLength} characters` })
    }
    // The line window first: a line it refuses must not use the budget up.
    const outbox = this.d.outbox
    if (outbox.size >= LINES_AHEAD && (outbox.size >= LINES_AHEAD_MAX || outbox.oldestWait(this.d.now()) > LINE_WAIT_MS) && this.d.takesProposals()) {
      return err({ code: 'overloaded', message: 'the cluster is carrying all it can from this node; this message was not delivered, send it again shortly' })
    }
    if (!this.budget.take(messageCost(this.presence.localCount, this.members.size), this.d.now(), this.d.fanoutShare?.(), light)) {
      return err({ code: 'overloaded', message: 'this node is delivering all it can; this message was not delivered, send it again shortly' })
    }
    // Joins and leaves held so far come first: a user's join is never told after its first line.
    this.flushLines()
    const key = clientMsgId === undefined ? this.madeKey() : clientKey(username, clientMsgId)
    const proposed = this.propose({ type: 'chat', key, username, message: text, nodeAddress: this.d.selfAddress, timestamp: this.d.now() })
    if (!proposed) return err({ code: 'unavailable', message: 'this node cannot reach the cluster and holds too many unsent messages; this one was not taken, send it again later' })
    this.stats.chatFromUsers++
    return ok({ delivered: true })
  }

  /**
   * After every cluster step: acknowledges what the transcript took of ours, delivers new lines
   * to local users, and proposes again what is still pending when the leader changed or nothing
   * moved for a while.
   */
  sync(): void {
    this.d.outbox.setOrigin(this.d.selfId())
    this.settle()
    this.deliver()
    this.proposeLinesDue()
    // The leader that takes our proposals: a rejoining incarnation knows one before it is a member
    // again, and what it proposes meanwhile is dropped, so all it holds goes again once it is.
    const leader = this.d.takesProposals() ? this.d.leaderId() : null
    const due = this.d.outbox.due(this.d.now(), leader !== this.lastLeader)
    this.lastLeader = leader
    // Proposed at the end of the turn (RoomDeps.propose), so this never runs inside itself.
    if (due.length > 0 && leader !== null) this.d.propose(due)
  }

  /**
   * A peer proposes transcript entries: it speaks only for itself (its own node id as origin, its
   * own address on every line) and every field meets the rule it meets from a browser.
   */
  checkProposal(peer: Peer, from: string, entries: unknown[]): Result<void> {
    const checked = checkProposal(peer, from, entries as TranscriptEntry[], this.d.maxMessageLength)
    return checked.ok ? ok(undefined) : checked
  }

  private propose(draft: Draft): boolean {
    const entry = this.d.outbox.add(draft, this.d.now())
    if (!entry) return false
    this.d.propose([entry])
    return true
  }

  private proposeLeave(username: string): void {
    this.gather('leave', username)
  }

  /** A user of ours joined or left: its line goes now or with others (presence-lines.ts). */
  private gather(type: PresenceEvent, username: string): void {
    for (const g of this.lines.add(type, username, this.d.now(), this.presence.count, this.d.outbox.presenceInFlight)) this.proposeGathered(g)
    this.proposeLinesDue()
  }

  /** Proposes what is held once it may go; while only the spacing holds it back, a timer comes back for it. */
  private proposeLinesDue(): void {
    const wait = this.lines.due(this.d.now(), this.presence.count, this.d.outbox.presenceInFlight)
    if (wait === 0 || (wait !== null && !this.d.after)) return this.flushLines()
    if (wait === null || this.linesTimer) return
    this.linesTimer = true
    this.d.after!(wait, () => {
      this.linesTimer = false
      this.proposeLinesDue()
    })
  }

  private flushLines(): void {
    const g = this.lines.flush(this.d.now())
    if (g) this.proposeGathered(g)
  }

  private proposeGathered(g: Gathered): void {
    // Refused only when the outbox is full: the node cannot reach the cluster, and presence is told by presence frames meanwhile.
    this.propose({ type: g.type, key: this.madeKey(), usernames: g.usernames, nodeAddress: this.d.selfAddress, timestamp: g.timestamp })
  }

  private madeKey(): string {
    return `n:${this.d.selfId()}:${++this.made}`
  }

  /** Our entries the transcript took: users who sent a clientMsgId get their ack. */
  private settle(): void {
    const t = this.d.transcript
    const now = this.d.now()
    if (t.restored) {
      t.restored = false
      for (const { entry, id } of this.d.outbox.settleUpTo(t.nextSeqOf(this.d.selfId()), (key) => t.idOfKey(key), now)) if (id !== undefined) this.ack(entry, id)
    }
    for (const { entry, id } of this.d.outbox.settle(t.takeAccepted(), now)) this.ack(entry, id)
  }

  private ack(entry: TranscriptEntry, id: number): void {
    if (entry.type !== 'chat' || !entry.key.startsWith('c:')) return
    const clientMsgId = entry.key.slice(entry.username.length + 3)
    this.d.sendToUser(entry.username, JSON.stringify({ type: 'ack', clientMsgId, id } satisfies ServerMessage))
  }

  /** Publishes every line applied since the last call, in order; then admits resumes that were waiting for them. */
  private deliver(): void {
    const t = this.d.transcript
    if (t.epoch === '') return this.admitWaiting() // a new log that has not reached its first entry (or a snapshot) yet
    if (t.epoch !== this.epoch) {
      // The first transcript this process sees, or a cluster founded anew: ids start over.
      const first = this.epoch === ''
      this.epoch = t.epoch
      this.cursor = first && this.presence.localCount === 0 ? t.lastId : 0
    }
    // Connections waiting for this point are admitted before the new lines go out: they get them
    // live (admitted after, a fresh one with no history on join would miss them).
    this.admitWaiting()
    if (t.lastId > this.cursor) {
      if (this.presence.localCount === 0) this.cursor = t.lastId
      else {
        if (!t.covers(this.cursor)) this.d.publish(this.historyJson(NO_LINES))
        for (const line of t.after(this.cursor)) this.publishLine(line)
      }
    }
    t.deliveredUpTo(this.cursor)
    this.admitWaiting()
  }

  /**
   * Whether line `since` was delivered here and the transcript holds what follows it (after a
   * rejoin the transcript is rebuilt from the log while the delivery cursor stays where it was).
   */
  private reached(since: number): boolean {
    const t = this.d.transcript
    return this.epoch !== '' && t.epoch === this.epoch && since <= this.cursor && since <= t.applied
  }

  /** Resumes waiting for lines this node now has, or that waited too long. */
  private admitWaiting(): void {
    if (this.waiting.length > 0) {
      const now = this.d.now()
      const ours = (w: { epoch: string | undefined }) => w.epoch === undefined || w.epoch === this.epoch
      const ready = this.waiting.filter((w) => this.reached(w.since) || (this.epoch !== '' && !ours(w)) || w.until <= now)
      if (ready.length === 0) return
      this.waiting = this.waiting.filter((w) => !ready.includes(w))
      for (const w of ready) {
        const { socket, since } = w
        // Not subscribed while it waited: the user list may have changed meanwhile. A line this
        // node never reached (a made-up id, a node cut off for long) ends the wait all the same.
        socket.send(this.usersJson())
        const history = !this.reached(since) || !ours(w) ? { ...(this.recentHistory() ?? NO_LINES), complete: false } : w.fresh ? this.recentHistory() : this.historyAfter(since)
        if (history) socket.send(this.historyJson(history))
        socket.subscribe()
      }
    }
  }

  private publishLine(line: Line): void {
    this.cursor = line.id
    if (line.type === 'chat') {
      if (line.nodeAddress !== this.d.selfAddress) {
        this.stats.chatFromPeers++
        this.budget.spend(this.presence.localCount, this.d.now(), this.d.fanoutShare?.())
      }
      this.stats.chatDelivered += this.presence.localCount
    }
    this.d.publish(this.lineJson(line))
  }

  /**
   * The recent history a fresh connection gets, encoded once for every connection that joins
   * before the transcript moves: it was most of a join's cost (5 ms of 7 on a loaded machine, 50
   * lines encoded per socket), and a storm of joins paid it for each.
   */
  private recentHistoryJson(): string | null {
    const t = this.d.transcript
    const key = `${this.epoch}|${this.cursor}|${t.lastId}|${t.size}`
    if (this.history?.key !== key) {
      const history = this.recentHistory()
      this.history = { key, json: history && this.historyJson(history) }
    }
    return this.history.json
  }

  private recentHistory(): History | null {
    const n = this.d.historyOnJoin
    if (n === 0) return null
    // Up to the cursor: lines applied and not yet delivered reach this socket live, once it subscribes.
    const lines = this.d.transcript.before(this.cursor + 1, n)
    return { lines, complete: lines.length === n || this.d.transcript.covers(0) }
  }

  private historyAfter(since: number): History {
    const t = this.d.transcript
    const lines = t.after(since)
    // Lines past the cursor are not delivered yet; they arrive live.
    const upTo = lines.findIndex((l) => l.id > this.cursor)
    const replay = upTo < 0 ? lines : lines.slice(0, upTo)
    return { lines: replay, complete: t.covers(since) }
  }

  /** The `history` frame (HistoryFrame), from the lines' own encodings: every joiner gets the same recent lines. */
  private historyJson(h: History): string {
    return `{"type":"history","epoch":${JSON.stringify(this.epoch)},"messages":[${h.lines.map((l) => this.lineJson(l)).join(',')}],"complete":${h.complete}}`
  }

  /** A line's frame, encoded once: published to every local user, then part of the histories new connections get. */
  private lineJson(line: Line): string {
    let json = this.encoded.get(line)
    if (json === undefined) this.encoded.set(line, (json = JSON.stringify(this.frameOf(line))))
    return json
  }

  private frameOf(line: Line): ChatLine | SystemMessage {
    return lineFrame(this.d.lang, line)
  }

  /**
   * A message from a peer node. Presence is filed under the peer's own address, so a peer cannot
   * speak for another node's users; the rest is checked by peer-rules.ts. A refusal is returned
   * for the shell to close that peer's connection.
   */
  onPeerMessage(peer: Peer, m: ChatMessage): Result<void> {
    const checked = checkPeerMessage(m)
    if (!checked.ok) return checked
    this.onPresence(peer, m)
    return ok(undefined)
  }

  private onPresence(peer: Peer, m: ChatMessage): void {
    switch (m.type) {
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
    // Back in after a removal, the transcript had our users leave: they join again. (Users it
    // still holds online at this node are taken as not having moved: no line.)
    if (selfUp) for (const user of this.presence.localUsers()) this.gather('join', user.username)
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
      this.proposeLeave(mine.username)
    }
  }

  /** Presence only: the join and leave lines users read are the transcript's (see sync). */
  private announce(changes: PresenceChange[]): void {
    for (const { event, user } of changes) {
      // Clients keep their user list from these deltas, gathered into one frame per short window
      // (presence-batch.ts), never the whole list (that would make N joins cost N² bytes).
      this.batch.announce({ event, user })
    }
  }
}

/** Lines of a history frame, and whether nothing before them is missing. */
interface History {
  lines: Line[]
  complete: boolean
}
const NO_LINES: History = { lines: [], complete: false }

/** A user's clientMsgId as a transcript key: scoped to the user, so two users' ids never collide. */
function clientKey(username: string, clientMsgId: string): string {
  return `c:${username}:${clientMsgId}`
}

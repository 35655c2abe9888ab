// The chat transcript as a replicated state machine: every node applies the same committed log
// entries in the same order, so every node holds the same lines with the same ids (a line's id
// is its log index). Pure and deterministic: no clock, no randomness, nothing but what the log
// says; timestamps come from the proposing node, inside the entries.
//
// Rules every node applies identically:
//   - one origin's entries are taken in sequence (`seq` = the next expected), each once; an entry
//     that skips ahead is ignored (its origin proposes again from the first one not applied), so
//     a retry never overtakes an earlier message of the same node;
//   - an entry whose key was applied within the last DEDUP_WINDOW keys is a repeat: it gets the
//     id the first one got, and no new line (a user's clientMsgId sent again, to any node);
//   - a name is online at a set of nodes: a join tells of a name only when the set was empty (a
//     user moving between nodes joins the next node before it leaves the last one; a name
//     admitted on two nodes at once is closed on one, see presence.ts), a leave only when it
//     empties the set; one entry (one or many names of one node) makes at most one line, with
//     the names it tells of; when a node is removed from the cluster, its users online nowhere
//     else leave in one line, their names sorted (the same on every node, restored or not).
import type { Entry } from '../cluster/messages'
import type { StateMachine } from '../cluster/membership'
import { addressOf, nodeId } from '../cluster/address'
import type { Line, TranscriptEntry, TranscriptSnapshot } from './entries'

/** How many recent keys every node remembers: part of the replicated state, the same everywhere. */
export const DEDUP_WINDOW = 10_000
/** What a snapshot may weigh (it travels in one cluster frame of at most 1 MiB). */
const SNAPSHOT_BYTES = 700 * 1024

/** An entry of some origin got its place (or was found to be a repeat of `id`). */
export interface Accepted {
  origin: string
  seq: number
  key: string
  id: number
}

export class Transcript implements StateMachine {
  /** Names this transcript: the founding member's id. A cluster started anew has another, and old ids mean nothing in it. */
  epoch = ''
  /** The last log index applied. */
  applied = 0
  /** Every line with an id from here on is held (older ones were dropped or never received). */
  coveredFrom = 1
  /** Set when a snapshot replaced the state; whoever delivers lines clears it once caught up. */
  restored = false
  /** Entries taken since the last `takeAccepted`: how origins learn their proposals landed. */
  private accepted: Accepted[] = []
  private lines: Line[] = []
  /** Index in `lines` of the oldest line still held. */
  private head = 0
  /** Lines after this id are not delivered yet (see deliveredUpTo); none are held until told. */
  private heldAfter = Infinity
  private keys = new Map<string, number>()
  private next = new Map<string, number>()
  /**
   * Who is online, by name, and the node address it is on: a set only while it is on more than
   * one (moving), since a Set per online user cost more than the rest of its entry.
   */
  private online = new Map<string, string | Set<string>>()
  /** One copy of each node address: every decoded entry brings its own, and each online name keeps one. */
  private addresses = new Map<string, string>()

  constructor(private readonly historySize: number) {}

  apply(index: number, entry: Entry): void {
    this.applied = index
    const change = entry.change
    if (change.type === 'add' && index === 1) this.epoch = nodeId(change.member.address, change.member.incarnation)
    if (change.type === 'remove') this.removeNode(index, change.id)
    if (change.type === 'app') this.take(index, change.data as TranscriptEntry)
  }

  snapshot(): TranscriptSnapshot {
    const online = new Map<string, string[]>()
    for (const [name, nodes] of this.online) {
      for (const node of typeof nodes === 'string' ? [nodes] : nodes) {
        const names = online.get(node)
        if (names) names.push(name)
        else online.set(node, [name])
      }
    }
    let budget = SNAPSHOT_BYTES - this.keys.size * 28 - [...online.values()].reduce((n, names) => n + names.reduce((m, u) => m + utf8Bytes(u) + 3, 0), 0)
    let first = this.lines.length
    while (first > this.head && (budget -= lineBytes(this.lines[first - 1]!)) > 0) first--
    return {
      epoch: this.epoch,
      applied: this.applied,
      coveredFrom: first > this.head ? this.lines[first]?.id ?? this.applied + 1 : this.coveredFrom,
      lines: this.lines.slice(first),
      keys: [...this.keys],
      next: [...this.next],
      online: [...online],
    }
  }

  restore(index: number, snapshot: unknown): void {
    const s = snapshot as TranscriptSnapshot | null
    this.epoch = s?.epoch ?? ''
    this.applied = index
    this.restored = index > 0
    this.accepted = []
    this.coveredFrom = s?.coveredFrom ?? 1
    const lines = s?.lines ?? []
    let first = Math.max(0, lines.length - this.historySize)
    while (first > 0 && lines[first - 1]!.id > this.heldAfter) first--
    this.lines = lines.slice(first)
    if (first > 0) this.coveredFrom = lines[first]!.id
    this.head = 0
    this.keys = new Map(s?.keys ?? [])
    this.next = new Map(s?.next ?? [])
    this.online = new Map()
    this.addresses = new Map()
    for (const [node, names] of s?.online ?? []) for (const name of names) this.goOnline(name, node)
  }

  takeAccepted(): Accepted[] {
    const out = this.accepted
    this.accepted = []
    return out
  }

  /** The sequence number the transcript expects next from `origin`. */
  nextSeqOf(origin: string): number {
    return this.next.get(origin) ?? 1
  }

  /** The id a key got, while it is within the window. */
  idOfKey(key: string): number | undefined {
    return this.keys.get(keyHash(key))
  }

  /** The id of the newest line held, or 0. */
  get lastId(): number {
    return this.lines.length > this.head ? this.lines[this.lines.length - 1]!.id : 0
  }

  /** Lines held. */
  get size(): number {
    return this.lines.length - this.head
  }

  /** Whether every line after `id` is held. */
  covers(id: number): boolean {
    return id + 1 >= this.coveredFrom
  }

  /** Lines with an id above `id`, oldest first. */
  after(id: number): Line[] {
    return this.lines.slice(this.search(id + 1))
  }

  /** Up to `limit` lines with an id below `id`, oldest first. */
  before(id: number, limit: number): Line[] {
    const end = this.search(id)
    return this.lines.slice(Math.max(this.head, end - limit), end)
  }

  /** The last `limit` lines. */
  latest(limit: number): Line[] {
    return this.lines.slice(Math.max(this.head, this.lines.length - limit))
  }

  /** Index in `lines` of the first held line with an id of at least `id`. */
  private search(id: number): number {
    let lo = this.head
    let hi = this.lines.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.lines[mid]!.id < id) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  private take(id: number, e: TranscriptEntry): void {
    const expected = this.next.get(e.origin) ?? 1
    const hash = keyHash(e.key)
    if (e.seq < expected) {
      // Taken before (a retry that arrived twice): its origin may not have seen the first.
      const first = this.keys.get(hash)
      if (first !== undefined) this.accepted.push({ origin: e.origin, seq: e.seq, key: e.key, id: first })
      return
    }
    if (e.seq > expected) return // an earlier entry of this origin is missing: it proposes again from there
    this.next.set(e.origin, expected + 1)
    const first = this.keys.get(hash)
    if (first !== undefined) {
      this.accepted.push({ origin: e.origin, seq: e.seq, key: e.key, id: first })
      return
    }
    this.remember(hash, id)
    this.accepted.push({ origin: e.origin, seq: e.seq, key: e.key, id })
    if (e.type === 'chat') {
      this.push({ type: 'chat', id, username: e.username, message: e.message, nodeAddress: e.nodeAddress, timestamp: e.timestamp })
    } else if (e.type === 'join') {
      const joined = e.usernames.filter((name) => this.goOnline(name, e.nodeAddress))
      if (joined.length > 0) this.push({ type: 'system', id, event: 'join', usernames: joined, timestamp: e.timestamp })
    } else {
      const left = e.usernames.filter((name) => this.goOffline(name, e.nodeAddress))
      if (left.length > 0) this.push({ type: 'system', id, event: 'leave', usernames: left, timestamp: e.timestamp })
    }
  }

  /** `name` is online at `node` too; true when it was online nowhere before. */
  private goOnline(name: string, node: string): boolean {
    let address = this.addresses.get(node)
    if (address === undefined) this.addresses.set(node, (address = node))
    const nodes = this.online.get(name)
    if (nodes === undefined) this.online.set(name, address)
    else if (typeof nodes !== 'string') nodes.add(address)
    else if (nodes !== address) this.online.set(name, new Set([nodes, address]))
    return nodes === undefined
  }

  /** `name` is no longer online at `node`; true when that leaves it online nowhere. */
  private goOffline(name: string, node: string): boolean {
    const nodes = this.online.get(name)
    if (nodes === undefined) return false
    if (typeof nodes === 'string') {
      if (nodes !== node) return false
      this.online.delete(name)
      return true
    }
    if (!nodes.delete(node)) return false
    if (nodes.size === 1) this.online.set(name, nodes.values().next().value!)
    return false
  }

  /** A member is gone: its entries end here, and its users still online leave in one line. */
  private removeNode(id: number, member: string): void {
    this.next.delete(member)
    const address = addressOf(member)
    const gone: string[] = []
    for (const name of [...this.online.keys()]) if (this.goOffline(name, address)) gone.push(name)
    if (gone.length === 0) return
    // In an order every node agrees on: the map's order is the order names came online here, and a
    // transcript restored from a snapshot (who is online, grouped by node) learnt them in another.
    gone.sort()
    // The removal carries no time of its own; the last line's is the closest the log knows.
    const timestamp = this.lines[this.lines.length - 1]?.timestamp ?? 0
    this.push({ type: 'system', id, event: 'leave', usernames: gone, timestamp })
  }

  private remember(hash: string, id: number): void {
    this.keys.set(hash, id)
    if (this.keys.size > DEDUP_WINDOW) this.keys.delete(this.keys.keys().next().value!)
  }

  /**
   * Lines up to `id` reached this node's users; the ring may drop them now. Lines after it are
   * kept past the ring's size until then: one step can apply more lines than the ring holds
   * (a commit that jumps, a snapshot), and users who stayed connected must still get each.
   */
  deliveredUpTo(id: number): void {
    this.heldAfter = id
    this.trim()
  }

  private push(line: Line): void {
    this.lines.push(line)
    this.trim()
  }

  private trim(): void {
    while (this.lines.length - this.head > this.historySize && this.lines[this.head]!.id <= this.heldAfter) {
      this.coveredFrom = this.lines[this.head]!.id + 1
      this.head++
    }
    // Drop the dead prefix now and then, not on every line.
    if (this.head >= 4096 && this.head * 2 >= this.lines.length) {
      this.lines = this.lines.slice(this.head)
      this.head = 0
    }
  }
}

/** A key's 64-bit FNV-1a hash, as 16 hex digits: fixed size in every snapshot, whatever the key. */
export function keyHash(key: string): string {
  let h1 = 0x811c9dc5
  let h2 = 0xcbf29ce4
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0
    h2 = Math.imul(h2 ^ c ^ (h1 >>> 7), 0x01000193) >>> 0
  }
  return h1.toString(16).padStart(8, '0') + h2.toString(16).padStart(8, '0')
}

/** An upper bound of a line's encoded size. */
function lineBytes(line: Line): number {
  if (line.type === 'system') return 48 + line.usernames.reduce((n, u) => n + utf8Bytes(u) + 2, 0)
  return 64 + utf8Bytes(line.username) + utf8Bytes(line.message) + line.nodeAddress.length
}

function utf8Bytes(text: string): number {
  let n = text.length
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) n += 2
  return n
}

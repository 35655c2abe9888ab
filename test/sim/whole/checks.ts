// What the whole-node simulator demands (issue 9's guarantees, and the membership and presence
// ones before them):
//   - membership converged (one leader, one member list of exactly the live incarnations);
//   - one transcript: every line any node ever applied is recorded in a reference the moment it
//     is seen (after every step), and every node's lines, at every step, equal the reference at
//     the same id; at the end every live node holds exactly the reference's lines over the range
//     it covers, and all have applied the same last line;
//   - chat: no message in the transcript twice, none invented; every acked message exactly once,
//     at the acked id (every ack of one clientMsgId names the same id); every message whose
//     sender's connection stayed open to the end exactly once, and acked if it asked; a message
//     after what was sent before it over the same connection (when it was sent over that one
//     alone), and after every message acked before it was sent;
//   - delivery to clients: every connection read the transcript's lines with strictly increasing
//     ids (so none twice, none out of order), each equal to the reference, with no line of the
//     reference skipped between two it read (from where it resumed, or from its first history
//     line) unless a `complete: false` history frame said so, and a `complete: false` said only
//     when the node really lacked lines; a connection open at the end read up to the last line;
//   - presence (optional under the hostile transport): every node's user list and every client's
//     equal the users actually connected, nothing told twice; and the transcript's join and leave
//     lines, folded, leave exactly the connected users online.
import { NAMES_IN_FRAME } from '../../../src/chat/protocol'
import type { ChatRoom } from '../../../src/chat/room'
import type { Membership } from '../../../src/cluster/membership'
import type { Line } from '../../../src/transcript/entries'
import type { Transcript } from '../../../src/transcript/transcript'
import { readFrames, type ClientView, type LineFrame, type SimUser } from './users'

export interface Problem {
  check: string
  detail: string
}

/** One send of a chat message over one connection (a message with a clientMsgId may be sent again after a reconnect). */
export interface Send {
  user: SimUser
  at: number
  /** Position among all opens and sends. */
  order: number
  /** False when the node answered with an error frame (rate limit, overload, ...): not taken. */
  accepted: boolean
}

export interface SentChat {
  text: string
  username: string
  clientMsgId: string | null
  sends: Send[]
}

/** Why the live nodes do not (yet) form one cluster of exactly themselves, all Up; null when they do. */
export function membershipNotConverged(cores: Membership[]): string | null {
  if (cores.length === 0) return 'no live node'
  const leader = cores.find((m) => m.role === 'leader')
  if (!leader) return 'no leader'
  const expected = cores.map((m) => m.selfId).sort().join(' ')
  for (const m of cores) {
    if (m.leaderId !== leader.selfId || m.term !== leader.term) return `${m.selfId} follows ${m.leaderId} in term ${m.term}, not ${leader.selfId} in term ${leader.term}`
    if (m.commitIndex !== leader.commitIndex || m.logStart + m.entries.length !== m.commitIndex) {
      return `${m.selfId} has commit ${m.commitIndex} and log ${m.logStart + m.entries.length}, the leader ${leader.commitIndex}`
    }
    const members = [...m.membersAt(m.commitIndex).keys()].sort().join(' ')
    if (members !== expected) return `${m.selfId} has members [${members}], live are [${expected}]`
    const view = m.view()
    if (view.status !== 'Up') return `${m.selfId} sees itself ${view.status}`
    const notUp = view.members.find((v) => v.status !== 'Up' || !v.reachable)
    if (notUp) return `${m.selfId} sees ${notUp.id} ${notUp.status}${notUp.reachable ? '' : ' and unreachable'}`
  }
  return null
}

/** A line as every node must hold it and every client must read it, as one comparable string. */
function lineKey(line: Line): string {
  return line.type === 'chat'
    ? `chat ${line.username}@${line.nodeAddress} ${JSON.stringify(line.message)} ${line.timestamp}`
    : `system ${line.event} ${line.usernames.slice(0, NAMES_IN_FRAME).join(',')} (${line.usernames.length}) ${line.timestamp}`
}

function frameKey(f: LineFrame): string {
  return f.type === 'chat'
    ? `chat ${f.username}@${f.nodeAddress} ${JSON.stringify(f.message)} ${f.timestamp}`
    : `system ${f.event} ${(f.usernames ?? [f.username]).join(',')} (${f.count ?? 1}) ${f.timestamp}`
}

/**
 * The one transcript: every line any node applied, by id, recorded the moment it is first seen
 * and compared with every later sighting. Its epoch is the founding member's id.
 */
export class Reference {
  epoch = ''
  readonly lines = new Map<number, Line>()
  private readonly keys = new Map<number, string>()
  private sorted: number[] | null = null

  /** Records and compares the lines a node applied after `from`; returns the last id seen, or a problem. */
  observe(node: string, t: Transcript, from: number): number | Problem {
    if (t.epoch !== '') {
      if (this.epoch === '') this.epoch = t.epoch
      else if (t.epoch !== this.epoch) return { check: 'One transcript: one epoch', detail: `${node} holds transcript ${t.epoch}, the cluster's is ${this.epoch}` }
    }
    let last = from
    for (const line of t.after(from)) {
      const problem = this.record(node, line)
      if (problem) return problem
      last = line.id
    }
    return last
  }

  private record(node: string, line: Line): Problem | null {
    const key = lineKey(line)
    const known = this.keys.get(line.id)
    if (known === undefined) {
      this.keys.set(line.id, key)
      this.lines.set(line.id, line)
      this.sorted = null
    } else if (known !== key) {
      return { check: 'One transcript: same line at the same id', detail: `${node} holds [${key}] at id ${line.id}, another node [${known}]` }
    }
    return null
  }

  keyAt(id: number): string | undefined {
    return this.keys.get(id)
  }

  ids(): number[] {
    return (this.sorted ??= [...this.keys.keys()].sort((a, b) => a - b))
  }

  get lastId(): number {
    const ids = this.ids()
    return ids.length > 0 ? ids[ids.length - 1]! : 0
  }

  /** The first id of a line in the reference strictly between `a` and `b`, if any. */
  between(a: number, b: number): number | undefined {
    const ids = this.ids()
    let lo = 0
    let hi = ids.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (ids[mid]! <= a) lo = mid + 1
      else hi = mid
    }
    return lo < ids.length && ids[lo]! < b ? ids[lo] : undefined
  }
}

/** At the end: every live node holds exactly the reference's lines over the range it covers, up to the same last line. */
export function checkTranscripts(nodes: Array<{ name: string; transcript: Transcript }>, ref: Reference): Problem | null {
  const last = ref.lastId
  for (const { name, transcript: t } of nodes) {
    if (t.lastId !== last) return { check: 'One transcript: every node up to the last line', detail: `${name} holds lines up to ${t.lastId}, the transcript reaches ${last}` }
    const held = t.after(Math.max(0, t.coveredFrom - 1))
    let i = 0
    for (const id of ref.ids()) {
      if (id < t.coveredFrom) continue
      const line = held[i++]
      if (!line || line.id !== id) return { check: 'One transcript: no line missing', detail: `${name} covers ids from ${t.coveredFrom} but lacks line ${id} (holds ${line ? line.id : 'nothing'} there)` }
    }
    if (i !== held.length) return { check: 'One transcript: nothing extra', detail: `${name} holds line ${held[i]!.id}, which no reference has` }
  }
  return null
}

export interface ChatCheckOptions {
  /** Whether the connection is open at the end on a node process that lived. */
  connectedAtEnd(user: SimUser): boolean
  /** When (in the order of opens, sends and acks) the sender first got an ack for the message. */
  ackedAt(m: SentChat): number | undefined
}

/** Chat in the transcript and the acks the senders got. */
export function checkChat(sent: SentChat[], users: SimUser[], views: Map<SimUser, ClientView>, ref: Reference, o: ChatCheckOptions): Problem | null {
  const byText = new Map(sent.map((m) => [m.text, m]))
  /** Where each text stands in the transcript. */
  const at = new Map<string, number>()
  for (const id of ref.ids()) {
    const line = ref.lines.get(id)!
    if (line.type !== 'chat') continue
    const m = byText.get(line.message)
    if (!m) return { check: 'Chat: nothing invented', detail: `line ${id} says ${JSON.stringify(line.message)}, which nobody sent` }
    if (m.username !== line.username) return { check: 'Chat: the sender\'s name', detail: `line ${id} (${line.message}) names ${line.username}, sent by ${m.username}` }
    if (!m.sends.some((s) => s.accepted)) return { check: 'Chat: refused means not taken', detail: `line ${id} (${line.message}) was refused at every send` }
    const earlier = at.get(line.message)
    if (earlier !== undefined) return { check: 'Chat: exactly once in the transcript', detail: `${m.username}'s ${line.message} is at ids ${earlier} and ${id}` }
    at.set(line.message, id)
  }
  // Acks: the same id every time, and the line at that id is the message.
  const acked = new Map<string, number>()
  const byClientId = new Map(sent.filter((m) => m.clientMsgId !== null).map((m) => [`${m.username}\n${m.clientMsgId}`, m]))
  for (const user of users) {
    for (const ack of views.get(user)!.acks) {
      const m = byClientId.get(`${user.username}\n${ack.clientMsgId}`)
      if (!m) return { check: 'Chat: acks name what was sent', detail: `${user.id} (${user.username}) got an ack for ${ack.clientMsgId}, which it never sent` }
      const first = acked.get(m.text)
      if (first !== undefined && first !== ack.id) return { check: 'Chat: one id per clientMsgId', detail: `${m.username}'s ${m.text} (${m.clientMsgId}) acked as ${first} and as ${ack.id}` }
      acked.set(m.text, ack.id)
      if (at.get(m.text) !== ack.id) {
        return { check: 'Chat: acked means in the transcript at that id', detail: `${m.username}'s ${m.text} (${m.clientMsgId}) acked at ${user.id} as id ${ack.id}, transcript has it ${at.has(m.text) ? `at ${at.get(m.text)}` : 'nowhere'}` }
      }
    }
  }
  for (const m of sent) {
    const kept = m.sends.find((s) => s.accepted && o.connectedAtEnd(s.user))
    if (!kept) continue
    if (!at.has(m.text)) return { check: 'Chat: nothing lost', detail: `${m.username}'s ${m.text} sent at ${kept.at} ms over ${kept.user.id} at n${kept.user.slot}, still connected, is not in the transcript` }
    if (m.clientMsgId !== null && !acked.has(m.text)) {
      return { check: 'Chat: acked while connected', detail: `${m.username}'s ${m.text} (${m.clientMsgId}) sent at ${kept.at} ms over ${kept.user.id} at n${kept.user.slot}, still connected, got no ack (line ${at.get(m.text)})` }
    }
  }
  // Order, as far as a sender can ask for it: a message sent over a connection after another one
  // (first sent there, or sent again after a reconnect) comes after it in the transcript, when the
  // later one was sent over that connection alone (its line is that node's entry, which the node
  // proposes after the earlier one); and a message sent after another one was acked comes after it.
  const perConnection = new Map<SimUser, Array<{ m: SentChat; order: number }>>()
  for (const m of sent) for (const s of m.sends) if (s.accepted) (perConnection.get(s.user) ?? perConnection.set(s.user, []).get(s.user)!).push({ m, order: s.order })
  for (const [user, sends] of perConnection) {
    sends.sort((a, b) => a.order - b.order)
    let highest: { m: SentChat; id: number } | null = null
    for (const { m } of sends) {
      const id = at.get(m.text)
      if (id === undefined) continue
      const alone = m.sends.every((s) => !s.accepted || s.user === user)
      if (alone && highest && highest.id > id) return { check: 'Chat: per-sender order', detail: `${user.id} (${user.username}) sent ${highest.m.text} before ${m.text}; the transcript has them at ${highest.id} and ${id}` }
      if (!highest || id > highest.id) highest = { m, id }
    }
  }
  const events: Array<{ order: number; username: string; m: SentChat; acked: boolean }> = []
  for (const m of sent) {
    const first = m.sends.find((s) => s.accepted)
    if (first) events.push({ order: first.order, username: m.username, m, acked: false })
    const ackedAt = o.ackedAt(m)
    if (ackedAt !== undefined) events.push({ order: ackedAt, username: m.username, m, acked: true })
  }
  events.sort((a, b) => a.order - b.order)
  const highestAcked = new Map<string, { m: SentChat; id: number }>()
  for (const e of events) {
    const id = at.get(e.m.text)
    if (id === undefined) continue
    const before = highestAcked.get(e.username)
    if (e.acked) {
      if (!before || id > before.id) highestAcked.set(e.username, { m: e.m, id })
    } else if (before && before.id > id) {
      return { check: 'Chat: per-sender order after an ack', detail: `${e.username} sent ${e.m.text} after ${before.m.text} was acked at ${before.id}; the transcript has it at ${id}` }
    }
  }
  return null
}

/** What the world recorded about each history frame when it was sent: the node's coverage then. */
export interface HistoryNote {
  /** The node's transcript `coveredFrom` at that moment. */
  coveredFrom: number
  /** The node's transcript epoch at that moment. */
  epoch: string
}

export interface DeliveryCheckOptions {
  historyOnJoin: number
  connectedAtEnd(user: SimUser): boolean
  historyNotes(user: SimUser): HistoryNote[]
  onDelivery(): void
  /** Whether presence is judged (then a presence change told twice is a problem too). */
  presence: boolean
}

/** Every connection read the transcript in order, once, without gaps it was not told of, up to the end if still connected. */
export function checkDelivery(users: SimUser[], views: Map<SimUser, ClientView>, ref: Reference, o: DeliveryCheckOptions): Problem | null {
  for (const user of users) {
    const view = views.get(user)!
    if (view.problems.length > 0) return { check: 'Client: frames understood', detail: `${user.id} (${user.username}): ${view.problems[0]}` }
    if (o.presence && view.presenceProblems.length > 0) return { check: 'Presence told once', detail: `${user.id} (${user.username}): ${view.presenceProblems[0]}` }
    if (!view.admitted) continue
    const who = `${user.id} (${user.username} at n${user.slot}${user.resume ? `, resuming after ${user.resume.since}` : ''})`
    const notes = o.historyNotes(user)
    let histories = 0
    /** The id of the last line read; null until the first line of a fresh connection's history. */
    let previous: number | null = user.resume ? user.resume.since : o.historyOnJoin === 0 ? user.startId : null
    /** A `complete: false` since the last line read: a gap is allowed (and must be real). */
    let toldIncomplete = false
    let fresh = user.resume === null
    for (let k = 0; k < view.reads.length; k++) {
      const r = view.reads[k]!
      if (r.kind === 'history') {
        const note = notes[histories++]
        if (r.epoch !== '' && ref.epoch !== '' && r.epoch !== ref.epoch) return { check: 'Client: one epoch', detail: `${who} got a history of transcript ${r.epoch}, the cluster's is ${ref.epoch}` }
        if (!r.complete) {
          // Said only when the node lacks lines after the last one read (or, fresh, before its history).
          const after = previous ?? 0
          if (!note || note.epoch !== ref.epoch) {
            return { check: 'Client: complete:false only when lines are lacking', detail: `${who} was told complete:false by a node that did not know the transcript yet (epoch ${JSON.stringify(note?.epoch)})` }
          }
          if (note.coveredFrom <= after + 1) return { check: 'Client: complete:false only when lines are lacking', detail: `${who} was told complete:false after line ${after}, and the node held every line from ${note.coveredFrom}` }
          if (ref.between(after, note.coveredFrom) === undefined) {
            return { check: 'Client: complete:false only when lines are lacking', detail: `${who} was told complete:false after line ${after}; the node covered from ${note.coveredFrom}, and the transcript has no line between` }
          }
          toldIncomplete = true
        } else if (fresh && previous === null && r.count < o.historyOnJoin) {
          // A fresh connection's whole history, said to be complete: nothing in the transcript before it.
          const first = view.reads[k + 1]
          const firstId = first?.kind === 'line' && !first.live ? first.line.id : user.startId + 1
          const missing = ref.between(0, firstId)
          if (missing !== undefined) return { check: 'Client: complete history', detail: `${who} got ${r.count} lines of history from ${firstId}, said complete, but the transcript has line ${missing} before` }
          previous = firstId - 1
        }
        fresh = false
        continue
      }
      const line = r.line
      o.onDelivery()
      const expected = ref.keyAt(line.id)
      if (expected === undefined) return { check: 'Client: lines from the transcript', detail: `${who} read line ${line.id}, which no node holds` }
      if (expected !== frameKey(line)) return { check: 'Client: lines from the transcript', detail: `${who} read [${frameKey(line)}] at ${line.id}, the transcript has [${expected}]` }
      if (previous !== null) {
        if (line.id <= previous) return { check: 'Client: once and in order', detail: `${who} read line ${line.id} after line ${previous}` }
        const skipped = ref.between(previous, line.id)
        if (skipped !== undefined && !toldIncomplete) return { check: 'Client: no gap', detail: `${who} read line ${line.id} after ${previous}, never line ${skipped}` }
      }
      previous = line.id
      toldIncomplete = false
    }
    if (o.connectedAtEnd(user) && !user.probe) {
      if (histories === 0 && (user.resume !== null || o.historyOnJoin > 0)) return { check: 'Client: history answered', detail: `${who} never got its history frame` }
      const from = previous ?? user.startId
      const missing = ref.between(from, Infinity)
      if (missing !== undefined) return { check: 'Client: every line after it connected', detail: `${who} read up to ${from}, never line ${missing} (the transcript reaches ${ref.lastId})` }
    }
  }
  return null
}

const describeUsers = (users: Map<string, string>) =>
  [...users].map(([name, address]) => `${name}@${address.replace(/^bun:\/\/Sim@/, '')}`).sort().join(' ')

/** Who is connected, by name: the truth every list must equal. */
function connectedUsers(users: SimUser[], addresses: string[]): Map<string, string> | Problem {
  const truth = new Map<string, string>()
  for (const user of users) {
    if (!user.socket.open) continue
    const address = addresses[user.slot]!
    const other = truth.get(user.username)
    if (other !== undefined) return { check: 'Presence: one owner per name', detail: `${user.username} is connected at ${other} and ${address}` }
    truth.set(user.username, address)
  }
  return truth
}

/** Every node's list and every connected client's list equal the users actually connected; nothing was told twice. */
export function checkPresence(nodes: Array<{ address: string; room: ChatRoom }>, users: SimUser[], views: Map<SimUser, ClientView>, addresses: string[]): Problem | null {
  const truth = connectedUsers(users, addresses)
  if (!(truth instanceof Map)) return truth
  const expected = describeUsers(truth)
  for (const { address, room } of nodes) {
    const listed = describeUsers(new Map(room.users().map((u) => [u.username, u.nodeAddress])))
    if (listed !== expected) return { check: 'Presence at nodes', detail: `${address} lists [${listed}], connected are [${expected}]` }
  }
  for (const user of users) {
    const view = views.get(user)!
    if (!user.socket.open) continue
    const listed = describeUsers(view.users)
    if (listed !== expected) return { check: 'Presence at clients', detail: `${user.id} (${user.username} at n${user.slot}) lists [${listed}], connected are [${expected}]` }
  }
  return null
}

/** The transcript's join and leave lines alternate per name and, folded, leave online exactly who is connected. */
export function checkTranscriptPresence(ref: Reference, users: SimUser[]): Problem | null {
  // By name only: under the hostile transport two nodes may both keep a name (presence lost on the way).
  const truth = new Set(users.filter((u) => u.socket.open).map((u) => u.username))
  const online = new Set<string>()
  for (const id of ref.ids()) {
    const line = ref.lines.get(id)!
    if (line.type !== 'system') continue
    for (const name of line.usernames) {
      if (line.event === 'join' && online.has(name)) return { check: 'Transcript presence: join and leave alternate', detail: `line ${id}: ${name} joins, already online` }
      if (line.event === 'leave' && !online.has(name)) return { check: 'Transcript presence: join and leave alternate', detail: `line ${id}: ${name} leaves, not online` }
      if (line.event === 'join') online.add(name)
      else online.delete(name)
    }
  }
  const listed = [...online].sort().join(' ')
  const expected = [...truth].sort().join(' ')
  if (listed !== expected) return { check: 'Transcript presence: online as connected', detail: `the transcript leaves [${listed}] online, connected are [${expected}]` }
  return null
}

export { readFrames }

// What the whole-node simulator demands once the faults have stopped: membership converged,
// presence equal to who is really connected (at every node and every client), every change
// told once, and chat delivered once and in per-sender order.
import type { ChatRoom } from '../../../src/chat/room'
import type { Membership } from '../../../src/cluster/membership'
import { readFrames, type SimUser } from './users'

export interface SentChat {
  text: string
  username: string
  userId: string
  slot: number
  process: number
  /** Virtual ms when it was sent. */
  at: number
  /** Position among all opens and sends. */
  order: number
}

export interface Problem {
  check: string
  detail: string
}

/** Why the live nodes do not (yet) form one cluster of exactly themselves, all Up; null when they do. */
export function membershipNotConverged(cores: Membership[]): string | null {
  if (cores.length === 0) return 'no live node'
  const leader = cores.find((m) => m.role === 'leader')
  if (!leader) return 'no leader'
  const expected = cores.map((m) => m.selfId).sort().join(' ')
  for (const m of cores) {
    if (m.leaderId !== leader.selfId || m.term !== leader.term) return `${m.selfId} follows ${m.leaderId} in term ${m.term}, not ${leader.selfId} in term ${leader.term}`
    if (m.commitIndex !== leader.commitIndex || m.entries.length !== m.commitIndex) return `${m.selfId} has commit ${m.commitIndex} and log ${m.entries.length}, the leader ${leader.commitIndex}`
    const members = [...m.membersAt(m.commitIndex).keys()].sort().join(' ')
    if (members !== expected) return `${m.selfId} has members [${members}], live are [${expected}]`
    const view = m.view()
    if (view.status !== 'Up') return `${m.selfId} sees itself ${view.status}`
    const notUp = view.members.find((v) => v.status !== 'Up' || !v.reachable)
    if (notUp) return `${m.selfId} sees ${notUp.id} ${notUp.status}${notUp.reachable ? '' : ' and unreachable'}`
  }
  return null
}

const describeUsers = (users: Map<string, string>) =>
  [...users].map(([name, address]) => `${name}@${address.replace(/^bun:\/\/Sim@/, '')}`).sort().join(' ')

/** Every node's list and every connected client's list equal the users actually connected; nothing was told twice. */
export function checkPresence(nodes: Array<{ address: string; room: ChatRoom }>, users: SimUser[], addresses: string[]): Problem | null {
  const truth = new Map<string, string>()
  for (const user of users) {
    if (!user.socket.open) continue
    const address = addresses[user.slot]!
    const other = truth.get(user.username)
    if (other !== undefined) return { check: 'Presence: one owner per name', detail: `${user.username} is connected at ${other} and ${address}` }
    truth.set(user.username, address)
  }
  const expected = describeUsers(truth)
  for (const { address, room } of nodes) {
    const listed = describeUsers(new Map(room.users().map((u) => [u.username, u.nodeAddress])))
    if (listed !== expected) return { check: 'Presence at nodes', detail: `${address} lists [${listed}], connected are [${expected}]` }
  }
  for (const user of users) {
    const view = readFrames(user.socket.frames)
    if (view.problems.length > 0) return { check: 'Presence told once', detail: `${user.id} (${user.username}): ${view.problems[0]}` }
    if (!user.socket.open) continue
    const listed = describeUsers(view.users)
    if (listed !== expected) return { check: 'Presence at clients', detail: `${user.id} (${user.username} at n${user.slot}) lists [${listed}], connected are [${expected}]` }
  }
  return null
}

export interface DeliveryOptions {
  /** Messages sent from this virtual time on must reach everyone connected before they were sent. */
  judgedFrom: number
  /** Also judge messages sent earlier, during the faults, when the sender's process lived to the end. */
  strict: boolean
  processAlive(slot: number, process: number): boolean
  onDelivery(): void
}

export function checkDelivery(users: SimUser[], sent: SentChat[], o: DeliveryOptions): Problem | null {
  const byText = new Map(sent.map((m, i) => [m.text, { m, i }]))
  const received = new Map<string, Set<string>>()
  for (const user of users) {
    const texts = new Set<string>()
    /** Per sender, the index (in `sent`) of the last message seen from them. */
    const last = new Map<string, number>()
    for (const line of readFrames(user.socket.frames).chats) {
      const entry = byText.get(line.text)
      if (!entry) return { check: 'Delivery: nothing invented', detail: `${user.id} received ${JSON.stringify(line.text)}, which nobody sent` }
      if (texts.has(line.text)) return { check: 'Delivery: at most once', detail: `${user.id} (${user.username}) received ${line.text} from ${entry.m.userId} twice` }
      texts.add(line.text)
      o.onDelivery()
      const previous = last.get(entry.m.userId)
      if (previous !== undefined && previous > entry.i) {
        return { check: 'Delivery: per-sender order', detail: `${user.id} (${user.username}) received ${line.text} after ${sent[previous]!.text}, both from ${entry.m.userId}` }
      }
      last.set(entry.m.userId, entry.i)
    }
    received.set(user.id, texts)
  }
  const receivers = users.filter((u) => u.socket.open && o.processAlive(u.slot, u.process) && readFrames(u.socket.frames.slice(0, 1)).admitted)
  for (const m of sent) {
    const judged = m.at >= o.judgedFrom || (o.strict && o.processAlive(m.slot, m.process))
    if (!judged) continue
    for (const r of receivers) {
      if (r.order > m.order) continue
      if (!received.get(r.id)!.has(m.text)) {
        const when = m.at >= o.judgedFrom ? 'after the cluster converged' : 'during the faults, from a node that lived on'
        return { check: 'Delivery: nothing lost', detail: `${r.id} (${r.username} at n${r.slot}, connected since ${r.openedAt} ms) never received ${m.text} from ${m.userId} at n${m.slot}, sent at ${m.at} ms ${when}` }
      }
    }
  }
  return null
}

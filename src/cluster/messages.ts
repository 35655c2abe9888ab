// Every message that crosses the cluster port. One TypeBox schema per message gives both the
// TypeScript type and the runtime check used when a frame is decoded (see codec.ts).
import { Type as T, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'

export const PROTOCOL_VERSION = 1

const Str = (maxLength = 512) => T.String({ maxLength })
const Nat = () => T.Integer({ minimum: 0 })

/** A node identity: `bun://System@host:port#incarnation`. A restart gets a new incarnation. */
const Id = () => Str(300)

export const MemberInfo = T.Object({ address: Str(256), incarnation: Str(40), httpUrl: Str(300) })
export type MemberInfo = Static<typeof MemberInfo>

export const Change = T.Union([
  T.Object({ type: T.Literal('noop') }),
  T.Object({ type: T.Literal('add'), member: MemberInfo }),
  T.Object({
    type: T.Literal('remove'),
    id: Id(),
    reason: T.Union([T.Literal('leave'), T.Literal('down'), T.Literal('replaced')]),
  }),
])
export type Change = Static<typeof Change>

export const Entry = T.Object({ term: Nat(), change: Change })
export type Entry = Static<typeof Entry>

/** Sent first on every connection; nothing else is accepted before it. */
export const Hello = T.Object({
  type: T.Literal('hello'),
  version: T.Integer(),
  systemName: Str(128),
  address: Str(256),
  incarnation: Str(40),
})
export type Hello = Static<typeof Hello>

// Membership (Raft-style). `from` and `to` are node ids; `to` may be a bare address when the
// sender does not know who lives there yet (a join sent to a seed).
const routed = { from: Id(), to: Id() }

export const JoinRequest = T.Object({ type: T.Literal('join_request'), ...routed, member: MemberInfo })
export const LeaveRequest = T.Object({ type: T.Literal('leave_request'), ...routed })
/** A member's answer to a join or leave request: where the leader is, if it knows. */
export const LeaderHint = T.Object({ type: T.Literal('leader_hint'), ...routed, leader: T.Union([Str(256), T.Null()]) })
/** "Your removal is committed": the receiving incarnation is finished and must rejoin as a new one. */
export const NotMember = T.Object({ type: T.Literal('not_member'), ...routed })
export const AppendEntries = T.Object({
  type: T.Literal('append_entries'),
  ...routed,
  term: Nat(),
  prevIndex: Nat(),
  prevTerm: Nat(),
  entries: T.Array(Entry, { maxItems: 1024 }),
  commit: Nat(),
  /** Members the leader has not heard from lately, so every node shows the same reachability. */
  unreachable: T.Array(Id(), { maxItems: 1024 }),
})
export const AppendResponse = T.Object({
  type: T.Literal('append_response'),
  ...routed,
  term: Nat(),
  success: T.Boolean(),
  /** On success the follower's last matching index; on failure a hint where to retry from. */
  matchIndex: Nat(),
})
export const VoteRequest = T.Object({
  type: T.Literal('vote_request'),
  ...routed,
  term: Nat(),
  lastIndex: Nat(),
  lastTerm: Nat(),
  preVote: T.Boolean(),
  /** Set when a leader hands over (timeout_now): voters then ignore their leader lease. */
  transfer: T.Boolean(),
})
export const VoteResponse = T.Object({
  type: T.Literal('vote_response'),
  ...routed,
  term: Nat(),
  granted: T.Boolean(),
  preVote: T.Boolean(),
})
/** A leaving leader asks its most up-to-date follower to start an election now. */
export const TimeoutNow = T.Object({ type: T.Literal('timeout_now'), ...routed, term: Nat() })

export const RaftMessage = T.Union([
  JoinRequest, LeaveRequest, LeaderHint, NotMember, AppendEntries, AppendResponse, VoteRequest, VoteResponse, TimeoutNow,
])
export type RaftMessage = Static<typeof RaftMessage>

// Chat and presence between nodes.
export const ChatUser = T.Object({ username: Str(128), connectedAt: Nat() })
export type ChatUser = Static<typeof ChatUser>

export const ChatRelay = T.Object({
  type: T.Literal('chat'),
  username: Str(128),
  message: T.String({ maxLength: 100_000 }),
  nodeAddress: Str(256),
  timestamp: Nat(),
})
export type ChatRelay = Static<typeof ChatRelay>
/** The sender's whole set of local users; sent first on every new connection. */
export const PresenceSnapshot = T.Object({ type: T.Literal('presence_snapshot'), users: T.Array(ChatUser, { maxItems: 1_000_000 }) })
export const PresenceJoin = T.Object({ type: T.Literal('presence_join'), user: ChatUser })
export const PresenceLeave = T.Object({ type: T.Literal('presence_leave'), username: Str(128) })

export const ChatMessage = T.Union([ChatRelay, PresenceSnapshot, PresenceJoin, PresenceLeave])
export type ChatMessage = Static<typeof ChatMessage>

export const PeerMessage = T.Union([...RaftMessage.anyOf, ...ChatMessage.anyOf])
export type PeerMessage = Static<typeof PeerMessage>

export type WireMessage = Hello | PeerMessage

const checkers = new Map<string, ReturnType<typeof TypeCompiler.Compile>>()
for (const schema of [Hello, ...PeerMessage.anyOf] as TSchema[]) {
  checkers.set(schema.properties.type.const, TypeCompiler.Compile(schema))
}

/** Narrows an untrusted decoded value to a wire message, or says why it is not one. */
export function validateWireMessage(value: unknown): { ok: true; message: WireMessage } | { ok: false; error: string } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, error: 'not an object' }
  const type = (value as { type?: unknown }).type
  const checker = typeof type === 'string' ? checkers.get(type) : undefined
  if (!checker) return { ok: false, error: `unknown message type ${String(type).slice(0, 40)}` }
  if (!checker.Check(value)) {
    const first = checker.Errors(value).First()
    return { ok: false, error: `invalid ${type}: ${first ? `${first.path} ${first.message}` : 'schema mismatch'}` }
  }
  return { ok: true, message: value as WireMessage }
}

export const nodeId = (address: string, incarnation: string) => `${address}#${incarnation}`
export const addressOf = (idOrAddress: string) => {
  const hash = idOrAddress.lastIndexOf('#')
  return hash < 0 ? idOrAddress : idOrAddress.slice(0, hash)
}
export const incarnationOf = (id: string) => id.slice(id.lastIndexOf('#') + 1)

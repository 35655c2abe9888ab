// The cluster's own messages on the cluster port: the hello that opens a connection and the
// membership (Raft) messages. One TypeBox schema per message gives both the TypeScript type and
// the runtime check. Chat and presence bring their own schemas (src/chat/messages.ts).
import { Type as T, type Static } from '@sinclair/typebox'
import { typesOf, validatorFor, type Typed } from './validate'

// 6: join and leave entries carry a list of names (a storm is told in a few lines).
export const PROTOCOL_VERSION = 6

/**
 * Largest term or log index a peer may send. Far beyond anything real (a term a millisecond
 * would last 8,900 years), and far below 2^53, so `term + 1` is always a new number.
 */
export const MAX_TERM = 2 ** 48

const Str = (maxLength = 512) => T.String({ maxLength })
const Nat = () => T.Integer({ minimum: 0, maximum: MAX_TERM })

/** A node identity: `bun://System@host:port#incarnation`. A restart gets a new incarnation. */
const Id = () => Str(300)

export const MemberInfo = T.Object({ address: Str(256), incarnation: Str(40), httpUrl: Str(300) })
export type MemberInfo = Static<typeof MemberInfo>

export const Change = T.Union([
  T.Object({ type: T.Literal('noop') }),
  /** An application entry (chat): the cluster replicates and orders it; the application checks `data` (ClusterNode). */
  T.Object({ type: T.Literal('app'), data: T.Unknown() }),
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

// The handshake (handshake.ts): the dialer sends `hello`, the listener answers `hello_ack`
// with its proofs, the dialer answers `auth` with its own. Nothing else is accepted before it.
/** How a node proves it belongs: an HMAC-SHA256 challenge-response over a shared secret, or nothing. */
export const AuthMode = T.Union([T.Literal('none'), T.Literal('hmac-sha256')])
export type AuthMode = Static<typeof AuthMode>
const Nonce = () => T.Uint8Array({ minByteLength: 16, maxByteLength: 64 })
const Proof = () => T.Uint8Array({ minByteLength: 32, maxByteLength: 32 })

/** What each side of a connection says of itself when it opens: the dialer in its hello, the listener in its hello_ack. */
const Introduction = {
  version: T.Integer(),
  systemName: Str(128),
  address: Str(256),
  incarnation: Str(40),
  auth: AuthMode,
  nonce: Nonce(),
}

/** Sent first by the dialing side of every connection. */
export const Hello = T.Object({ type: T.Literal('hello'), ...Introduction })
export type Hello = Static<typeof Hello>

/** The listener's answer: who it is, its challenge, and its proof under each secret it holds. */
export const HelloAck = T.Object({
  type: T.Literal('hello_ack'),
  /** `incarnation` says which run of the listener answered: frames kept for an earlier one are not resent to it. */
  ...Introduction,
  /** One per secret the listener accepts (current, then previous during a rotation); none without a secret. */
  proofs: T.Array(Proof(), { maxItems: 2 }),
})
export type HelloAck = Static<typeof HelloAck>

/** The dialer's proof, under the secret that verified the listener's; empty without a secret. */
export const Auth = T.Object({ type: T.Literal('auth'), proof: T.Uint8Array({ maxByteLength: 32 }) })
export type Auth = Static<typeof Auth>

export const HANDSHAKE_TYPES = new Set(['hello', 'hello_ack', 'auth'])

// Membership (Raft-style). `from` and `to` are node ids; `to` may be a bare address when the
// sender does not know who lives there yet (a join sent to a seed).
const routed = { from: Id(), to: Id() }

export const JoinRequest = T.Object({ type: T.Literal('join_request'), ...routed, member: MemberInfo, probe: T.Optional(Str(32)) })
export const LeaveRequest = T.Object({ type: T.Literal('leave_request'), ...routed })
/**
 * A member's answer to a join or leave request: where the leader is, if it knows. The leader's
 * own answer to a join carries a `probe` the joiner must echo in a second join_request: the
 * leader adds only a node it has reached over its own link (see Membership.onJoinRequest).
 */
export const LeaderHint = T.Object({
  type: T.Literal('leader_hint'),
  ...routed,
  leader: T.Union([Str(256), T.Null()]),
  probe: T.Optional(Str(32)),
})
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
/** A member asks the leader to append application entries (it keeps them until it sees them applied, and asks again). */
export const Proposal = T.Object({ type: T.Literal('proposal'), ...routed, entries: T.Array(T.Unknown(), { maxItems: 1024 }) })
/**
 * The leader's log no longer reaches back to what this follower needs: everything up to `index`,
 * summed up. `added` and `removed` are every incarnation the compacted log ever added or removed
 * (ids are never reused); `app` is the application's state, checked by the application.
 */
export const InstallSnapshot = T.Object({
  type: T.Literal('install_snapshot'),
  ...routed,
  term: Nat(),
  index: Nat(),
  lastTerm: Nat(),
  members: T.Array(MemberInfo, { maxItems: 1024 }),
  added: T.Array(Id(), { maxItems: 100_000 }),
  removed: T.Array(Id(), { maxItems: 100_000 }),
  app: T.Unknown(),
})
/** A leaving leader asks its most up-to-date follower to start an election now. */
export const TimeoutNow = T.Object({ type: T.Literal('timeout_now'), ...routed, term: Nat() })

export const RaftMessage = T.Union([
  JoinRequest, LeaveRequest, LeaderHint, NotMember, AppendEntries, AppendResponse, VoteRequest, VoteResponse, TimeoutNow,
  Proposal, InstallSnapshot,
])
export type RaftMessage = Static<typeof RaftMessage>

export const RAFT_TYPES = typesOf(RaftMessage.anyOf)
export const isRaftMessage = (m: Typed): m is RaftMessage => RAFT_TYPES.has(m.type)
export const validateRaftMessage = validatorFor<RaftMessage>(RaftMessage.anyOf)
export const validateHello = validatorFor<Hello>([Hello])
export const validateHelloAck = validatorFor<HelloAck>([HelloAck])
export const validateAuth = validatorFor<Auth>([Auth])

// What the transcript is made of, on the wire between nodes: the entries a node proposes for its
// own users (chat lines, joins and leaves) and the snapshot a lagging node installs. Checked at
// the boundary like every peer frame; the cluster carries them as opaque application data.
import { Type as T, type Static } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { err, ok, type Result } from '../result'

const Str = (maxLength = 512) => T.String({ maxLength })
const Nat = () => T.Integer({ minimum: 0, maximum: 2 ** 48 })

/**
 * Who proposed an entry (a node incarnation id) and its place in that node's own sequence: an
 * entry is applied only in sequence, so one node's entries keep their order (a retry after a
 * leader change cannot overtake an earlier one), and each once.
 */
const Origin = { origin: Str(300), seq: Nat() }
/** Deduplication: the same key (a user's clientMsgId, or one the node made) is applied once. */
const Key = { key: Str(200) }

export const ChatEntry = T.Object({
  type: T.Literal('chat'),
  ...Origin,
  ...Key,
  username: Str(128),
  message: T.String({ maxLength: 16_000 }),
  nodeAddress: Str(256),
  timestamp: Nat(),
})
export type ChatEntry = Static<typeof ChatEntry>

/** Most names one join or leave entry carries: a storm's joins go as a few entries, each well under a cluster frame. */
export const PRESENCE_NAMES_MAX = 1_000

/**
 * Users of one node who joined (or left): one at a time in a small room, many at once in a storm
 * (room.ts gathers them), so a storm costs its users a few lines, not one line each.
 */
export const PresenceEntry = T.Object({
  type: T.Union([T.Literal('join'), T.Literal('leave')]),
  ...Origin,
  ...Key,
  usernames: T.Array(Str(128), { minItems: 1, maxItems: PRESENCE_NAMES_MAX }),
  nodeAddress: Str(256),
  timestamp: Nat(),
})
export type PresenceEntry = Static<typeof PresenceEntry>

export const TranscriptEntry = T.Union([ChatEntry, PresenceEntry])
export type TranscriptEntry = Static<typeof TranscriptEntry>

/** One line of the transcript as every node holds it; `id` is its log index. */
export const Line = T.Union([
  T.Object({ type: T.Literal('chat'), id: Nat(), username: Str(128), message: T.String({ maxLength: 16_000 }), nodeAddress: Str(256), timestamp: Nat() }),
  T.Object({
    type: T.Literal('system'),
    id: Nat(),
    event: T.Union([T.Literal('join'), T.Literal('leave')]),
    /** One name for a user's own join or leave; several when many joined or left together, or a whole node's users left at once. */
    usernames: T.Array(Str(128), { maxItems: 1_000_000 }),
    timestamp: Nat(),
  }),
])
export type Line = Static<typeof Line>

export const TranscriptSnapshot = T.Object({
  epoch: Str(300),
  applied: Nat(),
  /** Every line with an id from here on is in `lines`. */
  coveredFrom: Nat(),
  lines: T.Array(Line, { maxItems: 100_000 }),
  /** Hashes of the last keys applied, oldest first, with the id each got. */
  keys: T.Array(T.Tuple([Str(16), Nat()]), { maxItems: 100_000 }),
  next: T.Array(T.Tuple([Str(300), Nat()]), { maxItems: 10_000 }),
  /** Who is online, by node address, as joins and leaves in the transcript say. */
  online: T.Array(T.Tuple([Str(256), T.Array(Str(128), { maxItems: 1_000_000 })]), { maxItems: 10_000 }),
})
export type TranscriptSnapshot = Static<typeof TranscriptSnapshot>

const entryCheck = TypeCompiler.Compile(TranscriptEntry)
const snapshotCheck = TypeCompiler.Compile(TranscriptSnapshot)

function checker<V>(check: ReturnType<typeof TypeCompiler.Compile>, what: string): (value: unknown) => Result<V> {
  return (value) => {
    if (check.Check(value)) return ok(value as V)
    const first = check.Errors(value).First()
    return err(`invalid ${what}: ${first ? `${first.path} ${first.message}` : 'schema mismatch'}`)
  }
}

export const validateTranscriptEntry = checker<TranscriptEntry>(entryCheck, 'transcript entry')
export const validateTranscriptSnapshot = checker<TranscriptSnapshot>(snapshotCheck, 'transcript snapshot')

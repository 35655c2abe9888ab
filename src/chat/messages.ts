// Presence between nodes: what a node tells the others about its own users, directly (chat
// lines go through the transcript, src/transcript/). The cluster carries these without knowing
// them; the node's composition root hands the transport this validator beside the cluster's own.
import { Type as T, type Static } from '@sinclair/typebox'
import { validatorFor } from '../cluster/validate'

const Str = (maxLength = 512) => T.String({ maxLength })
const Nat = () => T.Integer({ minimum: 0 })

export const ChatUser = T.Object({ username: Str(128), connectedAt: Nat() })
export type ChatUser = Static<typeof ChatUser>

/** The sender's whole set of local users; sent first on every new connection. */
export const PresenceSnapshot = T.Object({ type: T.Literal('presence_snapshot'), users: T.Array(ChatUser, { maxItems: 1_000_000 }) })
export const PresenceJoin = T.Object({ type: T.Literal('presence_join'), user: ChatUser })
export const PresenceLeave = T.Object({ type: T.Literal('presence_leave'), username: Str(128) })
/** The sender's own users that joined or left since its last batch (presence-batch.ts); leaves apply first. */
export const PresenceBatch = T.Object({
  type: T.Literal('presence_batch'),
  joins: T.Array(ChatUser, { maxItems: 100_000 }),
  leaves: T.Array(Str(128), { maxItems: 100_000 }),
})

export const ChatMessage = T.Union([PresenceSnapshot, PresenceJoin, PresenceLeave, PresenceBatch])
export type ChatMessage = Static<typeof ChatMessage>

export const validateChatMessage = validatorFor<ChatMessage>(ChatMessage.anyOf)

// The WebSocket protocol between the browser and a node. Server messages are one discriminated
// union; client input is validated here, at the boundary, before anything else sees it.
import type { Lang } from '../config'
import { err, ok, type Result } from '../result'
import type { Line } from '../transcript/entries'

export interface UserEntry {
  username: string
  nodeAddress: string
  connectedAt: number
}

/**
 * A join or leave line. `id` is its place in the transcript (absent only in the unit tests of
 * the text). A line about several users (a storm's joins gathered, a node's users leaving when it
 * went down) has `count`, how many, and `usernames`, the first NAMES_IN_FRAME of them.
 */
export type SystemMessage = { type: 'system'; id?: number; message: string; timestamp: number; event: 'join' | 'leave'; username: string; usernames?: string[]; count?: number }

/**
 * Names a line about several users carries. Every line reaches every user and joins a history
 * frame, and the `presence` frames already tell each name: a storm's line with all of its
 * names would send every name to every user twice.
 */
export const NAMES_IN_FRAME = 20

export type ChatLine = { type: 'chat'; id: number; username: string; message: string; nodeAddress: string; timestamp: number }

/**
 * Lines of the transcript a connection did not receive live: the latest ones when it joins, the
 * ones after `since` when it resumes, a page of /api/messages. `complete: false` says older lines
 * (or some after `since`) are no longer held here; `epoch` names the transcript the ids belong to.
 */
export type HistoryFrame = { type: 'history'; epoch: string; messages: Array<ChatLine | SystemMessage>; complete: boolean }

export type ServerMessage =
  | ChatLine
  | SystemMessage
  | HistoryFrame
  /** The sender's chat with this clientMsgId has its place in the transcript: `id`. */
  | { type: 'ack'; clientMsgId: string; id: number }
  | { type: 'users'; users: UserEntry[] }
  /** Changes to the user list since the last such frame, to apply leaves first, then joins (presence-batch.ts). */
  | { type: 'presence'; joins: UserEntry[]; leaves: UserEntry[] }
  | { type: 'welcome'; username: string; nodeAddress: string }
  /** Sent just before a drain closes the socket with 1012: where to reconnect, the other members. */
  | { type: 'moving'; reason: string; members: Array<{ nodeAddress: string; httpUrl: string }> }
  | { type: 'error'; code: ErrorCode; message: string }

/** Why the last client frame was refused (the connection stays open). */
export type ErrorCode = 'message_too_long' | 'bad_message' | 'rate_limited' | 'overloaded' | 'unavailable'

/** `clientMsgId`: the sender wants an ack, and a resend with the same id is taken once. */
export type ClientMessage = { type: 'chat'; message: string; clientMsgId?: string }

/** Letters, digits and `-_.:`, 1 to 64 of them: a UUID fits, and it is safe in a key and a log line. */
const CLIENT_MSG_ID = /^[A-Za-z0-9_.:-]{1,64}$/

/** Close codes a client can act on; 4xxx mirror the HTTP status they stand for. */
export const CloseCode = {
  unsupportedData: 1003,
  badUsername: 4400,
  /** A token is required and was missing, expired or bad (the reason says which). */
  unauthorized: 4401,
  usernameTaken: 4409,
  /** The client kept sending after being told it was over the rate limit. */
  flooding: 4429,
  /** Over the node's connection limit (a race past the check before the upgrade). */
  tryAgainLater: 1013,
  /** The node is going away without a drain; the page reconnects (to another node, if it knows one). */
  goingAway: 1001,
  /** The node drains for a restart: a `moving` frame named the other members just before. */
  serviceRestart: 1012,
} as const

export { validateUsername } from './username'

/**
 * A client frame as it arrived. A text frame holding a JSON object with a `type` is a typed
 * message; any other text is a chat message, exactly as sent (`007` stays `007`, `{"a":1}` and
 * `"quoted"` stay what they are). Binary frames are refused.
 */
export function parseClientMessage(data: unknown): Result<ClientMessage> {
  if (typeof data !== 'string') return err('binary frames are not supported')
  const typed = data.charCodeAt(0) === 123 /* { */ ? parseObject(data) : undefined
  if (typed === undefined || !('type' in typed)) return ok({ type: 'chat', message: data })
  const m = typed as { type: unknown; message?: unknown; clientMsgId?: unknown }
  if (m.type !== 'chat' || typeof m.message !== 'string') {
    return err(`unknown message ${JSON.stringify(m.type)?.slice(0, 40)}; send text or {"type":"chat","message":"..."}`)
  }
  if (m.clientMsgId === undefined) return ok({ type: 'chat', message: m.message })
  if (typeof m.clientMsgId !== 'string' || !CLIENT_MSG_ID.test(m.clientMsgId)) return err('clientMsgId must be 1 to 64 letters, digits or -_.:')
  return ok({ type: 'chat', message: m.message, clientMsgId: m.clientMsgId })
}

function parseObject(text: string): object | undefined {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value : undefined
  } catch {
    return undefined
  }
}

// C0 and C1 controls except tab and newline, and the bidi embeddings and overrides (U+202A–E),
// which reorder whatever is shown after them (a "right-to-left override" spoofs text).
const FORBIDDEN_IN_TEXT = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u202A-\u202E]/

/** Whether a chat text contains a character that is refused (messages are otherwise kept exactly). */
export function hasForbiddenControl(text: string): boolean {
  return FORBIDDEN_IN_TEXT.test(text)
}

const TEXTS: Record<Lang, Record<'join' | 'leave', (u: string) => string> & { many: (names: string[], others: number) => string }> = {
  en: {
    join: (u) => `${u} joined the chat`,
    leave: (u) => `${u} left the chat`,
    many: (names, others) => (others > 0 ? `${names.join(', ')} and ${others} others` : `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`),
  },
  ko: {
    join: (u) => `${u} 님이 채팅에 참여했습니다`,
    leave: (u) => `${u} 님이 채팅을 떠났습니다`,
    many: (names, others) => (others > 0 ? `${names.join(', ')} 외 ${others}명` : names.join(', ')),
  },
}

/** Names shown in full in a line about several users; the rest are counted. */
const NAMES_SHOWN = 3

export function systemMessage(lang: Lang, event: 'join' | 'leave', usernames: string | string[], timestamp: number, id?: number): SystemMessage {
  const names = typeof usernames === 'string' ? [usernames] : usernames
  const t = TEXTS[lang]
  const who = names.length === 1 ? names[0]! : t.many(names.slice(0, NAMES_SHOWN), Math.max(0, names.length - NAMES_SHOWN))
  const line: SystemMessage = { type: 'system', ...(id === undefined ? {} : { id }), message: t[event](who), timestamp, event, username: names[0]! }
  if (names.length > 1) {
    line.usernames = names.length > NAMES_IN_FRAME ? names.slice(0, NAMES_IN_FRAME) : names
    line.count = names.length
  }
  return line
}

/** A transcript line as users receive it. */
export function lineFrame(lang: Lang, line: Line): ChatLine | SystemMessage {
  if (line.type === 'system') return systemMessage(lang, line.event, line.usernames, line.timestamp, line.id)
  return { type: 'chat', id: line.id, username: line.username, message: line.message, nodeAddress: line.nodeAddress, timestamp: line.timestamp }
}

// The WebSocket protocol between the browser and a node. Server messages are one discriminated
// union; client input is validated here, at the boundary, before anything else sees it.
import type { Lang } from '../config'
import { err, ok, type Result } from '../result'

export interface UserEntry {
  username: string
  nodeAddress: string
  connectedAt: number
}

export type SystemMessage = { type: 'system'; message: string; timestamp: number; event: 'join' | 'leave'; username: string }

export type ServerMessage =
  | { type: 'chat'; username: string; message: string; nodeAddress: string; timestamp: number }
  | SystemMessage
  | { type: 'users'; users: UserEntry[] }
  /** Changes to the user list since the last such frame, to apply leaves first, then joins (presence-batch.ts). */
  | { type: 'presence'; joins: UserEntry[]; leaves: UserEntry[] }
  | { type: 'welcome'; username: string; nodeAddress: string }
  /** Sent just before a drain closes the socket with 1012: where to reconnect, the other members. */
  | { type: 'moving'; reason: string; members: Array<{ nodeAddress: string; httpUrl: string }> }
  | { type: 'error'; code: ErrorCode; message: string }

/** Why the last client frame was refused (the connection stays open). */
export type ErrorCode = 'message_too_long' | 'bad_message' | 'rate_limited' | 'overloaded'

export type ClientMessage = { type: 'chat'; message: string }

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
 * Turns what Elysia hands the message handler back into a client message. A plain text frame is
 * a chat message; Elysia has already parsed frames that look like JSON, numbers or booleans,
 * so those are turned back into their text (a number loses leading zeros). A JSON object with
 * a `type` is a typed message.
 */
export function parseClientMessage(data: unknown): Result<ClientMessage> {
  if (data instanceof Uint8Array || data instanceof ArrayBuffer) return err('binary frames are not supported')
  if (typeof data === 'string') return ok({ type: 'chat', message: data })
  if (typeof data === 'object' && data !== null && !Array.isArray(data) && 'type' in data) {
    const typed = data as { type: unknown; message?: unknown }
    if (typed.type === 'chat' && typeof typed.message === 'string') return ok({ type: 'chat', message: typed.message })
    return err(`unknown message type ${JSON.stringify(typed.type)?.slice(0, 40)}; send text or {"type":"chat","message":"..."}`)
  }
  return ok({ type: 'chat', message: typeof data === 'object' ? JSON.stringify(data) : String(data) })
}

// C0 and C1 controls except tab and newline, and the bidi embeddings and overrides (U+202A–E),
// which reorder whatever is shown after them (a "right-to-left override" spoofs text).
const FORBIDDEN_IN_TEXT = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u202A-\u202E]/

/** Whether a chat text contains a character that is refused (messages are otherwise kept exactly). */
export function hasForbiddenControl(text: string): boolean {
  return FORBIDDEN_IN_TEXT.test(text)
}

const TEXTS: Record<Lang, Record<'join' | 'leave', (u: string) => string>> = {
  en: { join: (u) => `${u} joined the chat`, leave: (u) => `${u} left the chat` },
  ko: { join: (u) => `${u} 님이 채팅에 참여했습니다`, leave: (u) => `${u} 님이 채팅을 떠났습니다` },
}

export function systemMessage(lang: Lang, event: 'join' | 'leave', username: string, timestamp: number): SystemMessage {
  return { type: 'system', message: TEXTS[lang][event](username), timestamp, event, username }
}

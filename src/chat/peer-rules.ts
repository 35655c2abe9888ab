// What a peer node may say, beyond the shape its frames' schemas check (messages.ts). A peer
// speaks only for itself (chat it sends names its own node), and every field is held to the rule
// the same field meets from a browser: a real node only relays what its own users passed, so a
// frame that fails here was forged or corrupted, and the connection it came on is closed.
//
// Why here and not in the transport's validator: the validator sees a value, not who sent it,
// and src/cluster knows nothing of chat; the rules for usernames and text belong to the chat
// layer, which applies the same functions to browsers (validateUsername) and peers.
import type { Peer } from '../cluster/transport'
import { err, ok, type Result } from '../result'
import type { ChatMessage, ChatUser } from './messages'
import { validateUsername } from './protocol'

// C0 and C1 controls and DEL, except tab and newline.
const FORBIDDEN_CONTROL = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/

/** A chat message's text: not blank, at most `maxLength` characters, no control characters but \n and \t. */
export function checkMessageText(text: string, maxLength: number): Result<string> {
  if (text.trim() === '') return err('blank message')
  if (text.length > maxLength && [...text].length > maxLength) return err(`message longer than ${maxLength} characters`)
  if (FORBIDDEN_CONTROL.test(text)) return err('message contains control characters')
  return ok(text)
}

/** A username as a node sends it: one the browser rule accepts, already in its canonical form. */
function checkName(username: string): Result<string> {
  const checked = validateUsername(username)
  if (!checked.ok) return err(`username ${JSON.stringify(username.slice(0, 64))}: ${checked.error}`)
  if (checked.value !== username) return err(`username ${JSON.stringify(username.slice(0, 64))} is not in canonical form`)
  return checked
}

function checkUsers(users: ChatUser[]): Result<true> {
  const seen = new Set<string>()
  for (const user of users) {
    const name = checkName(user.username)
    if (!name.ok) return name
    if (seen.has(user.username)) return err(`username ${JSON.stringify(user.username)} twice in one snapshot`)
    seen.add(user.username)
  }
  return ok(true)
}

export function checkPeerMessage(peer: Peer, m: ChatMessage, maxMessageLength: number): Result<true> {
  switch (m.type) {
    case 'chat': {
      if (m.nodeAddress !== peer.address) return err(`chat claims node ${JSON.stringify(m.nodeAddress.slice(0, 256))}, sent by ${peer.address}`)
      const name = checkName(m.username)
      if (!name.ok) return name
      const text = checkMessageText(m.message, maxMessageLength)
      return text.ok ? ok(true) : text
    }
    case 'presence_snapshot':
      return checkUsers(m.users)
    case 'presence_join':
      return checkUsers([m.user])
    case 'presence_leave': {
      const name = checkName(m.username)
      return name.ok ? ok(true) : name
    }
    case 'presence_batch': {
      for (const username of m.leaves) {
        const name = checkName(username)
        if (!name.ok) return name
      }
      return checkUsers(m.joins)
    }
  }
}

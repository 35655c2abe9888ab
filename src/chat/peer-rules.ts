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
import type { TranscriptEntry } from '../transcript/entries'
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

/**
 * Names that passed `checkName`. Every chat message from a peer names its sender, and the rule
 * (NFKC, scripts, marks) costs 3-11 µs a name here, more than the rest of a message's way in:
 * a flood relayed by one node cost every other node that much again. The answer for a name never
 * changes, so a passed name is not checked twice (up to this many, then the memory starts over).
 */
const passedNames = new Set<string>()
const PASSED_NAMES_MAX = 20_000

/** A username as a node sends it: one the browser rule accepts, already in its canonical form. */
function checkName(username: string): Result<string> {
  if (passedNames.has(username)) return ok(username)
  const checked = validateUsername(username)
  if (!checked.ok) return err(`username ${JSON.stringify(username.slice(0, 64))}: ${checked.error}`)
  if (checked.value !== username) return err(`username ${JSON.stringify(username.slice(0, 64))} is not in canonical form`)
  if (passedNames.size >= PASSED_NAMES_MAX) passedNames.clear()
  passedNames.add(username)
  return checked
}

function checkNames(usernames: string[]): Result<true> {
  for (const username of usernames) {
    const name = checkName(username)
    if (!name.ok) return name
  }
  return ok(true)
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

/**
 * Transcript entries a peer proposes: all its own (its node id as origin, its address on every
 * line; `from` is already checked to be the peer's), with names and text a browser could send.
 */
export function checkProposal(peer: Peer, from: string, entries: TranscriptEntry[], maxMessageLength: number): Result<true> {
  for (const e of entries) {
    if (e.origin !== from) return err(`proposal from ${from.slice(0, 300)} claims origin ${JSON.stringify(e.origin.slice(0, 300))}`)
    if (e.nodeAddress !== peer.address) return err(`${e.type} claims node ${JSON.stringify(e.nodeAddress.slice(0, 256))}, sent by ${peer.address}`)
    const names = e.type === 'chat' ? checkName(e.username) : checkNames(e.usernames)
    if (!names.ok) return names
    if (e.type === 'chat') {
      const text = checkMessageText(e.message, maxMessageLength)
      if (!text.ok) return text
    }
  }
  return ok(true)
}

export function checkPeerMessage(m: ChatMessage): Result<true> {
  switch (m.type) {
    case 'presence_snapshot':
      return checkUsers(m.users)
    case 'presence_join':
      return checkUsers([m.user])
    case 'presence_leave': {
      const name = checkName(m.username)
      return name.ok ? ok(true) : name
    }
    case 'presence_batch': {
      const leaves = checkNames(m.leaves)
      return leaves.ok ? checkUsers(m.joins) : leaves
    }
  }
}

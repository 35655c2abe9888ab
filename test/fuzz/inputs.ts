// What the fuzzer sends: random values, random bytes, and mutations of real messages. Pure
// functions of a seeded Rng and what is known about the live cluster (its addresses, ids, term),
// so a seed reproduces the same inputs.
import type { Rng } from './rng'

export interface ClusterFacts {
  systemName: string
  /** Real members: address, id (`address#incarnation`), ports. */
  nodes: { address: string; id: string; incarnation: string; clusterPort: number; httpPort: number }[]
  term: number
  commitIndex: number
  /** Usernames the checker uses: only the impersonation inputs may name them. */
  checkerNames: string[]
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER

/** Numbers that break naive integer handling: 2^53 (where x + 1 === x), negatives, floats, NaN. */
export const NASTY_NUMBERS: readonly number[] = [
  0, -0, -1, 1, 0.5, -0.5, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 32 - 1, MAX_SAFE, MAX_SAFE + 1, 2 ** 53 + 2, 2 ** 63, 2 ** 64,
  -(2 ** 53), 1e308, Number.MIN_VALUE, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY,
]

const NASTY_STRINGS: readonly string[] = [
  '', ' ', '\u0000', '\u202e', 'a\u0000b', '\ud800', '\uffff', '\u3164', 'аlice', 'ａｌｉｃｅ', '💥', '../../etc/passwd',
  '%00', '%', '${jndi:x}', '<script>alert(1)</script>', '{"type":"chat"}', 'null', '__proto__', 'constructor', 'toString',
  'bun://', 'bun://X@', 'bun://WebSocketClusterSystem@127.0.0.1:0', 'bun://WebSocketClusterSystem@[::1]:1#x', '#', '##',
]

export function randomString(rng: Rng, max = 64): string {
  const n = rng.size(max)
  const kind = rng.int(0, 4)
  if (kind === 0) return rng.pick(NASTY_STRINGS)
  if (kind === 1) return 'x'.repeat(n)
  let out = ''
  for (let i = 0; i < n; i++) {
    const c = rng.int(0, 9)
    if (c < 5) out += String.fromCharCode(rng.int(0x20, 0x7e))
    else if (c < 7) out += String.fromCharCode(rng.int(0, 0x1f))
    else if (c < 9) out += String.fromCodePoint(rng.int(0x80, 0x2ffff))
    else out += String.fromCharCode(rng.int(0xd800, 0xdfff)) // lone surrogate
  }
  return out
}

/** encodeURIComponent that does not throw on lone surrogates (they go out as raw %ED%A0%80-style bytes). */
export function encodeQuery(text: string): string {
  return [...text].map((c) => {
    const code = c.codePointAt(0)!
    if (code >= 0xd800 && code <= 0xdfff) return `%ED%${(0xa0 | ((code >> 6) & 0x1f)).toString(16).toUpperCase()}%${(0x80 | (code & 0x3f)).toString(16).toUpperCase()}`
    return encodeURIComponent(c)
  }).join('')
}

/** JSON.stringify that writes bigints as numbers instead of throwing. */
export const toJson = (value: unknown): string => JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? Number(v) : v)) ?? 'null'

/** A long string: over the schema caps (512, 100,000) but under the 1 MiB frame. */
export const longString = (rng: Rng): string => rng.pick(['a', 'é', '가', '\u0000', '\u202e']).repeat(rng.pick([513, 4096, 100_001, 300_000]))

export function randomNumber(rng: Rng): number | bigint {
  const kind = rng.int(0, 3)
  if (kind === 0) return rng.pick(NASTY_NUMBERS)
  if (kind === 1) return rng.int(-1000, 1000)
  if (kind === 2) return (rng.next() - 0.5) * 10 ** rng.int(0, 30)
  return rng.pick([2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n, 2n ** 53n + 1n])
}

/** Any msgpack-able value, nesting bounded by `depth`. */
export function randomValue(rng: Rng, depth = 3): unknown {
  const kind = rng.int(0, depth > 0 ? 9 : 6)
  switch (kind) {
    case 0:
      return null
    case 1:
      return rng.chance(0.5)
    case 2:
      return randomNumber(rng)
    case 3:
    case 4:
      return randomString(rng)
    case 5:
      return rng.bytes(rng.size(64))
    case 6:
      return rng.chance(0.1) ? longString(rng) : undefined
    case 7:
      return Array.from({ length: rng.size(8) }, () => randomValue(rng, depth - 1))
    default: {
      const out: Record<string, unknown> = {}
      for (let i = rng.size(6); i > 0; i--) setOwn(out, rng.chance(0.3) ? rng.pick(FIELD_NAMES) : randomString(rng, 12), randomValue(rng, depth - 1))
      return out
    }
  }
}

/** Sets an own property, even for `__proto__` (plain assignment would swap the prototype instead). */
export function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}

const FIELD_NAMES = ['type', 'from', 'to', 'term', 'entries', 'member', 'users', 'username', 'message', 'nodeAddress', '__proto__', 'constructor']

/** Message templates built from real values: what a member would send, before mutation. */
export function templates(rng: Rng, facts: ClusterFacts, self: { address: string; id: string }): Record<string, unknown>[] {
  const node = rng.pick(facts.nodes)
  const to = rng.chance(0.8) ? node.id : node.address
  const from = self.id
  const member = { address: self.address, incarnation: self.id.slice(self.id.lastIndexOf('#') + 1), httpUrl: `http://127.0.0.1:${rng.int(1, 65535)}` }
  const term = facts.term + rng.pick([0, 0, 1, 2, 1000])
  const other = rng.pick(facts.nodes)
  const user = { username: rng.pick(['fuzzuser', 'zz', 'ab.c', '민']), connectedAt: Date.now() }
  return [
    { type: 'join_request', from, to, member },
    { type: 'leave_request', from, to },
    { type: 'leader_hint', from, to, leader: rng.chance(0.5) ? other.address : null },
    { type: 'not_member', from, to },
    {
      type: 'append_entries', from, to, term, prevIndex: facts.commitIndex, prevTerm: facts.term,
      entries: rng.chance(0.5) ? [] : [{ term, change: rng.pick([{ type: 'noop' }, { type: 'add', member }, { type: 'remove', id: other.id, reason: 'down' }]) }],
      commit: facts.commitIndex, unreachable: rng.chance(0.7) ? [] : [other.id],
    },
    { type: 'append_response', from, to, term, success: rng.chance(0.5), matchIndex: facts.commitIndex },
    { type: 'vote_request', from, to, term, lastIndex: facts.commitIndex, lastTerm: facts.term, preVote: rng.chance(0.5), transfer: rng.chance(0.2) },
    { type: 'vote_response', from, to, term, granted: rng.chance(0.5), preVote: rng.chance(0.5) },
    { type: 'timeout_now', from, to, term },
    { type: 'chat', username: user.username, message: randomString(rng, 40) || 'hi', nodeAddress: self.address, timestamp: Date.now() },
    { type: 'presence_snapshot', users: rng.chance(0.5) ? [] : [user] },
    { type: 'presence_join', user },
    { type: 'presence_leave', username: user.username },
  ]
}

export const RAFT_TYPE_NAMES = ['join_request', 'leave_request', 'leader_hint', 'not_member', 'append_entries', 'append_response', 'vote_request', 'vote_response', 'timeout_now']
export const CHAT_TYPE_NAMES = ['chat', 'presence_snapshot', 'presence_join', 'presence_leave']

/** Applies 1-3 mutations to a deep copy of `message`: wrong types, huge or negative numbers, long strings, unknown fields, swapped types. */
export function mutate(rng: Rng, message: Record<string, unknown>, facts: ClusterFacts): Record<string, unknown> {
  const out = structuredClone(message) as Record<string, unknown>
  for (let i = rng.int(1, 3); i > 0; i--) {
    const target = pickObject(rng, out)
    const keys = Object.keys(target)
    const key = keys.length > 0 && rng.chance(0.85) ? rng.pick(keys) : randomString(rng, 10)
    const op = rng.int(0, 9)
    const set = (k: string, v: unknown) => setOwn(target, k, v)
    const current = Object.getOwnPropertyDescriptor(target, key)?.value
    if (op === 0) delete target[key]
    else if (op === 1) set(key, randomNumber(rng))
    else if (op === 2) set(key, rng.pick(NASTY_NUMBERS))
    else if (op === 3) set(key, rng.chance(0.5) ? longString(rng) : randomString(rng))
    else if (op === 4) set(key, randomValue(rng, 2))
    else if (op === 5) set('type', rng.pick([...RAFT_TYPE_NAMES, ...CHAT_TYPE_NAMES, 'hello', randomString(rng, 12)]))
    else if (op === 6) set(randomString(rng, 16) || 'extra', randomValue(rng, 1))
    else if (op === 7) set(key, rng.pick(facts.nodes).id)
    else if (op === 8) set(key, rng.pick(facts.nodes).address)
    else if (typeof current === 'number') set(key, current + rng.pick([-1, 1, 2 ** 53, -(2 ** 53), 0.5]))
    else set(key, null)
  }
  return out
}

function pickObject(rng: Rng, root: Record<string, unknown>): Record<string, unknown> {
  let current = root
  for (let depth = 0; depth < 3 && rng.chance(0.4); depth++) {
    const children = Object.values(current).flatMap((v) => (Array.isArray(v) ? v : [v])).filter((v): v is Record<string, unknown> => typeof v === 'object' && v !== null && !ArrayBuffer.isView(v))
    if (children.length === 0) break
    current = rng.pick(children)
  }
  return current
}

/**
 * Bytes that look like a frame header: truncated (1-3 bytes), oversize, zero, or a lie about the
 * body. `refused` when the node must close the connection (the header alone is over the cap, or
 * an empty body is not one msgpack value).
 */
export function lengthPrefixGame(rng: Rng, body: Uint8Array): { chunks: Uint8Array[]; refused: boolean; what: string } {
  const header = (n: number) => new Uint8Array([n >>> 24, n >>> 16, n >>> 8, n].map((b) => b & 0xff))
  switch (rng.int(0, 5)) {
    case 0:
      return { chunks: [header(body.length).subarray(0, rng.int(1, 3))], refused: false, what: 'truncated header' }
    case 1: {
      const n = rng.pick([1024 * 1024 + 1, 0x7fffffff, 0xffffffff, 16 * 1024 * 1024])
      return { chunks: [header(n), body], refused: true, what: `header of ${n} bytes` }
    }
    case 2:
      return { chunks: [header(0)], refused: true, what: 'empty body' }
    case 3:
      return { chunks: [header(body.length + rng.int(1, 1000)), body], refused: false, what: 'header longer than the body' }
    case 4:
      return { chunks: [header(Math.max(0, body.length - rng.int(1, Math.max(1, body.length)))), body], refused: false, what: 'header shorter than the body' }
    default:
      return { chunks: [header(1024 * 1024), rng.bytes(rng.int(1, 4096))], refused: false, what: 'header at the cap, body never completed' }
  }
}

/** Splits bytes into 1..n pieces at random points, so frames arrive across many writes. */
export function split(rng: Rng, bytes: Uint8Array, pieces: number): Uint8Array[] {
  const cuts = new Set<number>()
  for (let i = 1; i < pieces && bytes.length > 1; i++) cuts.add(rng.int(1, bytes.length - 1))
  const points = [0, ...[...cuts].sort((a, b) => a - b), bytes.length]
  const out: Uint8Array[] = []
  for (let i = 0; i + 1 < points.length; i++) if (points[i + 1]! > points[i]!) out.push(bytes.subarray(points[i], points[i + 1]))
  return out
}

/** A msgpack value nested `depth` arrays deep (raw bytes: fixarray of 1, repeated, then nil). */
export function deepNesting(depth: number): Uint8Array {
  const bytes = new Uint8Array(depth + 1).fill(0x91)
  bytes[depth] = 0xc0
  return bytes
}

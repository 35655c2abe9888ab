// Inputs on the cluster port: raw bytes, length-prefix games, dropped connections, bad hellos,
// random msgpack, and mutations of real Raft, chat and presence messages, before and after the
// handshake. An input the node must refuse (a frame that is not a valid hello first, or fails the
// schemas afterwards) is expected to close the connection; one that stays open is a finding.
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from '../../src/cluster/codec'
import { PROTOCOL_VERSION, RAFT_TYPES, validateHello, validateRaftMessage } from '../../src/cluster/messages'
import { validateChatMessage } from '../../src/chat/messages'
import type { Typed } from '../../src/cluster/validate'
import { helloFor, openClusterConnection, openRawConnection, type ClusterConn } from './cluster-conn'
import { closedByNode, count, type FuzzContext, type Kind } from './context'
import { CHAT_TYPE_NAMES, deepNesting, lengthPrefixGame, mutate, RAFT_TYPE_NAMES, randomValue, split, templates, toJson, type ClusterFacts } from './inputs'
import type { Rng } from './rng'
import { checkerText } from './checker'

/** What the node decodes from `value`: judge inputs by that, not by the JS value (msgpack drops undefined, turns uint64 into bigint...). */
function roundTrip(value: unknown): unknown {
  try {
    return new FrameDecoder(DEFAULT_MAX_FRAME_BYTES).push(encodeFrame(value))[0]
  } catch {
    return undefined
  }
}

/** What the node accepts after the handshake (the same rule as src/cluster/node.ts), judged on what it decodes. */
export function acceptedAfterHello(sent: unknown): boolean {
  const value = roundTrip(sent)
  const type = (value as Typed | null)?.type
  if (type === 'hello') return false
  return RAFT_TYPES.has(type as string) ? validateRaftMessage(value).ok : validateChatMessage(value).ok
}

/** What the node accepts as the first frame (the same rule as src/cluster/tcp/inbound.ts). */
export function acceptedAsHello(sent: unknown, systemName: string): boolean {
  const value = roundTrip(sent)
  const checked = validateHello(value)
  return checked.ok && checked.value.version === PROTOCOL_VERSION && checked.value.systemName === systemName
}

const incarnation = (rng: Rng) => rng.int(0, 0xffffffff).toString(16).padStart(8, '0')

type Identity = { address: string; id: string; incarnation: string }

/** A non-member identity on one of the fuzzer's own listening ports. */
function impostor(ctx: FuzzContext): Identity {
  const { address } = ctx.rng.pick(ctx.impostors)
  const inc = incarnation(ctx.rng)
  return { address, id: `${address}#${inc}`, incarnation: inc }
}

/** A real member's address, with its real incarnation or an invented one. */
function spoofed(ctx: FuzzContext, facts: ClusterFacts): Identity {
  const node = ctx.rng.pick(facts.nodes)
  const inc = ctx.rng.chance(0.5) ? node.incarnation : incarnation(ctx.rng)
  return { address: node.address, id: `${node.address}#${inc}`, incarnation: inc }
}

const target = (ctx: FuzzContext) => ctx.rng.pick(ctx.facts().nodes)

async function connect(ctx: FuzzContext, port: number, as: Identity | null): Promise<ClusterConn | null> {
  const conn = as ? await openClusterConnection(port, ctx.handshake, as.address, as.incarnation) : await openRawConnection(port)
  ctx.stats.connections++
  if (!conn || conn.isClosed()) {
    count(ctx.stats, as ? 'handshake_refused' : 'connect_failed')
    return null
  }
  return conn
}

/** Sends each chunk as its own write, spending the byte budget. False when stopped or closed. */
async function send(ctx: FuzzContext, conn: ClusterConn, chunks: Uint8Array[]): Promise<boolean> {
  for (const chunk of chunks) {
    if (!(await ctx.spend(chunk.length))) return false
    if (!conn.write(chunk)) return false
    ctx.stats.bytes += chunk.length
    if (chunks.length > 1) await conn.flushed()
  }
  return true
}

/** Ends an input: the node must have closed (when `refused`), else we linger briefly and go. */
async function finish(ctx: FuzzContext, conn: ClusterConn, refused: string | null): Promise<void> {
  if (refused !== null) {
    if (await closedByNode(conn, ctx.refusalWaitMs)) count(ctx.stats, 'closed_by_node')
    else if (!ctx.stopped()) ctx.anomaly(`node kept the connection open after ${refused}`)
  } else {
    if (await closedByNode(conn, ctx.rng.int(0, 300))) count(ctx.stats, 'closed_by_node')
  }
  if (ctx.rng.chance(0.5)) conn.end()
  conn.terminate()
}

const frames = (ctx: FuzzContext, values: unknown[]) => values.flatMap((v) => {
  try {
    return [encodeFrame(v)]
  } catch {
    count(ctx.stats, 'unencodable')
    return []
  }
})

async function withConn(ctx: FuzzContext, as: Identity | null, body: (conn: ClusterConn) => Promise<string | null>): Promise<void> {
  const conn = await connect(ctx, target(ctx).clusterPort, as)
  if (!conn) return
  const untrack = ctx.track(() => conn.terminate())
  try {
    ctx.stats.inputs++
    const refused = await body(conn)
    await finish(ctx, conn, refused)
  } finally {
    untrack()
    conn.terminate()
  }
}

/** Mutates templates of the given types until the result is (or is not) accepted after a hello. */
function messageOf(ctx: FuzzContext, as: Identity, types: string[], wantValid: boolean, mutateP: number): Record<string, unknown> | null {
  const facts = ctx.facts()
  for (let attempt = 0; attempt < 8; attempt++) {
    const base = ctx.rng.pick(templates(ctx.rng, facts, as).filter((t) => types.includes(t.type as string)))
    const message = wantValid && !ctx.rng.chance(mutateP) ? base : mutate(ctx.rng, base, facts)
    if (acceptedAfterHello(message) === wantValid) return message
  }
  return null
}

export const clusterKinds: Kind[] = [
  {
    name: 'cluster.garbage',
    port: 'cluster',
    weight: 3,
    about: 'random bytes, before or after a hello, split across writes',
    run: (ctx) =>
      withConn(ctx, ctx.rng.chance(0.5) ? impostor(ctx) : null, async (conn) => {
        const bytes = ctx.rng.bytes(1 + ctx.rng.size(8192))
        await send(ctx, conn, split(ctx.rng, bytes, ctx.rng.int(1, 4)))
        return null
      }),
  },
  {
    name: 'cluster.length',
    port: 'cluster',
    weight: 3,
    about: 'truncated, oversize, zero and lying length prefixes',
    run: (ctx) =>
      withConn(ctx, ctx.rng.chance(0.5) ? impostor(ctx) : null, async (conn) => {
        const body = encodeFrame(randomValue(ctx.rng, 2)).subarray(4)
        const game = lengthPrefixGame(ctx.rng, body)
        if (!(await send(ctx, conn, game.chunks))) return null
        return game.refused ? game.what : null
      }),
  },
  {
    name: 'cluster.truncated',
    port: 'cluster',
    weight: 2,
    about: 'a real frame (hello or message) cut off mid-way, then the connection dropped',
    run: async (ctx) => {
      const as = impostor(ctx)
      const afterHello = ctx.rng.chance(0.5)
      const value = afterHello ? messageOf(ctx, as, [...RAFT_TYPE_NAMES, ...CHAT_TYPE_NAMES], true, 0.3) : helloFor(ctx.handshake, as.address, as.incarnation)
      await withConn(ctx, afterHello ? as : null, async (conn) => {
        const frame = encodeFrame(value)
        await send(ctx, conn, split(ctx.rng, frame.subarray(0, ctx.rng.int(1, frame.length - 1)), ctx.rng.int(1, 3)))
        return null
      })
    },
  },
  {
    name: 'cluster.hello',
    port: 'cluster',
    weight: 2,
    about: 'mutated hellos (version, system name, long or wrong fields), and a second hello',
    run: async (ctx) => {
      const as = impostor(ctx)
      const hello = helloFor(ctx.handshake, as.address, as.incarnation) as unknown as Record<string, unknown>
      const second = ctx.rng.chance(0.2)
      await withConn(ctx, second ? as : null, async (conn) => {
        const value = second ? hello : mutate(ctx.rng, hello, ctx.facts())
        const refused = second || !acceptedAsHello(value, ctx.handshake.systemName)
        await send(ctx, conn, frames(ctx, [value]))
        return refused ? (second ? 'a second hello' : 'an invalid hello') : null
      })
    },
  },
  {
    name: 'cluster.msgpack',
    port: 'cluster',
    weight: 3,
    about: 'random msgpack values (and 100k-deep nesting), before or after a hello',
    run: async (ctx) => {
      const authed = ctx.rng.chance(0.8)
      await withConn(ctx, authed ? impostor(ctx) : null, async (conn) => {
        const deep = ctx.rng.chance(0.05)
        const values = Array.from({ length: ctx.rng.int(1, 4) }, () => randomValue(ctx.rng, 3))
        const encoded = deep ? [(() => { const b = deepNesting(100_000); const f = new Uint8Array(4 + b.length); new DataView(f.buffer).setUint32(0, b.length); f.set(b, 4); return f })()] : frames(ctx, values)
        if (!(await send(ctx, conn, encoded))) return null
        const refused = deep || values.some((v) => (authed ? !acceptedAfterHello(v) : !acceptedAsHello(v, ctx.handshake.systemName)))
        return refused ? (deep ? 'a 100k-deep msgpack value' : authed ? 'a random msgpack value after hello' : 'a random msgpack value before hello') : null
      })
    },
  },
  {
    name: 'cluster.invalid',
    port: 'cluster',
    weight: 4,
    about: 'mutated Raft/chat/presence messages that fail the schemas (wrong types, 2^53, NaN, -1, long strings, unknown types)',
    run: async (ctx) => {
      const as = ctx.rng.chance(0.7) ? impostor(ctx) : spoofed(ctx, ctx.facts())
      const message = messageOf(ctx, as, [...RAFT_TYPE_NAMES, ...CHAT_TYPE_NAMES], false, 1)
      if (!message) return
      await withConn(ctx, as, async (conn) => ((await send(ctx, conn, frames(ctx, [message]))) ? `an invalid ${String(message.type).slice(0, 20)}` : null))
    },
  },
  {
    name: 'cluster.unauth',
    port: 'cluster',
    weight: 2,
    about: 'valid Raft/chat/presence messages sent before any handshake',
    run: async (ctx) => {
      const as = ctx.rng.chance(0.5) ? impostor(ctx) : spoofed(ctx, ctx.facts())
      const message = messageOf(ctx, as, [...RAFT_TYPE_NAMES, ...CHAT_TYPE_NAMES], true, 0.3)
      if (!message) return
      await withConn(ctx, null, async (conn) => ((await send(ctx, conn, frames(ctx, [message]))) ? `${message.type} before the handshake` : null))
    },
  },
  {
    name: 'cluster.foreign_raft',
    port: 'cluster',
    weight: 3,
    about: 'schema-valid but wrong Raft messages from a non-member (huge terms, fake joins, votes, entries)',
    run: async (ctx) => {
      const as = impostor(ctx)
      await withConn(ctx, as, async (conn) => {
        const messages = Array.from({ length: ctx.rng.int(1, 4) }, () => messageOf(ctx, as, RAFT_TYPE_NAMES, true, 0.6)).filter((m) => m !== null)
        await send(ctx, conn, frames(ctx, messages))
        return null
      })
    },
  },
  {
    name: 'cluster.foreign_chat',
    port: 'cluster',
    weight: 3,
    about: 'schema-valid chat and presence from a non-member, never naming checker users',
    run: async (ctx) => {
      const as = impostor(ctx)
      await withConn(ctx, as, async (conn) => {
        const names = ctx.facts().checkerNames
        const messages = Array.from({ length: ctx.rng.int(1, 4) }, () => messageOf(ctx, as, CHAT_TYPE_NAMES, true, 0.6)).filter((m) => m !== null && !toJson(m).includes(names[0]!.slice(0, 8)))
        await send(ctx, conn, frames(ctx, messages))
        return null
      })
    },
  },
  {
    name: 'cluster.spoof_raft',
    port: 'cluster',
    weight: 2,
    about: "schema-valid Raft messages claiming to be a real member (its address, `from` its id)",
    run: async (ctx) => {
      const as = spoofed(ctx, ctx.facts())
      await withConn(ctx, as, async (conn) => {
        const messages = Array.from({ length: ctx.rng.int(1, 3) }, () => messageOf(ctx, as, RAFT_TYPE_NAMES, true, 0.6)).filter((m) => m !== null)
        await send(ctx, conn, frames(ctx, messages))
        return null
      })
    },
  },
  {
    name: 'cluster.spoof_chat',
    port: 'cluster',
    weight: 2,
    about: "chat and presence claiming to be a real member's, naming the checker users",
    run: async (ctx) => {
      const facts = ctx.facts()
      const as = spoofed(ctx, facts)
      const name = ctx.rng.pick(facts.checkerNames)
      const message = ctx.rng.pick<Record<string, unknown>>([
        { type: 'chat', username: name, message: checkerText(ctx.rng.int(1, 50)), nodeAddress: as.address, timestamp: Date.now() },
        { type: 'presence_join', user: { username: name, connectedAt: 0 } },
        { type: 'presence_leave', username: name },
        { type: 'presence_snapshot', users: [] },
      ])
      await withConn(ctx, as, async (conn) => {
        await send(ctx, conn, frames(ctx, [message]))
        return null
      })
    },
  },
]

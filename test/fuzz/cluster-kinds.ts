// Inputs on the cluster port of nodes that hold a cluster secret, on two kinds of connection:
//   - outsiders (outsider.ts): no handshake, a hello without the secret or under a wrong one, a
//     replayed recording, a genuine hello followed by a spoiled proof, garbage before or inside
//     the handshake. Whatever they send, the node must close them (at once, or when the handshake
//     times out), count each in `authFailures`, and nothing they say may reach the cluster;
//   - insiders, which run the genuine handshake with the secret (openClusterConnection) and then
//     send mutated, structurally wrong or lying frames: bad schemas, a Raft `from` that is not the
//     connection's own node, chat claiming another node, usernames and text the peer rules refuse.
//     The node must close the connection and count it in `invalid`.
// What the node must do with each byte stream is worked out by verdict.ts from the node's own
// rules; an input the node must refuse that stays open, or an acceptable one that is closed, is a
// finding.
//
// `cluster.insider_raft` (valid Raft from an authenticated non-member) is not in the CI run: a
// holder of the secret is trusted by design (README, "Security: the cluster port"), and valid Raft
// traffic from one can still disturb elections; run it by name to look for worse.
import { encodeFrame } from '../../src/cluster/codec'
import type { HandshakeSelf } from '../../src/cluster/handshake'
import { checkerText } from './checker'
import { helloFor, openClusterConnection, type ClusterConn } from './cluster-conn'
import { closedByNode, count, type FuzzContext, type Kind } from './context'
import { CHAT_TYPE_NAMES, deepNesting, lengthPrefixGame, mutate, RAFT_TYPE_NAMES, randomValue, split, templates, type ClusterFacts } from './inputs'
import { openOutsider, OUTSIDER_MODES, type OutsiderMode } from './outsider'
import type { Rng } from './rng'
import { acceptedAfterAuth, nodeVerdict, refusalAfterAuth, roundTrip } from './verdict'

const incarnation = (rng: Rng) => rng.int(0, 0xffffffff).toString(16).padStart(8, '0')

type Identity = { address: string; id: string; incarnation: string }
type Node = ClusterFacts['nodes'][number]

const identity = (address: string, inc: string): Identity => ({ address, id: `${address}#${inc}`, incarnation: inc })

/** A non-member identity on one of the fuzzer's own listening ports, for authenticated insiders. */
const impostor = (ctx: FuzzContext) => identity(ctx.rng.pick(ctx.impostors).address, incarnation(ctx.rng))
/** A non-member identity that only unauthenticated connections claim. */
const outsider = (ctx: FuzzContext) => identity(ctx.rng.pick(ctx.outsiders).address, incarnation(ctx.rng))

/** A real member's address, with its real incarnation or an invented one. */
function spoofed(ctx: FuzzContext, facts: ClusterFacts): Identity {
  const node = ctx.rng.pick(facts.nodes)
  return identity(node.address, ctx.rng.chance(0.5) ? node.incarnation : incarnation(ctx.rng))
}

/** The node as a listener: its address and the cluster secret. */
const listenerSelf = (ctx: FuzzContext, node: Node): HandshakeSelf => ({
  systemName: ctx.handshake.systemName,
  address: node.address,
  incarnation: node.incarnation,
  secrets: ctx.handshake.secret ? [ctx.handshake.secret] : [],
})

/** Who the connection is: an insider completes the genuine handshake; an outsider opens in `mode` (random if not given). */
type Who = { insider: Identity } | { outsider: Identity; mode?: OutsiderMode }

interface Session {
  conn: ClusterConn
  node: Node
  /** What was written before the input (an outsider's opening). */
  prefix: Uint8Array[]
  /** The address an insider's handshake claimed; null for an outsider. */
  authenticatedAs: string | null
}

async function open(ctx: FuzzContext, who: Who): Promise<Session | null> {
  const node = ctx.rng.pick(ctx.facts().nodes)
  ctx.stats.connections++
  if ('insider' in who) {
    ctx.tally.authedConnections++
    const conn = await openClusterConnection(node.clusterPort, ctx.handshake, who.insider.address, who.insider.incarnation)
    if (!conn) {
      count(ctx.stats, 'handshake_refused')
      if (!ctx.stopped()) ctx.anomaly('the node refused (or did not answer) a genuine handshake with the cluster secret')
      return null
    }
    return { conn, node, prefix: [], authenticatedAs: who.insider.address }
  }
  const mode = who.mode ?? ctx.rng.pick(OUTSIDER_MODES)
  const opened = await openOutsider(ctx.rng, mode, ctx.handshake, node.clusterPort, who.outsider.address, who.outsider.incarnation, ctx.facts())
  ctx.tally.unauthConnections++
  if (!opened) {
    count(ctx.stats, 'connect_failed')
    return null
  }
  ctx.stats.connections += opened.extraConnections
  ctx.tally.authedConnections += opened.extraConnections
  count(ctx.stats, `via_${mode}`)
  if (opened.opening.finding) ctx.anomaly(opened.opening.finding)
  return { conn: opened.opening.conn, node, prefix: opened.opening.written, authenticatedAs: null }
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

/** The node's reaction to everything written on `session`, judged by verdict.ts. */
async function finish(ctx: FuzzContext, session: Session, sent: Uint8Array[], complete: boolean): Promise<void> {
  const { conn } = session
  const authed = session.authenticatedAs !== null
  const refusedByNode = () => {
    count(ctx.stats, 'closed_by_node')
    if (authed) ctx.tally.authedRefused++
    else ctx.tally.unauthRefused++
  }
  const verdict = nodeVerdict([...session.prefix, ...sent], listenerSelf(ctx, session.node), session.authenticatedAs)
  const who = authed ? 'an authenticated' : 'an unauthenticated'
  if (!complete) {
    // Stopped, or the node closed while we wrote: judge nothing, but count a close.
    if (await closedByNode(conn, 0)) refusedByNode()
  } else if (verdict.outcome === 'refused') {
    if (await closedByNode(conn, ctx.refusalWaitMs)) refusedByNode()
    else if (!ctx.stopped()) ctx.anomaly(`node kept ${who} connection open after ${verdict.why}`)
  } else if (verdict.outcome === 'waiting' && ctx.rng.chance(0.15)) {
    // Now and then, wait out the handshake timeout: an unauthenticated connection must not stay.
    if (await closedByNode(conn, ctx.handshakeTimeoutMs + ctx.refusalWaitMs)) {
      count(ctx.stats, 'closed_by_timeout')
      ctx.tally.unauthRefused++
    } else if (!ctx.stopped()) ctx.anomaly('node kept an unauthenticated connection open past its handshake timeout')
  } else if (await closedByNode(conn, ctx.rng.int(0, 300))) {
    refusedByNode()
    if (verdict.outcome === 'open' && !ctx.stopped()) ctx.anomaly('node closed an authenticated connection that sent only frames it must accept')
  }
  // An unauthenticated connection may get the node's hello_ack and nothing else.
  if (!authed) {
    const types = conn.received.map((v) => {
      const type = (v as { type?: unknown } | null)?.type
      return typeof type === 'string' ? type.slice(0, 30) : typeof type
    })
    if (types.length > 1 || types.some((t) => t !== 'hello_ack')) ctx.anomaly(`node sent ${types.join(', ')} on an unauthenticated connection`)
  }
  if (ctx.rng.chance(0.5)) conn.end()
  conn.terminate()
}

/** Opens a connection as `who`, runs `body` (which returns what it wrote, or null if it could not finish), judges the node's reaction. */
async function withConn(ctx: FuzzContext, who: Who, body: (session: Session) => Promise<Uint8Array[] | null>): Promise<void> {
  const session = await open(ctx, who)
  if (!session) return
  const untrack = ctx.track(() => session.conn.terminate())
  try {
    ctx.stats.inputs++
    const wrote = await body(session)
    await finish(ctx, session, wrote ?? [], wrote !== null)
  } finally {
    untrack()
    session.conn.terminate()
  }
}

/** Writes `chunks`; returns them, or null when not all could be written. */
const write = async (ctx: FuzzContext, session: Session, chunks: Uint8Array[]) => ((await send(ctx, session.conn, chunks)) ? chunks : null)

const frames = (ctx: FuzzContext, values: unknown[]) =>
  values.flatMap((v) => {
    try {
      return [encodeFrame(v)]
    } catch {
      count(ctx.stats, 'unencodable')
      return []
    }
  })

/** Mutates templates of the given types (as sent by `as`) until a node would (or would not) accept the result from `peer`. */
function messageOf(ctx: FuzzContext, as: Identity, types: string[], wantValid: boolean, mutateP: number, peer = as.address): Record<string, unknown> | null {
  const facts = ctx.facts()
  for (let attempt = 0; attempt < 8; attempt++) {
    const base = ctx.rng.pick(templates(ctx.rng, facts, as).filter((t) => types.includes(t.type as string)))
    const message = wantValid && !ctx.rng.chance(mutateP) ? base : mutate(ctx.rng, base, facts)
    if (acceptedAfterAuth(message, peer) === wantValid) return message
  }
  return null
}

/** Half the time an insider (an impostor with the secret), else an outsider in a random way. */
const eitherSide = (ctx: FuzzContext, insiderP = 0.5): Who => (ctx.rng.chance(insiderP) ? { insider: impostor(ctx) } : { outsider: outsider(ctx) })

const ALL_TYPES = [...RAFT_TYPE_NAMES, ...CHAT_TYPE_NAMES]

/** Usernames and texts that the peer rules refuse (the browser's rules): controls, overrides, look-alike forms, blanks, too long. */
const BAD_NAMES = ['', ' ', 'a\u0000b', '\u202eevil', 'tab\tname', 'ａｌｉｃｅ', '\u3164', 'a' + '\u0301'.repeat(31), 'x'.repeat(129), 'new\nline', 'bell\u0007']
const BAD_TEXTS = ['', '   ', 'nul\u0000byte', 'esc\u001b[31m', 'del\u007f', 'c1\u0085', 'x'.repeat(2001)]

export const clusterKinds: Kind[] = [
  {
    name: 'cluster.garbage',
    port: 'cluster',
    weight: 3,
    about: 'random bytes, split across writes, on an unauthenticated or an authenticated connection',
    run: (ctx) =>
      withConn(ctx, eitherSide(ctx), async (session) => {
        const bytes = ctx.rng.bytes(1 + ctx.rng.size(8192))
        return write(ctx, session, split(ctx.rng, bytes, ctx.rng.int(1, 4)))
      }),
  },
  {
    name: 'cluster.length',
    port: 'cluster',
    weight: 3,
    about: 'truncated, oversize (over 4 KiB before authentication, over 1 MiB after), zero and lying length prefixes',
    run: (ctx) =>
      withConn(ctx, eitherSide(ctx), async (session) => {
        const body = encodeFrame(randomValue(ctx.rng, 2)).subarray(4)
        const game = ctx.rng.chance(0.2) && session.authenticatedAs === null ? { chunks: [new Uint8Array([0, 0, 0x10, 0x01]), ctx.rng.bytes(64)] } : lengthPrefixGame(ctx.rng, body)
        return write(ctx, session, game.chunks)
      }),
  },
  {
    name: 'cluster.truncated',
    port: 'cluster',
    weight: 2,
    about: 'a real frame (a hello before the handshake, a message after it) cut off mid-way, then the connection dropped',
    run: async (ctx) => {
      const who = eitherSide(ctx)
      const as = 'insider' in who ? who.insider : who.outsider
      const value = 'insider' in who ? messageOf(ctx, as, ALL_TYPES, true, 0.3) : helloFor(ctx.handshake, as.address, as.incarnation)
      if (value === null) return
      await withConn(ctx, 'insider' in who ? who : { outsider: as, mode: 'raw' }, async (session) => {
        const frame = encodeFrame(value)
        return write(ctx, session, split(ctx.rng, frame.subarray(0, ctx.rng.int(1, frame.length - 1)), ctx.rng.int(1, 3)))
      })
    },
  },
  {
    name: 'cluster.hello',
    port: 'cluster',
    weight: 2,
    about: 'mutated hellos (version, system name, auth mode, nonce, long or wrong fields) as the first frame; a handshake frame after authentication',
    run: async (ctx) => {
      const afterAuth = ctx.rng.chance(0.2)
      const who: Who = afterAuth ? { insider: impostor(ctx) } : { outsider: outsider(ctx), mode: 'raw' }
      const as = 'insider' in who ? who.insider : who.outsider
      const hello = helloFor(ctx.handshake, as.address, as.incarnation) as unknown as Record<string, unknown>
      await withConn(ctx, who, async (session) => {
        const value = afterAuth
          ? ctx.rng.pick<unknown>([hello, { type: 'auth', proof: ctx.rng.bytes(32) }, { type: 'hello_ack', ...hello }])
          : ctx.rng.chance(0.15)
            ? hello
            : mutate(ctx.rng, hello, ctx.facts())
        return write(ctx, session, frames(ctx, [value]))
      })
    },
  },
  {
    name: 'cluster.handshake',
    port: 'cluster',
    weight: 3,
    about: 'handshakes that must fail: no secret, a wrong secret, a replayed recording, a spoiled or reflected proof, garbage before or inside it; then valid frames',
    run: async (ctx) => {
      const as = ctx.rng.chance(0.7) ? outsider(ctx) : spoofed(ctx, ctx.facts())
      await withConn(ctx, { outsider: as }, async (session) => {
        const messages = Array.from({ length: ctx.rng.int(0, 2) }, () => messageOf(ctx, as, ALL_TYPES, true, 0)).filter((m) => m !== null)
        return write(ctx, session, frames(ctx, messages))
      })
    },
  },
  {
    name: 'cluster.msgpack',
    port: 'cluster',
    weight: 3,
    about: 'random msgpack values (and 100k-deep nesting), on an unauthenticated or an authenticated connection',
    run: (ctx) =>
      withConn(ctx, eitherSide(ctx, 0.7), async (session) => {
        if (ctx.rng.chance(0.05)) {
          const b = deepNesting(100_000)
          const f = new Uint8Array(4 + b.length)
          new DataView(f.buffer).setUint32(0, b.length)
          f.set(b, 4)
          return write(ctx, session, [f])
        }
        return write(ctx, session, frames(ctx, Array.from({ length: ctx.rng.int(1, 4) }, () => randomValue(ctx.rng, 3))))
      }),
  },
  {
    name: 'cluster.invalid',
    port: 'cluster',
    weight: 4,
    about: 'authenticated: mutated Raft/chat/presence messages the node refuses (wrong types, 2^53, NaN, -1, long strings, unknown types, other senders)',
    run: async (ctx) => {
      const as = ctx.rng.chance(0.7) ? impostor(ctx) : spoofed(ctx, ctx.facts())
      const message = messageOf(ctx, as, ALL_TYPES, false, 1)
      if (!message) return
      await withConn(ctx, { insider: as }, (session) => write(ctx, session, frames(ctx, [message])))
    },
  },
  {
    name: 'cluster.unauth',
    port: 'cluster',
    weight: 2,
    about: 'valid Raft/chat/presence messages with no handshake at all',
    run: async (ctx) => {
      const as = ctx.rng.chance(0.5) ? outsider(ctx) : spoofed(ctx, ctx.facts())
      const message = messageOf(ctx, as, ALL_TYPES, true, 0.3)
      if (!message) return
      await withConn(ctx, { outsider: as, mode: 'raw' }, (session) => write(ctx, session, frames(ctx, [message])))
    },
  },
  {
    name: 'cluster.foreign_raft',
    port: 'cluster',
    weight: 3,
    about: 'unauthenticated: Raft messages from a non-member (huge terms, fake joins, votes, entries)',
    run: async (ctx) => {
      const as = outsider(ctx)
      await withConn(ctx, { outsider: as }, async (session) => {
        const messages = Array.from({ length: ctx.rng.int(1, 4) }, () => messageOf(ctx, as, RAFT_TYPE_NAMES, true, 0.6)).filter((m) => m !== null)
        return write(ctx, session, frames(ctx, messages))
      })
    },
  },
  {
    name: 'cluster.foreign_chat',
    port: 'cluster',
    weight: 3,
    about: 'unauthenticated: chat and presence from a non-member, some naming the checker users',
    run: async (ctx) => {
      const as = outsider(ctx)
      await withConn(ctx, { outsider: as }, async (session) => {
        const names = ctx.facts().checkerNames
        const messages = Array.from({ length: ctx.rng.int(1, 4) }, () => messageOf(ctx, as, CHAT_TYPE_NAMES, true, 0.6))
          .filter((m) => m !== null)
          .map((m) => (ctx.rng.chance(0.3) && 'username' in m ? { ...m, username: ctx.rng.pick(names) } : m))
        return write(ctx, session, frames(ctx, messages))
      })
    },
  },
  {
    name: 'cluster.spoof_raft',
    port: 'cluster',
    weight: 2,
    about: "Raft messages as a real member: unauthenticated claiming its address, or authenticated as another node with `from` the member's id",
    run: async (ctx) => {
      const facts = ctx.facts()
      const member = spoofed(ctx, facts)
      const who: Who = ctx.rng.chance(0.5) ? { outsider: member } : { insider: impostor(ctx) }
      const peer = 'insider' in who ? who.insider.address : member.address
      await withConn(ctx, who, async (session) => {
        const messages = Array.from({ length: ctx.rng.int(1, 3) }, () => messageOf(ctx, member, RAFT_TYPE_NAMES, true, 0.6, member.address)).filter((m) => m !== null)
        // An insider's spoofed `from` must be refused (verdict.ts); make sure at least one frame claims the member.
        if ('insider' in who && messages.every((m) => refusalAfterAuth(roundTrip(m), peer) === null)) return null
        return write(ctx, session, frames(ctx, messages))
      })
    },
  },
  {
    name: 'cluster.spoof_chat',
    port: 'cluster',
    weight: 2,
    about: "chat and presence in the checker users' names: unauthenticated claiming a member's address, or authenticated with chat claiming a member's node",
    run: async (ctx) => {
      const facts = ctx.facts()
      const member = spoofed(ctx, facts)
      const name = ctx.rng.pick(facts.checkerNames)
      const chat = { type: 'chat', username: name, message: checkerText(ctx.rng.int(1, 50)), nodeAddress: member.address, timestamp: Date.now() }
      if (ctx.rng.chance(0.5)) {
        // An insider (another identity) whose chat claims the member's node: refused by the peer rules.
        await withConn(ctx, { insider: impostor(ctx) }, (session) => write(ctx, session, frames(ctx, [chat])))
        return
      }
      const message = ctx.rng.pick<Record<string, unknown>>([
        chat,
        { type: 'presence_join', user: { username: name, connectedAt: 0 } },
        { type: 'presence_leave', username: name },
        { type: 'presence_snapshot', users: [] },
      ])
      await withConn(ctx, { outsider: member }, (session) => write(ctx, session, frames(ctx, [message])))
    },
  },
  {
    name: 'cluster.peer_rules',
    port: 'cluster',
    weight: 3,
    about: 'authenticated: schema-valid chat and presence the peer rules refuse (control characters, look-alike or non-canonical names, blank or long text, duplicates)',
    run: async (ctx) => {
      const as = impostor(ctx)
      const bad = ctx.rng.pick(BAD_NAMES)
      const good = ctx.rng.pick(['fuzzuser', 'zz', '민'])
      const message = ctx.rng.pick<Record<string, unknown>>([
        { type: 'chat', username: bad, message: 'hi', nodeAddress: as.address, timestamp: Date.now() },
        { type: 'chat', username: good, message: ctx.rng.pick(BAD_TEXTS), nodeAddress: as.address, timestamp: Date.now() },
        { type: 'presence_join', user: { username: bad, connectedAt: Date.now() } },
        { type: 'presence_leave', username: bad },
        { type: 'presence_snapshot', users: [{ username: good, connectedAt: 1 }, { username: ctx.rng.chance(0.5) ? good : bad, connectedAt: 2 }] },
      ])
      // Sometimes after frames it must accept, so the refusal is not only ever the first frame.
      const before = ctx.rng.chance(0.3) ? [{ type: 'presence_join', user: { username: good, connectedAt: Date.now() } }] : []
      await withConn(ctx, { insider: as }, (session) => write(ctx, session, frames(ctx, [...before, message])))
    },
  },
  {
    name: 'cluster.insider_raft',
    port: 'cluster',
    weight: 3,
    about: 'NOT in CI: valid Raft (huge terms, fake joins, votes, entries) from a non-member that has the secret; trusted by design, may disturb elections',
    run: async (ctx) => {
      const as = impostor(ctx)
      await withConn(ctx, { insider: as }, async (session) => {
        const messages = Array.from({ length: ctx.rng.int(1, 4) }, () => messageOf(ctx, as, RAFT_TYPE_NAMES, true, 0.6)).filter((m) => m !== null)
        return write(ctx, session, frames(ctx, messages))
      })
    },
  },
]

/** Kinds that are not part of the CI run, and why. */
export const INSIDER_ONLY_KINDS = ['cluster.insider_raft']

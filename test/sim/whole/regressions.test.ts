// Bugs the whole-node simulator found in the transcript and the room, each as the smallest run
// of real nodes (or of the transcript alone) that shows it, so they stay fixed whatever the
// simulator's seeds come to do.
import { describe, expect, test } from 'bun:test'
import { formatAddress } from '../../../src/cluster/address'
import { MemoryNetwork } from '../../../src/cluster/memory-transport'
import type { Entry } from '../../../src/cluster/messages'
import { DEFAULT_TIMING } from '../../../src/cluster/timing'
import { createChatNode, type ChatNode, type ChatNodeConfig } from '../../../src/node'
import type { TranscriptEntry } from '../../../src/transcript/entries'
import { Transcript } from '../../../src/transcript/transcript'
import { Prng } from '../simulator'
import { runWholeSeed } from './world'
import { VirtualClock } from '../virtual-clock'
import { readFrames, SimFanout, SimSocket, type Resume } from './users'

/** A few real nodes on the in-memory network and a virtual clock; node i starts when asked. */
function cluster(size: number, config: Partial<ChatNodeConfig> = {}) {
  const clock = new VirtualClock()
  const rng = new Prng(7)
  const network = new MemoryNetwork(clock, rng.next)
  const addresses = Array.from({ length: size }, (_, i) => formatAddress({ systemName: 'Sim', host: `n${i}`, port: 2551 }))
  const fanouts = addresses.map(() => new SimFanout())
  const nodes: Array<ChatNode | null> = addresses.map(() => null)
  let incarnations = 0
  let sockets = 0
  return {
    clock,
    network,
    addresses,
    node: (i: number) => nodes[i]!,
    async start(i: number) {
      const node = createChatNode(
        {
          systemName: 'Sim', host: `n${i}`, clusterPort: 2551, httpPort: 8081, seeds: addresses, timing: DEFAULT_TIMING,
          lang: 'en', maxMessageLength: 2000, rateLimit: 20, rateBurst: 40, ...config,
        },
        { transport: network.factory, clock, random: rng.next, newIncarnation: () => `${i}.${++incarnations}`, log: () => {} },
        fanouts[i]!,
      )
      nodes[i] = node
      await node.start()
      return node
    },
    run(ms: number) {
      clock.runUntil(clock.elapsed + ms)
    },
    /** Runs in 10 ms steps until `done` (at most `ms`). */
    runUntil(done: () => boolean, ms = 30_000) {
      for (let t = 0; t < ms && !done(); t += 10) clock.runUntil(clock.elapsed + 10)
      expect(done()).toBe(true)
    },
    connect(i: number, username: string, resume: Partial<Resume> = {}) {
      const id = `s${sockets++}`
      const node = nodes[i]!
      const socket = new SimSocket(fanouts[i]!, () => clock.after(0, () => node.gateway.close(id)))
      node.gateway.open(id, socket, { ok: true, value: username }, resume)
      return {
        socket,
        say: (message: string) => node.gateway.message(id, JSON.stringify({ type: 'chat', message })),
        view: () => readFrames(socket.frames),
        histories: () => socket.frames.filter((f) => f.startsWith('{"type":"history"')).map((f) => JSON.parse(f) as { epoch: string; complete: boolean; messages: Array<{ id: number }> }),
      }
    },
  }
}

const upCount = (node: ChatNode) => node.cluster.view().members.filter((m) => m.status === 'Up').length

describe('room (src/chat/room.ts)', () => {
  // Seed 13 (tcp, at the time): history 37 lines, 50 on join. The recent history of a fresh
  // connection was said complete when its first line was at the node's `coveredFrom`, which is
  // exactly when older lines had been dropped.
  test('a recent history shorter than history-on-join is complete only when no older line was dropped', async () => {
    for (const [historySize, complete] of [[3, false], [100, true]] as const) {
      const c = cluster(1, { historySize, historyOnJoin: 5 })
      await c.start(0)
      c.runUntil(() => c.node(0).cluster.view().status === 'Up')
      const alice = c.connect(0, 'alice')
      for (let i = 0; i < 4; i++) alice.say(`m${i}`)
      c.run(200)
      // alice's join and four lines: five lines in all, of which the node holds `historySize`.
      const bob = c.connect(0, 'bob')
      const [history] = bob.histories()
      expect(history!.messages.length).toBe(Math.min(historySize, 5))
      expect(history!.complete).toBe(complete)
    }
  })

  // Seed 0 (tcp): a node restarted (a new process) had not learnt the transcript yet when a page
  // resumed there with the epoch it knew: the epoch looked different, so the node answered at
  // once with `complete: false` and an empty epoch, and then sent every line from the start again.
  test('a resume to a node that has not learnt the transcript yet waits for it, then replays what follows', async () => {
    const c = cluster(2)
    await c.start(0)
    c.runUntil(() => c.node(0).cluster.view().status === 'Up')
    const alice = c.connect(0, 'alice')
    alice.say('one')
    alice.say('two')
    c.run(100)
    const epoch = c.node(0).transcript.epoch
    const since = c.node(0).transcript.lastId
    alice.say('three')
    c.run(100)
    await c.start(1)
    expect(c.node(1).transcript.epoch).toBe('')
    const bob = c.connect(1, 'bob', { since, epoch })
    expect(bob.histories()).toEqual([]) // waiting
    c.runUntil(() => upCount(c.node(0)) === 2 && bob.histories().length > 0)
    const [history] = bob.histories()
    expect(history!.epoch).toBe(epoch)
    expect(history!.complete).toBe(true)
    const lines = bob.view().reads.filter((r) => r.kind === 'line').map((r) => (r.kind === 'line' ? r.line : null)!)
    expect(lines[0]!.id).toBeGreaterThan(since)
    expect(lines.filter((l) => l.type === 'chat').map((l) => (l.type === 'chat' ? l.message : ''))).toEqual(['three'])
  })

  // Seed 34 (tcp): a node removed while cut off rejoins as a new incarnation and rebuilds its
  // transcript from the log; a fresh connection in that window got an empty history said to be
  // complete, and then only the lines after the node's old delivery point.
  test('a fresh connection while the transcript is rebuilt after a rejoin gets the recent history once it is back', async () => {
    const c = cluster(3, { historyOnJoin: 50 })
    for (let i = 0; i < 3; i++) await c.start(i)
    c.runUntil(() => upCount(c.node(0)) === 3 && upCount(c.node(2)) === 3)
    const alice = c.connect(0, 'alice')
    for (let i = 0; i < 5; i++) alice.say(`m${i}`)
    c.run(300)
    const before = c.node(2).cluster.selfId
    for (const other of [0, 1]) c.network.cut(c.addresses[2]!, c.addresses[other]!)
    c.runUntil(() => upCount(c.node(0)) === 2, 10_000) // n2 removed
    c.network.healAll()
    c.runUntil(() => c.node(2).cluster.selfId !== before && c.node(2).transcript.epoch === '', 10_000)
    const carol = c.connect(2, 'carol')
    c.runUntil(() => carol.histories().length > 0)
    const [history] = carol.histories()
    expect(history!.complete).toBe(true)
    const chat = (history!.messages as unknown as Array<{ type: string; message: string }>).filter((m) => m.type === 'chat')
    expect(chat.map((m) => m.message)).toEqual(['m0', 'm1', 'm2', 'm3', 'm4'])
  })
})

describe('transcript (src/transcript/transcript.ts)', () => {
  const A = formatAddress({ systemName: 'Sim', host: 'n1', port: 2551 })
  const B = formatAddress({ systemName: 'Sim', host: 'n2', port: 2551 })
  const C = formatAddress({ systemName: 'Sim', host: 'n3', port: 2551 })
  let index = 0
  const entry = (data: Omit<TranscriptEntry, 'timestamp'>): Entry => ({ term: 1, change: { type: 'app', data: { ...data, timestamp: 1000 + index } } })
  const apply = (t: Transcript, e: Entry) => t.apply(++index, e)
  const joinOrLeave = (type: 'join' | 'leave', username: string, nodeAddress: string, seq: number) =>
    entry({ type, origin: `${nodeAddress}#1`, seq, key: `${nodeAddress}:${seq}`, usernames: [username], nodeAddress } as Omit<TranscriptEntry, 'timestamp'>)
  const system = (t: Transcript) => t.after(0).map((l) => (l.type === 'system' ? `${l.event} ${l.usernames.join(',')}` : l.message))

  // Seed 12 (tcp): two nodes admitted the same name at once; the later one gave way and said the
  // user left. The transcript had taken the second join as a move and the leave as the user's
  // own: "u6 left the chat" while u6 stayed online at the first node.
  test('a lost race for a name makes no line: the holder stays online', () => {
    const t = new Transcript(100)
    apply(t, { term: 1, change: { type: 'add', member: { address: A, incarnation: '1', httpUrl: 'http://n1' } } })
    apply(t, joinOrLeave('join', 'u6', A, 1))
    apply(t, joinOrLeave('join', 'u6', B, 1))
    apply(t, joinOrLeave('leave', 'u6', B, 2))
    expect(system(t)).toEqual(['join u6'])
    apply(t, joinOrLeave('leave', 'u6', A, 2))
    expect(system(t)).toEqual(['join u6', 'leave u6'])
  })

  test('a move between nodes makes no line, whichever of the join and the leave comes first; a removed node\'s users leave unless online elsewhere', () => {
    const t = new Transcript(100)
    apply(t, { term: 1, change: { type: 'add', member: { address: A, incarnation: '1', httpUrl: 'http://n1' } } })
    apply(t, joinOrLeave('join', 'ann', A, 1))
    apply(t, joinOrLeave('join', 'bo', A, 2))
    apply(t, joinOrLeave('join', 'ann', B, 1)) // ann moves to n2
    apply(t, { term: 1, change: { type: 'remove', id: `${A}#1`, reason: 'down' } })
    expect(system(t)).toEqual(['join ann', 'join bo', 'leave bo'])
    apply(t, joinOrLeave('leave', 'ann', B, 2))
    expect(system(t)).toEqual(['join ann', 'join bo', 'leave bo', 'leave ann'])
    // The state survives a snapshot.
    const copy = new Transcript(100)
    apply(t, joinOrLeave('join', 'cy', B, 3))
    apply(t, joinOrLeave('join', 'cy', C, 1))
    copy.restore(index, t.snapshot())
    copy.apply(++index, joinOrLeave('leave', 'cy', B, 4))
    expect(system(copy).slice(-1)).toEqual(['join cy'])
  })
})

describe('seeds the simulator found', () => {
  // A fresh connection (no history on join) to a node rebuilding its transcript after a rejoin
  // waited, and was admitted only after the lines that ended the wait had gone out: it missed
  // them (line 44 read after 22). Waiting connections are now admitted before new lines go out.
  test('seed 46810: a fresh connection waiting out a rebuild misses no line', async () => {
    await runWholeSeed(46810)
  })
})

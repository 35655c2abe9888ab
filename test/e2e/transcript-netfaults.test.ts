// One transcript under a real partition: each node in its own network namespace (../support/netns.ts),
// the links between node 1 and node 2 cut with nft drops for 2 s (under the down timeout) while a
// user on node 1 sends numbered, acknowledged messages. Users on node 2 must receive all of them,
// in order, none twice, and users on every node must see the same id → line sequence.
// Needs root with CAP_NET_ADMIN and nftables (scripts/deps.sh --netns); skips saying why otherwise.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { waitFor } from '../support/cluster'
import { startLabCluster, type LabCluster } from '../support/netfaults'
import { netnsUnavailable } from '../support/netns'
import { AckedSender, checkStream, fetchTranscript, idMap, percentile, receivedLines, stampArrivals } from '../support/transcript'
import { connectUser, type ChatClient } from '../support/ws-client'

const CUT_MS = 2000

const unavailable = netnsUnavailable()
if (unavailable) console.warn(`transcript netfaults: skipped: ${unavailable}`)

describe.skipIf(unavailable !== null)('one transcript under a real partition (network namespaces, nft drops)', () => {
  let cluster: LabCluster
  const clients: ChatClient[] = []
  beforeAll(async () => {
    cluster = await startLabCluster(3)
  }, 60_000)
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})))
    await cluster?.stop()
  }, 30_000)

  const connect = async (n: number, name: string) => {
    const client = await connectUser(cluster.nodes[n - 1]!.httpUrl, name)
    clients.push(client)
    return client
  }

  test(`links 1↔2 cut for ${CUT_MS / 1000} s while node 1's user sends acked messages: node 2's users get all, in order, once; every node's users see the same transcript`, async () => {
    const { lab, nodes } = cluster
    const readers = [await connect(1, 'reader1'), await connect(2, 'reader2'), await connect(3, 'reader3')]
    const arrivals = stampArrivals(readers[1]!)
    const sender = new AckedSender(await connect(1, 'sender1'), 'sender1')
    // Everyone sees the sender's join first: the readers' streams then cover the same range.
    await waitFor(() => readers.every((r) => receivedLines(r).some((l) => l.type === 'system' && l.username === 'sender1')), { timeoutMs: 10_000, message: 'the sender’s join was not seen everywhere' })
    const leader = cluster.indexOf((await nodes[0]!.info()).leader)
    sender.start(60)
    await waitFor(() => sender.acked().length >= 10, { timeoutMs: 10_000, message: 'the stream never got going' })

    const cutAt = performance.now()
    lab.cut(1, 2)
    try {
      await Bun.sleep(CUT_MS) // the cut's length is the scenario, not a wait for a condition
    } finally {
      lab.heal(1, 2)
    }
    const healedAt = performance.now()
    const sentDuringCut = sender.out.filter((o) => o.sentAt >= cutAt && o.sentAt < healedAt).length
    const sentByHeal = sender.out.length
    await waitFor(() => sender.out.length >= sentByHeal + 15, { timeoutMs: 10_000, message: 'the stream stalled after the heal' })
    sender.drain()
    await waitFor(() => sender.unacked().length === 0, { timeoutMs: 15_000, message: `not every message was acknowledged (${sender.unacked().length} left)` })
    sender.stop()
    expect(sender.errors).toEqual([])
    const lastId = Math.max(...sender.acked().map((o) => o.id!))
    await waitFor(() => readers.every((r) => receivedLines(r).some((l) => l.id >= lastId)), { timeoutMs: 15_000, message: 'not every reader got the last line' })
    // From the heal until node 2's user had everything sent before it.
    const caughtUpMs = Math.max(...sender.out.slice(0, sentByHeal).map((o) => arrivals.get(o.text) ?? NaN)) - healedAt

    // Node 2's user: every number, in order, once.
    const numbers = receivedLines(readers[1]!)
      .filter((l) => l.type === 'chat' && l.username === 'sender1')
      .map((l) => Number(l.message.split('#')[1]))
    if (JSON.stringify(numbers) !== JSON.stringify(sender.out.map((o) => o.n))) {
      const frames = readers[1]!.frames.filter((f) => f.type !== 'chat' && f.type !== 'system' && f.type !== 'presence').map((f) => JSON.stringify(f).slice(0, 300))
      console.log(`transcript netfaults: node 2's user got ${JSON.stringify(numbers)} of ${sender.out.length}; acks ${JSON.stringify(sender.out.map((o) => o.id))}; its other frames: ${frames.join(' ')}`)
    }
    expect(numbers).toEqual(sender.out.map((o) => o.n))
    // Every reader: no line twice or backwards, and the same id → line as the others.
    const maps = readers.map((r) => {
      const lines = receivedLines(r)
      expect(checkStream(lines)).toEqual({ duplicates: [], backwards: [] })
      return idMap(lines.filter((l) => l.id <= lastId))
    })
    const first = Math.max(...maps.map((m) => Math.min(...m.keys())))
    const same = (m: Map<number, string>) => JSON.stringify([...m].filter(([id]) => id >= first))
    for (const m of maps) expect(same(m)).toBe(same(maps[0]!))
    for (const o of sender.out) expect(maps[1]!.get(o.id!)).toBe(`chat:sender1:${o.text}`)
    // And the nodes hold the same transcript.
    const held = await Promise.all(nodes.map((n) => fetchTranscript(n)))
    for (const t of held) expect(JSON.stringify([...idMap(t.lines)].filter(([id]) => id <= lastId))).toBe(JSON.stringify([...idMap(held[0]!.lines)].filter(([id]) => id <= lastId)))

    const delays = sender.out.map((o) => arrivals.get(o.text)! - o.sentAt)
    const ackDelays = sender.out.map((o) => o.ackedAt! - o.sentAt)
    console.log(
      `transcript netfaults: leader node ${leader}, links 1↔2 cut ${CUT_MS} ms: ${sender.out.length} acked messages from node 1 (${sentDuringCut} sent during the cut), ` +
        `all received at node 2 in order, none twice, same id → line on all 3 nodes' users (${maps[0]!.size} lines); ` +
        `delay to node 2's user p50 ${percentile(delays, 50).toFixed(0)} ms, max ${Math.max(...delays).toFixed(0)} ms; ack max ${Math.max(...ackDelays).toFixed(0)} ms; ` +
        `node 2's user had everything sent before the heal ${caughtUpMs.toFixed(0)} ms after it`,
    )
  }, 60_000)

  test(`node 1 cut off from the majority for ${CUT_MS / 1000} s: what its user sends is held (not acked), then goes in once, in order, after the heal`, async () => {
    const { lab, nodes } = cluster
    const reader = await connect(3, 'reader3b')
    const sender = new AckedSender(await connect(1, 'sender1b'), 'sender1b')
    await waitFor(() => receivedLines(reader).some((l) => l.type === 'system' && l.username === 'sender1b'), { timeoutMs: 10_000, message: 'the sender’s join was not seen at node 3' })
    const leader = cluster.indexOf((await nodes[0]!.info()).leader)
    sender.start(60)
    await waitFor(() => sender.acked().length >= 5, { timeoutMs: 10_000, message: 'the stream never got going' })
    const cutAt = performance.now()
    lab.isolate(1)
    try {
      await Bun.sleep(CUT_MS) // the cut's length is the scenario, not a wait for a condition
    } finally {
      lab.healAll()
    }
    const healedAt = performance.now()
    // Sent well inside the cut: nobody could have taken it before the heal.
    const held = sender.out.filter((o) => o.sentAt > cutAt + 200 && o.sentAt < healedAt)
    const ackedWhileCut = held.filter((o) => o.ackedAt !== undefined && o.ackedAt < healedAt).length
    const sentByHeal = sender.out.length
    await waitFor(() => sender.out.length >= sentByHeal + 10, { timeoutMs: 10_000, message: 'the stream stalled after the heal' })
    sender.drain()
    await waitFor(() => sender.unacked().length === 0, { timeoutMs: 15_000, message: `not every message was acknowledged after the heal (${sender.unacked().length} left)` })
    sender.stop()
    expect(sender.errors).toEqual([])
    expect(held.length).toBeGreaterThan(10)
    expect(ackedWhileCut).toBe(0)
    const lastId = Math.max(...sender.acked().map((o) => o.id!))
    await waitFor(() => receivedLines(reader).some((l) => l.id >= lastId), { timeoutMs: 15_000, message: 'node 3’s user never got the last line' })
    const lines = receivedLines(reader)
    expect(checkStream(lines)).toEqual({ duplicates: [], backwards: [] })
    const numbers = lines.filter((l) => l.type === 'chat' && l.username === 'sender1b').map((l) => Number(l.message.split('#')[1]))
    expect(numbers).toEqual(sender.out.map((o) => o.n))
    const byId = idMap(lines)
    for (const o of sender.out) expect(byId.get(o.id!)).toBe(`chat:sender1b:${o.text}`)
    const heldAckMs = held.map((o) => o.ackedAt! - healedAt)
    console.log(
      `transcript netfaults: node 1 (leader was node ${leader}) cut off ${CUT_MS} ms: ${held.length} messages sent meanwhile were held, none acked before the heal, ` +
        `all acked ${Math.max(...heldAckMs).toFixed(0)} ms after it at the latest; ${sender.out.length} messages in all at node 3's user in order, none twice`,
    )
  }, 60_000)
})

// Three real node processes on loopback: membership, chat across nodes, presence, refusals and
// graceful leave, observed only through HTTP and WebSocket as a user would.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { startCluster, stopAll, waitFor, type NodeHandle } from '../support/cluster'
import { connectUser, presenceOf, refusal, sees, userPool } from '../support/ws-client'

let nodes: NodeHandle[] = []
const users = userPool()

beforeAll(async () => {
  nodes = await startCluster(3)
})

afterAll(async () => {
  await users.closeAll()
  await stopAll()
}, 30_000)

const user = (node: NodeHandle, name: string) => users.connect(node.httpUrl, name)

describe('a three-node cluster', () => {
  test('agrees on one leader, term and three Up members with their HTTP URLs', async () => {
    const infos = await Promise.all(nodes.map((n) => n.info()))
    const leaders = new Set(infos.map((i) => i.leader))
    expect(leaders.size).toBe(1)
    expect(nodes.map((n) => n.address)).toContain(infos[0].leader)
    for (const [i, info] of infos.entries()) {
      expect(info.selfAddress).toBe(nodes[i]!.address)
      expect(info.selfAddress).toMatch(/^bun:\/\/WebSocketClusterSystem@127\.0\.0\.1:\d+$/)
      expect(info.status).toBe('Up')
      expect(info.term).toBeGreaterThanOrEqual(1)
      expect(info.transport.framesIn).toBeGreaterThan(0)
      expect(info.transport.invalid).toBe(0)
      expect(info.members.map((m: any) => m.address).sort()).toEqual(nodes.map((n) => n.address).sort())
      for (const m of info.members) {
        expect(m.status).toBe('Up')
        expect(m.reachable).toBe(true)
        expect(m.leader).toBe(m.address === info.leader)
        expect(m.httpUrl).toBe(nodes.find((n) => n.address === m.address)!.httpUrl)
      }
    }
  })

  test('a message from node 1 reaches users on nodes 2 and 3 (and the sender) in the documented format', async () => {
    const [alice, bob, carol] = [await user(nodes[0]!, 'alice'), await user(nodes[1]!, 'bob'), await user(nodes[2]!, 'carol')]
    // Everyone must see everyone before the message, or a late joiner could miss it.
    for (const c of [alice, bob, carol]) {
      await waitFor(() => ['alice', 'bob', 'carol'].every((n) => sees(c, n)), { message: `${c.username} never saw all three users` })
    }
    const before = Date.now()
    alice.sendChat('hello from node 1')
    for (const c of [alice, bob, carol]) {
      const frame = await c.next((f) => f.type === 'chat' && f.message === 'hello from node 1')
      expect(Object.keys(frame).sort()).toEqual(['id', 'message', 'nodeAddress', 'timestamp', 'type', 'username'])
      expect(frame).toMatchObject({ type: 'chat', username: 'alice', nodeAddress: nodes[0]!.address })
      expect(frame.timestamp).toBeGreaterThanOrEqual(before - 5)
      expect(frame.timestamp).toBeLessThanOrEqual(Date.now())
    }
  })

  test('join and leave messages reach users on other nodes', async () => {
    const watcher = await user(nodes[2]!, 'watcher')
    const dave = await connectUser(nodes[0]!.httpUrl, 'dave')
    const joined = await watcher.next((f) => f.type === 'system' && f.username === 'dave' && f.event === 'join')
    expect(joined.message).toBe('dave joined the chat')
    const presence = await watcher.next(presenceOf('joins', 'dave'))
    expect(presence.joins.find((u: { username: string }) => u.username === 'dave')).toMatchObject({ username: 'dave', nodeAddress: nodes[0]!.address })
    expect(sees(watcher, 'dave')).toBe(true)
    expect(typeof joined.timestamp).toBe('number')
    await dave.close()
    const left = await watcher.next((f) => f.type === 'system' && f.username === 'dave' && f.event === 'leave')
    expect(left.message).toBe('dave left the chat')
    await watcher.next(presenceOf('leaves', 'dave'))
    expect(sees(watcher, 'dave')).toBe(false)
  })

  test('GET /api/users on every node lists every user in the cluster', async () => {
    const erin = await user(nodes[1]!, 'erin 민')
    expect(erin.welcome?.nodeAddress).toBe(nodes[1]!.address)
    for (const node of nodes) {
      const body = await waitFor(async () => {
        const b = await node.users()
        return b.users.some((u: any) => u.username === 'erin 민') ? b : null
      })
      expect(body.count).toBe(body.users.length)
      const erinEntry = body.users.find((u: any) => u.username === 'erin 민')
      expect(erinEntry).toMatchObject({ nodeAddress: nodes[1]!.address })
      expect(typeof erinEntry.connectedAt).toBe('number')
      expect(body.users.find((u: any) => u.username === 'alice')).toMatchObject({ nodeAddress: nodes[0]!.address })
    }
  })

  test('refuses bad usernames with 4400 and names taken on another node with 4409', async () => {
    expect((await refusal(nodes[0]!.httpUrl, null)).code).toBe(4400)
    expect(await refusal(nodes[0]!.httpUrl, '   ')).toMatchObject({ code: 4400 })
    expect((await refusal(nodes[0]!.httpUrl, 'x'.repeat(33))).code).toBe(4400)
    expect((await refusal(nodes[0]!.httpUrl, 'a<b>')).code).toBe(4400)
    expect((await refusal(nodes[0]!.httpUrl, 'tab\there')).code).toBe(4400)
    expect(await refusal(nodes[2]!.httpUrl, 'alice')).toEqual({ code: 4409, reason: 'username taken' })
  })

  test('a too-long message gets an error frame, a binary frame closes with 1003, a frame over 64 KiB with 1009, and the node keeps serving', async () => {
    const frank = await user(nodes[0]!, 'frank')
    frank.sendChat('y'.repeat(2001))
    expect(await frank.next('error')).toMatchObject({ code: 'message_too_long' })
    frank.send(new Uint8Array([1, 2, 3]))
    expect((await frank.closed).code).toBe(1003)
    const greg = await user(nodes[0]!, 'greg')
    greg.send('z'.repeat(70 * 1024))
    expect((await greg.closed).code).toBe(1009)
    const info = await nodes[0]!.info()
    expect(info.status).toBe('Up')
  })

  test('SIGTERM makes a node leave: the others drop it from their member lists and its users leave', async () => {
    const watcher = await user(nodes[0]!, 'watcher2')
    const leaving = nodes[2]!
    await user(leaving, 'gina')
    await watcher.next((f) => f.type === 'system' && f.username === 'gina' && f.event === 'join')
    await leaving.stop()
    expect(await leaving.exited).toBe(0)
    expect(leaving.logs()).toContain('left the cluster')
    for (const node of nodes.slice(0, 2)) {
      await waitFor(async () => {
        const info = await node.info()
        return info.members.length === 2 && !info.members.some((m: any) => m.address === leaving.address) && info.leader
      }, { message: `${node.name} still lists ${leaving.address}` })
    }
    await watcher.next((f) => f.type === 'system' && f.username === 'gina' && f.event === 'leave')
    const users = await nodes[0]!.users()
    expect(users.users.some((u: any) => u.nodeAddress === leaving.address)).toBe(false)
  })
})

// Two or three rooms wired together in memory, the way the cluster wires them over TCP.
import { describe, expect, test } from 'bun:test'
import type { Hello } from '../../src/cluster/messages'
import type { ChatMessage } from '../../src/chat/messages'
import { ChatRoom } from '../../src/chat/room'

const addr = (n: number) => `bun://S@127.0.0.1:${2550 + n}`

function makeCluster(size: number, lang: 'en' | 'ko' = 'en') {
  let clock = 1000
  const outbox: { from: string; to: string; message: ChatMessage }[] = []
  const nodes = Array.from({ length: size }, (_, i) => {
    const self = addr(i + 1)
    const published: any[] = []
    const disconnected: { username: string; code: number }[] = []
    let members = Array.from({ length: size }, (_, j) => addr(j + 1))
    const room: ChatRoom = new ChatRoom({
      selfAddress: self,
      lang,
      maxMessageLength: 20,
      now: () => clock++,
      publish: (json) => published.push(JSON.parse(json)),
      broadcast: (message) => members.filter((a) => a !== self).forEach((to) => outbox.push({ from: self, to, message })),
      sendTo: (to, message) => outbox.push({ from: self, to, message }),
      disconnect: (username, code) => disconnected.push({ username, code }),
    })
    return { self, room, published, disconnected, setMembers: (m: string[]) => { members = m; room.setMembers(m) } }
  })
  const deliver = () => {
    while (outbox.length) {
      const { from, to, message } = outbox.shift()!
      const peer: Hello = { type: 'hello', version: 1, systemName: 'S', address: from, incarnation: 'x' }
      nodes.find((n) => n.self === to)?.room.onPeerMessage(peer, message)
    }
  }
  for (const n of nodes) n.setMembers(nodes.map((m) => m.self))
  deliver()
  return { nodes, deliver, outbox }
}

const systems = (published: any[]) => published.filter((m) => m.type === 'system').map((m) => m.message)

describe('ChatRoom', () => {
  test('user-list changes go out as one small presence frame each, never the whole list', () => {
    const { nodes, deliver } = makeCluster(2)
    nodes[0]!.room.join('alice')
    nodes[1]!.room.join('bob')
    deliver()
    const frames = nodes[0]!.published.filter((m) => m.type === 'presence')
    expect(frames).toEqual([
      { type: 'presence', event: 'join', user: { username: 'alice', nodeAddress: addr(1), connectedAt: expect.any(Number) } },
      { type: 'presence', event: 'join', user: { username: 'bob', nodeAddress: addr(2), connectedAt: expect.any(Number) } },
    ])
    expect(nodes[0]!.published.some((m) => m.type === 'users')).toBe(false)
  })

  test('a local join is announced everywhere and listed on every node', () => {
    const { nodes, deliver } = makeCluster(3)
    nodes[0]!.room.join('alice')
    deliver()
    for (const n of nodes) {
      expect(systems(n.published)).toEqual(['alice joined the chat'])
      expect(n.room.users()).toEqual([{ username: 'alice', nodeAddress: addr(1), connectedAt: expect.any(Number) }])
    }
    expect(nodes[2]!.room.available('alice')).toBe(false)
  })

  test('chat goes to local users at once and once to each peer, in the documented shape', () => {
    const { nodes, deliver, outbox } = makeCluster(3)
    nodes[0]!.room.join('alice')
    deliver()
    expect(nodes[0]!.room.say('alice', 'hi there')).toEqual({ ok: true, value: { delivered: true } })
    expect(outbox.filter((o) => o.message.type === 'chat')).toHaveLength(2)
    deliver()
    for (const n of nodes) {
      const chat = n.published.find((m) => m.type === 'chat')
      expect(chat).toEqual({ type: 'chat', username: 'alice', message: 'hi there', nodeAddress: addr(1), timestamp: expect.any(Number) })
    }
  })

  test('blank messages are ignored and long ones refused', () => {
    const { nodes, outbox } = makeCluster(2)
    nodes[0]!.room.join('alice')
    outbox.length = 0
    expect(nodes[0]!.room.say('alice', '   ')).toEqual({ ok: true, value: { delivered: false } })
    expect(nodes[0]!.room.say('alice', 'x'.repeat(21))).toMatchObject({ ok: false, error: { code: 'message_too_long' } })
    expect(nodes[0]!.room.say('alice', '가'.repeat(20))).toEqual({ ok: true, value: { delivered: true } })
    expect(outbox.filter((o) => o.message.type === 'chat')).toHaveLength(1)
  })

  test('a removed member takes its users with it, with leave messages; re-adding brings them back', () => {
    const { nodes, deliver } = makeCluster(3)
    nodes[2]!.room.join('carol')
    deliver()
    nodes[0]!.setMembers([addr(1), addr(2)])
    expect(systems(nodes[0]!.published)).toEqual(['carol joined the chat', 'carol left the chat'])
    expect(nodes[0]!.room.users()).toEqual([])
    nodes[0]!.setMembers([addr(1), addr(2), addr(3)])
    deliver()
    expect(nodes[0]!.room.users().map((u) => u.username)).toEqual(['carol'])
  })

  test('a new member receives a snapshot of every node\'s users', () => {
    const { nodes, deliver } = makeCluster(3)
    nodes[0]!.room.join('alice')
    nodes[1]!.room.join('bob')
    deliver()
    // Node 3 restarts: it knows nobody until the others send their snapshots.
    const fresh = makeCluster(3).nodes[2]!
    nodes[2] = fresh
    nodes[0]!.setMembers([addr(1), addr(2)])
    nodes[0]!.setMembers([addr(1), addr(2), addr(3)])
    nodes[1]!.setMembers([addr(1), addr(2)])
    nodes[1]!.setMembers([addr(1), addr(2), addr(3)])
    deliver()
    expect(fresh.room.users().map((u) => u.username).sort()).toEqual(['alice', 'bob'])
  })

  test('resync sends our snapshot to every member, not only new ones (Up again after a rejoin)', () => {
    const { nodes, outbox } = makeCluster(2)
    nodes[0]!.room.join('alice')
    outbox.length = 0
    nodes[0]!.room.setMembers([addr(1), addr(2)])
    expect(outbox.filter((o) => o.message.type === 'presence_snapshot')).toHaveLength(0)
    nodes[0]!.room.setMembers([addr(1), addr(2)], true)
    expect(outbox.filter((o) => o.message.type === 'presence_snapshot').map((o) => o.to)).toEqual([addr(2)])
  })

  test('the same name admitted on two nodes at once: the earlier connection keeps it, the other is closed with 4409', () => {
    const { nodes, deliver } = makeCluster(2)
    nodes[0]!.room.join('sam') // earlier clock
    nodes[1]!.room.join('sam')
    deliver()
    expect(nodes[1]!.disconnected).toEqual([{ username: 'sam', code: 4409 }])
    expect(nodes[0]!.disconnected).toEqual([])
    for (const n of nodes) expect(n.room.users()).toEqual([{ username: 'sam', nodeAddress: addr(1), connectedAt: expect.any(Number) }])
  })

  test('a look-alike of an online name is not available, on this node or another', () => {
    const { nodes, deliver } = makeCluster(2)
    nodes[0]!.room.join('ace')
    deliver()
    for (const n of nodes) {
      expect(n.room.available('асе')).toBe(false) // Cyrillic а, с, е
      expect(n.room.available('ace')).toBe(false)
      expect(n.room.available('acf')).toBe(true)
    }
    nodes[0]!.room.join('rn')
    deliver()
    expect(nodes[1]!.room.available('m')).toBe(false) // "m" and "rn" share a skeleton
  })

  test('look-alikes admitted on two nodes at once: the later one gives way under its own name', () => {
    const { nodes, deliver } = makeCluster(2)
    nodes[0]!.room.join('ace') // earlier clock
    nodes[1]!.room.join('асе')
    deliver()
    expect(nodes[1]!.disconnected).toEqual([{ username: 'асе', code: 4409 }])
    for (const n of nodes) expect(n.room.users()).toEqual([{ username: 'ace', nodeAddress: addr(1), connectedAt: expect.any(Number) }])
    // The socket of the user who gave way closes later: that must not remove anyone.
    nodes[1]!.room.leave('асе')
    deliver()
    for (const n of nodes) expect(n.room.users().map((u) => u.username)).toEqual(['ace'])
  })

  test('Korean system messages with --lang ko', () => {
    const { nodes, deliver } = makeCluster(2, 'ko')
    nodes[0]!.room.join('민수')
    deliver()
    nodes[0]!.room.leave('민수')
    deliver()
    expect(systems(nodes[1]!.published)).toEqual(['민수 님이 채팅에 참여했습니다', '민수 님이 채팅에서 나갔습니다'])
  })
})

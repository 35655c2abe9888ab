// Two or three rooms wired together in memory, the way the cluster wires them over TCP.
import { describe, expect, test } from 'bun:test'
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
      const verdict = nodes.find((n) => n.self === to)?.room.onPeerMessage({ address: from, incarnation: 'x' }, message)
      // What one room sends, another accepts: the peer rules never refuse a real node.
      if (verdict && !verdict.ok) throw new Error(`room ${to} refused ${message.type} from ${from}: ${verdict.error}`)
    }
  }
  for (const n of nodes) n.setMembers(nodes.map((m) => m.self))
  deliver()
  return { nodes, deliver, outbox }
}

const systems = (published: any[]) => published.filter((m) => m.type === 'system').map((m) => m.message)

describe('ChatRoom', () => {
  test('user-list changes go out as presence frames of changes, never the whole list', () => {
    const { nodes, deliver } = makeCluster(2)
    nodes[0]!.room.join('alice')
    nodes[1]!.room.join('bob')
    deliver()
    const frames = nodes[0]!.published.filter((m) => m.type === 'presence')
    expect(frames).toEqual([
      { type: 'presence', joins: [{ username: 'alice', nodeAddress: addr(1), connectedAt: expect.any(Number) }], leaves: [] },
      { type: 'presence', joins: [{ username: 'bob', nodeAddress: addr(2), connectedAt: expect.any(Number) }], leaves: [] },
    ])
    expect(nodes[0]!.published.some((m) => m.type === 'users')).toBe(false)
  })

  test('with a timer, a storm of joins and leaves goes out as one presence frame to users and one batch to each peer', () => {
    const timers: Array<() => void> = []
    const published: any[] = []
    const sent: ChatMessage[] = []
    const room = new ChatRoom({
      selfAddress: addr(1),
      lang: 'en',
      maxMessageLength: 20,
      now: () => 1000,
      publish: (json) => published.push(JSON.parse(json)),
      broadcast: (message) => sent.push(message),
      sendTo: () => {},
      disconnect: () => {},
      after: (_ms, fn) => timers.push(fn),
    })
    room.setMembers([addr(1), addr(2)])
    for (let i = 0; i < 200; i++) room.join(`u${i}`)
    room.leave('u0')
    room.leave('u1')
    room.join('u1')
    // One turn for the peers, one window for the users.
    expect(timers).toHaveLength(2)
    expect(published.filter((m) => m.type === 'presence')).toEqual([])
    for (const fire of timers.splice(0)) fire()
    const frames = published.filter((m) => m.type === 'presence')
    expect(frames).toHaveLength(1)
    // u0 joined and left within the window: told as a leave; u1 as a leave and its latest self.
    expect(frames[0].leaves.map((u: { username: string }) => u.username).sort()).toEqual(['u0', 'u1'])
    expect(frames[0].joins.map((u: { username: string }) => u.username).sort()).toEqual(Array.from({ length: 199 }, (_, i) => `u${i + 1}`).sort())
    const batches = sent.filter((m) => m.type === 'presence_batch')
    expect(batches).toHaveLength(1)
    expect(batches[0]).toMatchObject({ leaves: ['u0'] })
    expect((batches[0] as { joins: unknown[] }).joins).toHaveLength(199)
    // The system messages are still one per change (issue 9 makes them transcript entries).
    expect(systems(published)).toHaveLength(203)
  })

  test("a new socket's users frame leaves out the joins still waiting for their presence frame", () => {
    const timers: Array<() => void> = []
    const room = new ChatRoom({
      selfAddress: addr(1),
      lang: 'en',
      maxMessageLength: 20,
      now: () => 1000,
      publish: () => {},
      broadcast: () => {},
      sendTo: () => {},
      disconnect: () => {},
      after: (_ms, fn) => timers.push(fn),
    })
    room.join('early')
    for (const fire of timers.splice(0)) fire()
    room.join('late')
    const names = (json: string) => (JSON.parse(json) as { users: Array<{ username: string }> }).users.map((u) => u.username)
    expect(names(room.usersJson())).toEqual(['early'])
    expect(room.users().map((u) => u.username)).toEqual(['early', 'late'])
    for (const fire of timers.splice(0)) fire()
    expect(names(room.usersJson())).toEqual(['early', 'late'])
    // A leave changes the list at once, not at the end of the window.
    room.leave('early')
    expect(names(room.usersJson())).toEqual(['late'])
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
    expect(systems(nodes[1]!.published)).toEqual(['민수 님이 채팅에 참여했습니다', '민수 님이 채팅을 떠났습니다'])
  })
})

describe('ChatRoom with a peer sending more than the schema', () => {
  // Found by the live fuzzer (seed 7): a chat relay with an unknown field holding a msgpack uint64
  // (decoded as a BigInt) passed validation, then JSON.stringify threw inside onPeerMessage, and
  // any other unknown field was forwarded to every browser.
  test('a relayed chat keeps only the documented fields, whatever else the peer adds', () => {
    const { nodes } = makeCluster(2)
    const peer = { address: addr(2), incarnation: 'x' }
    const relay = { type: 'chat', username: 'bob', message: 'hi', nodeAddress: addr(2), timestamp: 5, big: 2n ** 64n - 1n, html: '<b>' }
    expect(() => nodes[0]!.room.onPeerMessage(peer, relay as unknown as ChatMessage)).not.toThrow()
    expect(nodes[0]!.published.at(-1)).toEqual({ type: 'chat', username: 'bob', message: 'hi', nodeAddress: addr(2), timestamp: 5 })
  })
})

describe('ChatRoom and frames from peers', () => {
  const peer = { address: addr(2), incarnation: 'x' }
  const room = () => makeCluster(2).nodes[0]!.room
  const chat = (over: Partial<Extract<ChatMessage, { type: 'chat' }>> = {}): ChatMessage => ({
    type: 'chat', username: 'bob', message: 'hi', nodeAddress: addr(2), timestamp: 1, ...over,
  })

  test('a peer speaks only for itself: chat claiming another node is refused and not shown', () => {
    const { nodes } = makeCluster(3)
    const before = nodes[0]!.published.length
    const verdict = nodes[0]!.room.onPeerMessage(peer, chat({ nodeAddress: addr(3) }))
    expect(verdict).toEqual({ ok: false, error: `chat claims node "${addr(3)}", sent by ${addr(2)}` })
    expect(nodes[0]!.published.length).toBe(before)
  })

  test('fields are held to the browser rules: usernames, text length, control characters', () => {
    const refused: ChatMessage[] = [
      chat({ username: 'bad\u0000name' }),
      chat({ username: 'a'.repeat(33) }),
      chat({ username: '  padded ' }), // valid once trimmed, but a node sends the canonical form
      chat({ username: 'Jose\u0301' }), // not NFC
      chat({ message: 'x'.repeat(21) }), // maxMessageLength is 20 in these rooms
      chat({ message: 'bell\u0007' }),
      chat({ message: 'esc\u001b[2J' }),
      chat({ message: '   ' }),
      { type: 'presence_join', user: { username: '\u202Eevil', connectedAt: 1 } },
      { type: 'presence_snapshot', users: [{ username: 'ok', connectedAt: 1 }, { username: '', connectedAt: 2 }] },
      { type: 'presence_snapshot', users: [{ username: 'twice', connectedAt: 1 }, { username: 'twice', connectedAt: 2 }] },
      { type: 'presence_leave', username: 'x\u0000' },
    ]
    for (const m of refused) expect(room().onPeerMessage(peer, m).ok).toBe(false)
    for (const m of [chat({ message: 'line one\n\tline two' }), chat({ username: '김철수', message: '안녕하세요' }), chat({ message: 'x'.repeat(20) })]) {
      expect(room().onPeerMessage(peer, m)).toEqual({ ok: true, value: undefined })
    }
  })

  test("presence from a peer is filed under that peer's own node", () => {
    const { nodes } = makeCluster(3)
    nodes[0]!.room.onPeerMessage(peer, { type: 'presence_join', user: { username: 'mallory', connectedAt: 5 } })
    expect(nodes[0]!.room.users()).toEqual([{ username: 'mallory', nodeAddress: addr(2), connectedAt: 5 }])
  })
})

// Chat rooms of two or three nodes on a real replicated log (test/support/room-cluster.ts): real
// Membership cores with the Transcript as their state machine, real outboxes, presence between
// rooms delivered in memory the way the cluster delivers it over TCP.
import { describe, expect, test } from 'bun:test'
import type { ChatMessage } from '../../src/chat/messages'
import { LINE_WAIT_MS, LINES_AHEAD, LINES_AHEAD_MAX } from '../../src/chat/room'
import { addr, RecordingSocket, RoomCluster, singleNode } from '../support/room-cluster'

const ids = (lines: any[]) => lines.map((l) => l.id)

/** Three nodes with a user each, settled; a follower and the name of its user. */
function threeUsers(options: Parameters<typeof RoomCluster.form>[1] = {}) {
  const net = RoomCluster.form(3, options)
  for (const [n, name] of [[1, 'alice'], [2, 'bob'], [3, 'carol']] as const) net.node(n).room.join(name)
  net.settle()
  const follower = net.nodes.find((n) => n.core.role !== 'leader')!
  return { net, follower, name: follower.room.users().find((u) => u.nodeAddress === follower.address)!.username }
}

describe('ChatRoom presence', () => {
  test('user-list changes go out as one small presence frame each, never the whole list', () => {
    const net = RoomCluster.form(2)
    net.node(1).room.join('alice')
    net.node(2).room.join('bob')
    net.settle()
    const frames = net.node(1).published.filter((m) => m.type === 'presence')
    expect(frames).toEqual([
      { type: 'presence', joins: [{ username: 'alice', nodeAddress: addr(1), connectedAt: expect.any(Number) }], leaves: [] },
      { type: 'presence', joins: [{ username: 'bob', nodeAddress: addr(2), connectedAt: expect.any(Number) }], leaves: [] },
    ])
    expect(net.node(1).published.some((m) => m.type === 'users')).toBe(false)
  })

  test('a local join is one join line everywhere, with the same id, and listed on every node', () => {
    const net = RoomCluster.form(3)
    net.node(1).room.join('alice')
    net.node(2).room.join('bob') // each node delivers only once it has a local user
    net.node(3).room.join('carol')
    net.settle()
    const first = net.node(1).lines()
    expect(first.map((l) => l.message)).toEqual(['alice joined the chat', 'bob joined the chat', 'carol joined the chat'])
    for (const n of net.nodes) {
      expect(n.lines()).toEqual(first)
      expect(n.room.users().map((u) => u.username).sort()).toEqual(['alice', 'bob', 'carol'])
      expect(n.room.available('alice')).toBe(false)
    }
    expect(first[0]).toEqual({ type: 'system', id: expect.any(Number), message: 'alice joined the chat', timestamp: expect.any(Number), event: 'join', username: 'alice' })
  })

  test('a new member receives a snapshot of every node\'s users', () => {
    const net = RoomCluster.form(3)
    net.node(1).room.join('alice')
    net.node(2).room.join('bob')
    net.settle()
    // Node 3 forgets everyone (as a restarted node knows nobody) until the others send snapshots.
    net.node(3).room.setMembers([])
    expect(net.node(3).room.users()).toEqual([])
    for (const n of [1, 2]) net.node(n).room.setMembers([addr(1), addr(2)].filter((a) => a !== addr(n)))
    for (const n of [1, 2]) net.node(n).room.setMembers([addr(1), addr(2), addr(3)].filter((a) => a !== addr(n)))
    net.node(3).room.setMembers([addr(1), addr(2)])
    net.deliver()
    expect(net.node(3).room.users().map((u) => u.username).sort()).toEqual(['alice', 'bob'])
  })

  test('Up again after a rejoin: our snapshot goes to every member, not only new ones', () => {
    const net = RoomCluster.form(2)
    net.node(1).room.join('alice')
    net.settle()
    const sent: Array<{ to: string; message: ChatMessage }> = []
    const original = net.sendChat.bind(net)
    net.sendChat = (from, to, message) => {
      sent.push({ to, message })
      original(from, to, message)
    }
    net.node(1).room.setMembers([addr(2)])
    expect(sent.filter((o) => o.message.type === 'presence_snapshot')).toHaveLength(0)
    net.node(1).room.setMembers([addr(2)], true)
    expect(sent.filter((o) => o.message.type === 'presence_snapshot').map((o) => o.to)).toEqual([addr(2)])
  })

  test('the same name admitted on two nodes at once: the earlier connection keeps it, the other is closed with 4409', () => {
    const net = RoomCluster.form(2)
    net.node(1).room.join('sam') // earlier clock
    net.now += 1
    net.node(2).room.join('sam')
    net.settle()
    expect(net.node(2).disconnected).toEqual([{ username: 'sam', code: 4409 }])
    expect(net.node(1).disconnected).toEqual([])
    for (const n of net.nodes) expect(n.room.users()).toEqual([{ username: 'sam', nodeAddress: addr(1), connectedAt: expect.any(Number) }])
    // The transcript says one join, no leave: the name moved nowhere and is still online at node 1.
    net.node(2).room.join('other')
    net.settle()
    expect(net.node(1).systems()).toEqual(['sam joined the chat', 'other joined the chat'])
  })

  test('a look-alike of an online name is not available, on this node or another', () => {
    const net = RoomCluster.form(2)
    net.node(1).room.join('ace')
    net.settle()
    for (const n of net.nodes) {
      expect(n.room.available('асе')).toBe(false) // Cyrillic а, с, е
      expect(n.room.available('ace')).toBe(false)
      expect(n.room.available('acf')).toBe(true)
    }
    net.node(1).room.join('rn')
    net.settle()
    expect(net.node(2).room.available('m')).toBe(false) // "m" and "rn" share a skeleton
  })

  test('look-alikes admitted on two nodes at once: the later one gives way under its own name', () => {
    const net = RoomCluster.form(2)
    net.node(1).room.join('ace')
    net.now += 1
    net.node(2).room.join('асе')
    net.settle()
    expect(net.node(2).disconnected).toEqual([{ username: 'асе', code: 4409 }])
    for (const n of net.nodes) expect(n.room.users()).toEqual([{ username: 'ace', nodeAddress: addr(1), connectedAt: expect.any(Number) }])
    // The socket of the user who gave way closes later: that must not remove anyone.
    net.node(2).room.leave('асе')
    net.settle()
    for (const n of net.nodes) expect(n.room.users().map((u) => u.username)).toEqual(['ace'])
  })

  test('Korean system lines with --lang ko', () => {
    const net = RoomCluster.form(2, { lang: 'ko' })
    net.node(2).room.join('지켜봄')
    net.settle()
    net.node(1).room.join('민수')
    net.settle()
    net.node(1).room.leave('민수')
    net.settle()
    expect(net.node(2).systems()).toEqual(['지켜봄 님이 채팅에 참여했습니다', '민수 님이 채팅에 참여했습니다', '민수 님이 채팅을 떠났습니다'])
  })
})

describe('ChatRoom transcript', () => {
  test('chat goes through the log: every node delivers it once, with the same id, in the documented shape', () => {
    const net = RoomCluster.form(3)
    for (const [n, name] of [[1, 'alice'], [2, 'bob'], [3, 'carol']] as const) net.node(n).room.join(name)
    net.settle()
    expect(net.node(2).room.say('bob', 'hi there')).toEqual({ ok: true, value: { delivered: true } })
    net.settle()
    const chats = net.nodes.map((n) => n.lines().filter((l) => l.type === 'chat'))
    for (const c of chats) expect(c).toEqual([{ type: 'chat', id: expect.any(Number), username: 'bob', message: 'hi there', nodeAddress: addr(2), timestamp: expect.any(Number) }])
    expect(new Set(chats.map((c) => c[0].id)).size).toBe(1)
    expect(net.nodes.map((n) => n.room.stats.chatDelivered)).toEqual([1, 1, 1])
    expect(net.node(2).room.stats.chatFromUsers).toBe(1)
    expect(net.node(1).room.stats.chatFromPeers).toBe(1)
  })

  test('three senders on three nodes at once: one order, the same on every node, ids increasing, each sender in order', () => {
    const net = RoomCluster.form(3)
    const names = ['alice', 'bob', 'carol']
    names.forEach((name, i) => net.node(i + 1).room.join(name))
    net.settle()
    for (let k = 0; k < 30; k++) {
      names.forEach((name, i) => expect(net.node(i + 1).room.say(name, `${name} ${k}`).ok).toBe(true))
      if (k % 4 === 0) net.tick()
    }
    net.settle()
    const seen = net.nodes.map((n) => n.lines())
    expect(seen[0]!.filter((l) => l.type === 'chat')).toHaveLength(90)
    for (const s of seen) expect(s).toEqual(seen[0]!)
    const idList = ids(seen[0]!)
    expect(idList).toEqual([...idList].sort((a, b) => a - b))
    expect(new Set(idList).size).toBe(idList.length)
    for (const name of names) {
      const own = seen[0]!.filter((l) => l.type === 'chat' && l.username === name).map((l) => l.message)
      expect(own).toEqual(Array.from({ length: 30 }, (_, k) => `${name} ${k}`))
    }
  })

  test('blank messages are ignored, long ones and control characters refused: nothing is proposed for them', () => {
    const { net, node } = singleNode()
    node.room.join('alice')
    const applied = node.transcript.applied
    expect(node.room.say('alice', '   ')).toEqual({ ok: true, value: { delivered: false } })
    expect(node.room.say('alice', 'x'.repeat(21))).toMatchObject({ ok: false, error: { code: 'message_too_long' } })
    expect(node.room.say('alice', 'bell\u0007')).toMatchObject({ ok: false, error: { code: 'bad_message' } })
    expect(node.transcript.applied).toBe(applied)
    expect(node.room.say('alice', '가'.repeat(20))).toEqual({ ok: true, value: { delivered: true } })
    net.settle()
    expect(node.chats()).toEqual(['가'.repeat(20)])
  })

  test('a clientMsgId is acked with the line id; sent again, on the same or another node, it is acked again and not delivered twice', () => {
    const net = RoomCluster.form(2)
    net.node(1).room.join('alice')
    net.node(2).room.join('bob')
    net.settle()
    net.node(1).room.say('alice', 'once', 'm-1')
    net.settle()
    const line = net.node(1).lines().find((l) => l.type === 'chat')
    expect(net.node(1).toUser).toEqual([{ username: 'alice', frame: { type: 'ack', clientMsgId: 'm-1', id: line.id } }])
    net.node(1).room.say('alice', 'once', 'm-1')
    net.settle()
    // alice reconnects to node 2 (her old socket is gone) and sends it again there.
    net.node(1).room.leave('alice')
    net.settle()
    net.node(2).room.join('alice')
    net.node(2).room.say('alice', 'once', 'm-1')
    net.settle()
    expect(net.node(1).toUser.map((u) => u.frame)).toEqual([{ type: 'ack', clientMsgId: 'm-1', id: line.id }, { type: 'ack', clientMsgId: 'm-1', id: line.id }])
    expect(net.node(2).toUser).toEqual([{ username: 'alice', frame: { type: 'ack', clientMsgId: 'm-1', id: line.id } }])
    for (const n of net.nodes) expect(n.chats()).toEqual(['once'])
    // Another user's same clientMsgId is another message.
    net.node(2).room.say('bob', 'mine', 'm-1')
    net.settle()
    expect(net.node(2).chats()).toEqual(['once', 'mine'])
    // A plain message (no clientMsgId) gets no ack.
    const acks = net.node(2).toUser.length
    net.node(2).room.say('bob', 'plain')
    net.settle()
    expect(net.node(2).toUser.length).toBe(acks)
  })

  test('proposals lost on the way are proposed again and delivered once, in the order they were said', () => {
    const { net, follower, name } = threeUsers()
    let lost = 0
    // Said in one turn, they go in one proposal; it is lost, and so is the first retry.
    let sent = 0
    net.dropRaft = (m) => m.type === 'proposal' && ++sent <= 2 && ++lost > 0
    for (const text of ['one', 'two', 'three', 'four']) follower.room.say(name, text)
    net.tick()
    expect(lost).toBe(1)
    expect(follower.room.pending).toBeGreaterThan(0)
    net.settle(1_000)
    expect(lost).toBe(2)
    expect(sent).toBeGreaterThan(2)
    for (const n of net.nodes) expect(n.chats()).toEqual(['one', 'two', 'three', 'four'])
  })

  test('a removed node\'s users leave in one line on every remaining node, with the presence frames', () => {
    const net = RoomCluster.form(3)
    net.node(1).room.join('alice')
    net.node(2).room.join('bob')
    net.node(3).room.join('carol')
    net.node(3).room.join('dave')
    net.settle()
    net.crash(3)
    net.runUntil(() => net.nodes.slice(0, 2).every((n) => n.room.users().length === 2 && n.systems().length === 5), 2_000, 'node 3 removed')
    for (const n of net.nodes.slice(0, 2)) {
      const last = n.lines().at(-1)
      expect(last).toMatchObject({ type: 'system', event: 'leave', username: 'carol', usernames: ['carol', 'dave'], message: 'carol and dave left the chat' })
      expect(n.published.filter((f) => f.type === 'presence').flatMap((f) => f.leaves.map((u: { username: string }) => u.username)).sort()).toEqual(['carol', 'dave'])
    }
    expect(net.node(1).lines()).toEqual(net.node(2).lines())
  })

  test(`past ${LINES_AHEAD} lines waiting, the oldest proposed over ${LINE_WAIT_MS} ms ago, or ${LINES_AHEAD_MAX} at all, a node refuses its users' new lines as overloaded: a flood never queues the whole cluster behind it`, () => {
    const net = RoomCluster.form(3)
    for (const [n, name] of [[1, 'alice'], [2, 'bob']] as const) net.node(n).room.join(name)
    net.settle()
    const node = net.node(1)
    // A burst the cluster takes at once is not refused, up to LINES_AHEAD_MAX.
    for (let i = 0; i < LINES_AHEAD_MAX - 1; i++) expect(node.room.say('alice', `a${i}`).ok).toBe(true)
    expect(node.room.say('alice', 'in time').ok).toBe(true)
    expect(node.room.say('alice', 'one too many')).toMatchObject({ ok: false, error: { code: 'overloaded' } })
    net.settle()
    // Fewer waiting, but for too long.
    for (let i = 0; i < LINES_AHEAD; i++) expect(node.room.say('alice', `w${i}`).ok).toBe(true)
    net.now += LINE_WAIT_MS // not applied yet, but not waiting past the bound
    expect(node.room.say('alice', 'still in time').ok).toBe(true)
    net.now += 1
    expect(node.room.say('alice', 'one more')).toMatchObject({ ok: false, error: { code: 'overloaded' } })
    // Another node's user is not held back by it: nothing of its node is waiting.
    expect(net.node(2).room.say('bob', 'b0').ok).toBe(true)
    net.settle()
    expect(node.room.pending).toBe(0)
    expect(node.room.say('alice', 'after').ok).toBe(true)
    net.settle()
    const chat = (n: (typeof net.nodes)[number]) => n.transcript.after(0).flatMap((l) => (l.type === 'chat' ? [l.message] : []))
    const said = [...Array.from({ length: LINES_AHEAD_MAX - 1 }, (_, i) => `a${i}`), 'in time', ...Array.from({ length: LINES_AHEAD }, (_, i) => `w${i}`), 'still in time', 'after']
    expect(chat(node).filter((m) => m !== 'b0')).toEqual(said)
    expect(chat(node)).toContain('b0')
    for (const n of net.nodes) expect(chat(n)).toEqual(chat(node))
  })

  test('lines held through a partition all go in after the heal, once, and the node takes new lines as soon as it knows a leader again', () => {
    const { net, follower: cutOff, name } = threeUsers()
    net.isolate(cutOff.address)
    for (let i = 0; i < 2 * LINES_AHEAD; i++) expect(cutOff.room.say(name, `held ${i}`).ok).toBe(true)
    net.tick(200) // 2 s cut off: everything it holds is old
    expect(cutOff.room.pending).toBe(2 * LINES_AHEAD)
    net.heal()
    // The moment it knows a leader again, what it holds is proposed anew and waits from then
    // (outbox.test.ts); here the in-memory cluster takes it all in that same step.
    for (let i = 0; i < 500 && cutOff.core.leaderId === null; i++) net.tick(1)
    expect(cutOff.core.leaderId).not.toBeNull()
    expect(cutOff.room.say(name, 'right after the heal').ok).toBe(true)
    net.settle(2_000)
    expect(cutOff.room.pending).toBe(0)
    expect(net.nodes[0]!.transcript.after(0).filter((l) => l.type === 'chat')).toHaveLength(2 * LINES_AHEAD + 1)
  })

  test('a node cut off from the leader holds what its users say (pending) and refuses past --max-pending; after the heal it all lands once', () => {
    const { net, follower: cutOff, name } = threeUsers({ maxPending: 3 })
    net.isolate(cutOff.address)
    for (const text of ['a', 'b', 'c']) expect(cutOff.room.say(name, text, `id-${text}`).ok).toBe(true)
    expect(cutOff.room.say(name, 'd')).toMatchObject({ ok: false, error: { code: 'unavailable' } })
    net.tick(50)
    expect(cutOff.room.pending).toBe(3)
    expect(cutOff.toUser).toEqual([])
    net.heal()
    net.settle(2_000)
    for (const n of net.nodes) expect(n.chats()).toEqual(['a', 'b', 'c'])
    expect(cutOff.toUser.map((u) => u.frame.clientMsgId)).toEqual(['id-a', 'id-b', 'id-c'])
  })
})

describe('ChatRoom history and resume', () => {
  function withLines(count: number, options = {}) {
    const { net, node } = singleNode({ historyOnJoin: 5, ...options })
    node.room.join('alice')
    for (let i = 1; i <= count; i++) node.room.say('alice', `m${i}`)
    net.settle()
    return { net, node }
  }

  test('a new connection gets the last --history-on-join lines, then live lines, none missing or repeated', () => {
    const { net, node } = withLines(8)
    const socket = node.socket()
    node.room.join('bob')
    node.room.admit(socket, {})
    expect(socket.subscribed).toBe(true)
    const history = socket.sent[0]
    expect(history).toMatchObject({ type: 'history', epoch: node.transcript.epoch, complete: true })
    // The last five lines; bob's own join has no place in the transcript yet: it comes live.
    expect(history.messages.map((m: any) => m.message)).toEqual(['m4', 'm5', 'm6', 'm7', 'm8'])
    node.room.say('alice', 'live')
    net.settle()
    expect(socket.sent.slice(1).map((m) => m.message)).toEqual(['bob joined the chat', 'live'])
  })

  test('--history-on-join 0 sends no history frame; a resume still replays', () => {
    const { node } = withLines(3, { historyOnJoin: 0 })
    const fresh = new RecordingSocket()
    node.room.admit(fresh, {})
    expect(fresh.sent).toEqual([])
    const first = node.transcript.latest(3)[0]!.id
    const resumed = new RecordingSocket()
    node.room.admit(resumed, { since: first, epoch: node.transcript.epoch })
    expect(resumed.sent[0]).toMatchObject({ type: 'history', complete: true, messages: [{ message: 'm2' }, { message: 'm3' }] })
  })

  test('a resume replays every line after `since`, then continues live, with no gap and no duplicate', () => {
    const { net, node } = withLines(6)
    const since = node.lines().find((l) => l.message === 'm2').id
    const socket = node.socket()
    node.room.admit(socket, { since, epoch: node.transcript.epoch })
    node.room.say('alice', 'm7')
    net.settle()
    const got = socket.sent.flatMap((f) => (f.type === 'history' ? f.messages : [f])).filter((f) => f.type === 'chat')
    expect(got.map((f) => f.message)).toEqual(['m3', 'm4', 'm5', 'm6', 'm7'])
    expect(socket.sent[0].complete).toBe(true)
  })

  test('a resume from a line this node has not applied yet waits until it has, then gets the users, the history and live lines', () => {
    const net = RoomCluster.form(3)
    for (const [n, name] of [[1, 'alice'], [2, 'bob'], [3, 'carol']] as const) net.node(n).room.join(name)
    net.settle()
    // A follower falls behind: it hears nothing from the leader for a while.
    const behind = net.nodes.find((n) => n.core.role !== 'leader')!
    const ahead = net.leader()!
    const user = ahead.room.users().find((u) => u.nodeAddress === ahead.address)!.username
    net.cut(ahead.address, behind.address)
    ahead.room.say(user, 'while you were away')
    net.runUntil(() => ahead.lines().at(-1)?.message === 'while you were away', 50, 'the line committed without the cut-off follower')
    const since = ahead.lines().at(-1).id
    const socket = behind.socket()
    behind.room.admit(socket, { since, epoch: ahead.transcript.epoch })
    expect(socket.sent).toEqual([])
    expect(socket.subscribed).toBe(false)
    net.heal()
    net.settle()
    expect(socket.subscribed).toBe(true)
    expect(socket.sent[0].type).toBe('users')
    expect(socket.sent[1]).toMatchObject({ type: 'history', complete: true, messages: [] })
    ahead.room.say(user, 'next')
    net.settle()
    expect(socket.sent.slice(2).map((f) => f.message)).toEqual(['next'])
  })

  test('a resume from another epoch (a cluster founded anew) gets the recent history marked incomplete', () => {
    const { node } = withLines(3)
    const socket = node.socket()
    node.room.admit(socket, { since: 2, epoch: 'some other cluster' })
    expect(socket.sent[0]).toMatchObject({ type: 'history', complete: false })
    expect(socket.sent[0].messages.map((m: any) => m.message)).toEqual(['alice joined the chat', 'm1', 'm2', 'm3'])
    expect(socket.subscribed).toBe(true)
  })

  test('past --history-size: a resume from before the kept lines, and a short history, say they are incomplete', () => {
    const { node } = withLines(12, { historySize: 4, historyOnJoin: 10 })
    const kept = node.transcript.latest(100)
    expect(kept.map((l: any) => l.message)).toEqual(['m9', 'm10', 'm11', 'm12'])
    const resume = new RecordingSocket()
    node.room.admit(resume, { since: 1, epoch: node.transcript.epoch })
    expect(resume.sent[0]).toMatchObject({ type: 'history', complete: false })
    expect(resume.sent[0].messages.map((m: any) => m.message)).toEqual(['m9', 'm10', 'm11', 'm12'])
    const fresh = new RecordingSocket()
    node.room.admit(fresh, {})
    expect(fresh.sent[0]).toMatchObject({ type: 'history', complete: false })
    expect(fresh.sent[0].messages).toHaveLength(4)
    // Resuming from a line still kept is complete.
    const recent = new RecordingSocket()
    node.room.admit(recent, { since: kept[1]!.id, epoch: node.transcript.epoch })
    expect(recent.sent[0]).toMatchObject({ complete: true, messages: [{ message: 'm11' }, { message: 'm12' }] })
  })

  test('page(): lines before an id, oldest first, at most `limit`; complete only when nothing older is missing', () => {
    const { node } = withLines(10)
    const all = node.lines()
    const m8 = all.find((l) => l.message === 'm8').id
    const page = node.room.page(m8, 3)
    expect(page.messages.map((m: any) => m.message)).toEqual(['m5', 'm6', 'm7'])
    expect(page.complete).toBe(true)
    expect(node.room.page(undefined, 2).messages.map((m: any) => m.message)).toEqual(['m9', 'm10'])
    const oldest = node.room.page(all[2].id, 50)
    expect(oldest.messages.map((m: any) => m.message)).toEqual(['alice joined the chat', 'm1'])
    expect(oldest.complete).toBe(true)
    const { node: small } = withLines(10, { historySize: 4 })
    const short = small.room.page(undefined, 50)
    expect(short.messages).toHaveLength(4)
    expect(short.complete).toBe(false)
  })
})

describe('ChatRoom catching up', () => {
  test('a user resumes on another node from the last id it saw: the lines it missed, then live ones, none twice', () => {
    const net = RoomCluster.form(3)
    for (const [n, name] of [[1, 'alice'], [2, 'bob'], [3, 'carol']] as const) net.node(n).room.join(name)
    net.settle()
    net.node(1).room.say('alice', 'seen')
    net.settle()
    const lastSeen = net.node(3).lines().at(-1).id
    // carol's node goes away for her; she reconnects to node 2 while alice goes on.
    net.node(3).room.leave('carol')
    net.node(1).room.say('alice', 'missed 1')
    net.node(1).room.say('alice', 'missed 2')
    net.settle()
    const socket = net.node(2).socket()
    net.node(2).room.join('carol')
    net.node(2).room.admit(socket, { since: lastSeen, epoch: net.node(2).transcript.epoch })
    net.node(1).room.say('alice', 'live')
    net.settle()
    const got = socket.sent.flatMap((f) => (f.type === 'history' ? f.messages : [f])).filter((f) => f.type === 'chat').map((f) => f.message)
    expect(got).toEqual(['missed 1', 'missed 2', 'live'])
  })

  test('a node that fell behind the compacted log is restored from a snapshot: its users get every line they missed, in order, once', () => {
    const net = RoomCluster.form(3, { compaction: { snapshotEvery: 10, keepEntries: 2 } })
    for (const [n, name] of [[1, 'alice'], [2, 'bob'], [3, 'carol']] as const) net.node(n).room.join(name)
    net.settle()
    const behind = net.nodes.find((n) => n.core.role !== 'leader')!
    const speaker = net.leader()!
    const name = speaker.room.users().find((u) => u.nodeAddress === speaker.address)!.username
    net.isolate(behind.address)
    for (let i = 0; i < 30; i++) speaker.room.say(name, `m${i}`)
    net.tick(5)
    expect(speaker.core.logStart).toBeGreaterThan(behind.core.lastIndex())
    const before = behind.lines().length
    net.heal()
    net.settle(1_000)
    expect(net.sent.get('install_snapshot')).toBeGreaterThan(0)
    expect(behind.lines().slice(before).map((l) => l.message)).toEqual(Array.from({ length: 30 }, (_, i) => `m${i}`))
    expect(behind.lines()).toEqual(speaker.lines().slice(-behind.lines().length))
  })

  test('restored from a snapshot that no longer holds every line it missed, a node says so before the lines it has', () => {
    const net = RoomCluster.form(3, { compaction: { snapshotEvery: 10, keepEntries: 2 }, historySize: 8 })
    for (const [n, name] of [[1, 'alice'], [2, 'bob'], [3, 'carol']] as const) net.node(n).room.join(name)
    net.settle()
    const behind = net.nodes.find((n) => n.core.role !== 'leader')!
    const speaker = net.leader()!
    const name = speaker.room.users().find((u) => u.nodeAddress === speaker.address)!.username
    net.isolate(behind.address)
    // One line a turn: the leader delivers each, and its ring of 8 moves on, before the snapshot.
    for (let i = 0; i < 30; i++) {
      speaker.room.say(name, `m${i}`)
      net.deliver()
    }
    net.tick(5)
    const before = behind.published.length
    net.heal()
    net.settle(1_000)
    expect(net.sent.get('install_snapshot')).toBeGreaterThan(0)
    const after = behind.published.slice(before).filter((f) => f.type !== 'presence')
    expect(after[0]).toEqual({ type: 'history', epoch: speaker.transcript.epoch, messages: [], complete: false })
    // The snapshot (taken at m22) held its last 8 lines; the entries after it came in one append.
    expect(after.slice(1).map((f) => f.message)).toEqual(Array.from({ length: 15 }, (_, i) => `m${15 + i}`))
  })

  // Regression: lines are delivered after each cluster step, from the history ring, and a step
  // that applied more lines than --history-size (a commit that jumps, an append of up to 64
  // entries) used to drop some before local users got them (`complete: false` for users who
  // never disconnected). The ring now keeps undelivered lines (Transcript.deliveredUpTo).
  test('a step that applies more lines than --history-size still delivers every line to connected users', () => {
    const net = RoomCluster.form(3, { historySize: 3 })
    for (const [n, name] of [[1, 'alice'], [2, 'bob'], [3, 'carol']] as const) net.node(n).room.join(name)
    net.settle()
    const behind = net.nodes.find((n) => n.core.role !== 'leader')!
    const speaker = net.leader()!
    const name = speaker.room.users().find((u) => u.nodeAddress === speaker.address)!.username
    net.isolate(behind.address)
    for (let i = 0; i < 10; i++) speaker.room.say(name, `m${i}`)
    net.tick(5)
    const before = behind.published.length
    net.heal()
    net.settle(1_000)
    expect(behind.published.slice(before).filter((f) => f.type === 'chat').map((f) => f.message)).toEqual(Array.from({ length: 10 }, (_, i) => `m${i}`))
  })
})

describe('ChatRoom and proposals from peers', () => {
  const peer = { address: addr(2), incarnation: 'i1' }
  const from = `${addr(2)}#i1`
  const entry = (over: Record<string, unknown> = {}) => ({ type: 'chat', origin: from, seq: 1, key: 'k', username: 'bob', message: 'hi', nodeAddress: addr(2), timestamp: 1, ...over })

  test('a peer speaks only for itself: an entry claiming another origin or node is refused', () => {
    const { node } = singleNode()
    expect(node.room.checkProposal(peer, from, [entry({ origin: `${addr(3)}#i1` })])).toMatchObject({ ok: false })
    expect(node.room.checkProposal(peer, from, [entry({ nodeAddress: addr(3) })])).toEqual({ ok: false, error: `chat claims node "${addr(3)}", sent by ${addr(2)}` })
    expect(node.room.checkProposal(peer, from, [entry(), entry({ type: 'join', seq: 2, nodeAddress: addr(1) })]).ok).toBe(false)
  })

  test('fields are held to the browser rules: usernames, text length, control characters', () => {
    const { node } = singleNode()
    const refused = [
      entry({ username: 'bad\u0000name' }),
      entry({ username: 'a'.repeat(33) }),
      entry({ username: '  padded ' }), // valid once trimmed, but a node sends the canonical form
      entry({ username: 'Jose\u0301' }), // not NFC
      entry({ message: 'x'.repeat(21) }), // maxMessageLength is 20 in these rooms
      entry({ message: 'bell\u0007' }),
      entry({ message: 'esc\u001b[2J' }),
      entry({ message: '   ' }),
      entry({ type: 'join', usernames: ['\u202Eevil'] }),
      entry({ type: 'leave', usernames: [''] }),
      entry({ type: 'join', usernames: ['fine', 'bad\u0000name'] }), // every name of a gathered entry
    ]
    for (const e of refused) expect(node.room.checkProposal(peer, from, [e]).ok).toBe(false)
    for (const e of [entry({ message: 'line one\n\tline two' }), entry({ username: '김철수', message: '안녕하세요' }), entry({ message: 'x'.repeat(20) }), entry({ type: 'leave', usernames: ['bob'] }), entry({ type: 'join', usernames: ['bob', 'carol'] })]) {
      expect(node.room.checkProposal(peer, from, [e])).toEqual({ ok: true, value: undefined })
    }
  })

  test('presence from a peer is checked and filed under that peer\'s own node', () => {
    const net = RoomCluster.form(2)
    const node = net.node(1)
    expect(node.room.onPeerMessage(peer, { type: 'presence_join', user: { username: '\u202Eevil', connectedAt: 1 } }).ok).toBe(false)
    expect(node.room.onPeerMessage(peer, { type: 'presence_snapshot', users: [{ username: 'twice', connectedAt: 1 }, { username: 'twice', connectedAt: 2 }] }).ok).toBe(false)
    expect(node.room.onPeerMessage(peer, { type: 'presence_leave', username: 'x\u0000' }).ok).toBe(false)
    expect(node.room.users()).toEqual([])
    node.room.onPeerMessage(peer, { type: 'presence_join', user: { username: 'mallory', connectedAt: 5 } })
    expect(node.room.users()).toEqual([{ username: 'mallory', nodeAddress: addr(2), connectedAt: 5 }])
  })
})

describe('ChatRoom presence batching', () => {
  test('with a timer, a storm of joins and leaves goes out as one presence frame to users and one batch to each peer', () => {
    const timers: Array<() => void> = []
    const net = RoomCluster.form(2, { after: (_ms, fn) => timers.push(fn) })
    for (const fire of timers.splice(0)) fire()
    const node = net.node(1)
    const before = node.published.length
    const sent: any[] = []
    const sendChat = net.sendChat.bind(net)
    net.sendChat = (from, to, message) => {
      if (from === node.address) sent.push(message)
      sendChat(from, to, message)
    }
    for (let i = 0; i < 200; i++) node.room.join(`u${i}`)
    node.room.leave('u0')
    node.room.leave('u1')
    node.room.join('u1')
    // One turn for the peers, one window for the users.
    expect(timers).toHaveLength(2)
    expect(node.published.slice(before).filter((m) => m.type === 'presence')).toEqual([])
    for (const fire of timers.splice(0)) fire()
    const frames = node.published.slice(before).filter((m) => m.type === 'presence')
    expect(frames).toHaveLength(1)
    // u0 joined and left within the window: told as a leave; u1 as a leave and its latest self.
    expect(frames[0].leaves.map((u: { username: string }) => u.username).sort()).toEqual(['u0', 'u1'])
    expect(frames[0].joins.map((u: { username: string }) => u.username).sort()).toEqual(Array.from({ length: 199 }, (_, i) => `u${i + 1}`).sort())
    const batches = sent.filter((m) => m.type === 'presence_batch')
    expect(batches).toHaveLength(1)
    expect(batches[0]).toMatchObject({ leaves: ['u0'] })
    expect(batches[0].joins).toHaveLength(199)
    // The join and leave lines are the transcript's: every real change told once, in order, in
    // far fewer lines than changes (a room of 100 or more gathers them, presence-lines.ts).
    for (let round = 0; round < 20 && (round === 0 || timers.length > 0); round++) {
      net.settle()
      for (const fire of timers.splice(0)) fire()
    }
    net.settle()
    // Names from the transcript (a frame lists at most NAMES_IN_FRAME of them), counts from the frames.
    const lines = node.lines().filter((l) => l.type === 'system')
    expect(lines.reduce((n, l) => n + (l.count ?? 1), 0)).toBe(203)
    const told = node.transcript.after(0).flatMap((l) => (l.type === 'system' ? l.usernames.map((u) => `${l.event} ${u}`) : []))
    expect(told.filter((t: string) => t.startsWith('join'))).toHaveLength(201)
    expect(told.filter((t: string) => t.startsWith('leave')).sort()).toEqual(['leave u0', 'leave u1'])
    expect(told.indexOf('join u0')).toBeLessThan(told.indexOf('leave u0'))
    expect(told.lastIndexOf('join u1')).toBeGreaterThan(told.indexOf('leave u1'))
    expect(lines.length).toBeLessThan(110)
  })

  test("a new socket's users frame leaves out the joins still waiting for their presence frame", () => {
    const timers: Array<() => void> = []
    const { net, node } = singleNode({ after: (_ms, fn) => timers.push(fn) })
    node.room.join('early')
    for (const fire of timers.splice(0)) fire()
    node.room.join('late')
    const names = (json: string) => (JSON.parse(json) as { users: Array<{ username: string }> }).users.map((u) => u.username)
    expect(names(node.room.usersJson())).toEqual(['early'])
    for (const fire of timers.splice(0)) fire()
    expect(names(node.room.usersJson()).sort()).toEqual(['early', 'late'])
    void net
  })
})

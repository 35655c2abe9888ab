// A session's life through the gateway: claims, the username rule, the rate limit and flooding,
// on a real room over a real single-node log and an injected clock. The sockets record what the gateway did to them.
import { describe, expect, test } from 'bun:test'
import { ChatGateway } from '../../src/chat/gateway'
import { FLOOD } from '../../src/chat/rate-limit'
import { Sockets } from '../../src/chat/sockets'
import { ok, err } from '../../src/result'
import { addr, singleNode, type NodeOptions } from '../support/room-cluster'

const self = addr(1)

function setup(rateLimit = { perSecond: 20, burst: 40 }, options: NodeOptions = {}) {
  const { net, node } = singleNode({ maxMessageLength: 2000, ...options })
  const sockets = new Sockets()
  const gateway = new ChatGateway({ room: node.room, sockets, selfAddress: self, now: () => net.now, rateLimit })
  // Each frame in its own event-loop turn: what it proposed is proposed, applied and delivered before the next.
  const message = gateway.message.bind(gateway)
  gateway.message = (id, data) => {
    message(id, data)
    net.deliver()
  }
  const open = gateway.open.bind(gateway)
  gateway.open = (...args) => {
    open(...args)
    net.deliver()
  }
  // Acks go to the user's socket, as createChatNode wires sendToUser to Sockets.send.
  node.toUser.push = (...items) => {
    for (const { username, frame } of items) sockets.send(username, JSON.stringify(frame))
    return 0
  }
  const socket = () => {
    const client = node.socket()
    return { s: client, client }
  }
  return { gateway, room: node.room, node, net, published: node.published, socket, advance: (ms: number) => (net.now += ms) }
}

const chats = (published: any[]) => published.filter((m) => m.type === 'chat').map((m) => m.message)

describe('ChatGateway.open', () => {
  test('a refused claim closes with its code and reason; a bad name with 4400; a look-alike with 4409', () => {
    const { gateway, socket } = setup()
    const a = socket()
    gateway.open('1', a.client, err({ code: 4401, reason: 'token expired' }))
    expect(a.s.closed).toEqual({ code: 4401, reason: 'token expired' })
    const b = socket()
    gateway.open('2', b.client, ok('аlice'))
    expect(b.s.closed?.code).toBe(4400)
    const c = socket()
    gateway.open('3', c.client, ok('ａｌｉｃｅ'))
    expect(c.s.sent[0]).toEqual({ type: 'welcome', username: 'alice', nodeAddress: self })
    const d = socket()
    gateway.open('4', d.client, ok('alice'))
    expect(d.s.closed).toEqual({ code: 4409, reason: 'username taken' })
  })
})

describe('ChatGateway.message', () => {
  test('over the rate: an error frame, not delivered; flooding on closes with 4429 and the user leaves', () => {
    const { gateway, room, published, socket, advance } = setup({ perSecond: 20, burst: 40 })
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    for (let i = 0; i < 41; i++) gateway.message('1', `m${i}`)
    expect(chats(published)).toHaveLength(40)
    expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'rate_limited' })
    advance(50) // one token back
    gateway.message('1', 'after a pause')
    expect(chats(published).at(-1)).toBe('after a pause')
    // One refusal so far in this window; the limit is FLOOD.refusalsMax of them.
    for (let i = 0; i < FLOOD.refusalsMax - 1; i++) gateway.message('1', 'flood')
    expect(a.s.closed).toBeNull()
    gateway.message('1', 'flood')
    expect(a.s.closed?.code).toBe(4429)
    expect(room.users()).toEqual([])
    expect(chats(published).filter((m) => m === 'flood')).toHaveLength(0)
  })

  test('control characters other than newline and tab are refused; text is otherwise kept exactly', () => {
    const { gateway, published, socket } = setup()
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    for (const bad of ['a\u0000b', 'bell\u0007', 'esc\u001b[31m', 'cr\r', 'del\u007f', 'c1\u0085', 'rlo\u202Etxt']) {
      gateway.message('1', bad)
      expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'bad_message' })
    }
    const kept = ['line 1\nline 2\ttab', '  spaced  ', 'שלום عربي', 'a\u200Db', '<b>x</b>']
    for (const text of kept) gateway.message('1', JSON.stringify({ type: 'chat', message: text }))
    expect(chats(published)).toEqual(kept)
  })
})

describe('ChatGateway and the transcript', () => {
  test('a new connection gets welcome, users, then its history, then live lines', () => {
    const { gateway, socket } = setup()
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    gateway.message('1', 'before bob')
    const b = socket()
    gateway.open('2', b.client, ok('bob'))
    expect(b.s.sent.map((f) => f.type)).toEqual(['welcome', 'users', 'history', 'system'])
    expect(b.s.sent[2].messages.map((m: any) => m.message)).toEqual(['alice joined the chat', 'before bob'])
    // Its own join line comes live, once it has its place in the transcript.
    expect(b.s.sent[3].message).toBe('bob joined the chat')
    gateway.message('1', 'after')
    expect(b.s.sent.slice(4).map((f) => f.message)).toEqual(['after'])
  })

  test('a resume (since, epoch) replays only what came after `since`', () => {
    const { gateway, node, socket } = setup()
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    for (const text of ['one', 'two', 'three']) gateway.message('1', text)
    const since = node.lines().find((l) => l.message === 'one').id
    const b = socket()
    gateway.open('2', b.client, ok('bob'), { since, epoch: node.transcript.epoch })
    expect(b.s.sent[2]).toMatchObject({ type: 'history', complete: true })
    expect(b.s.sent[2].messages.map((m: any) => m.message)).toEqual(['two', 'three'])
    expect(b.s.sent.slice(3).map((f) => f.message)).toEqual(['bob joined the chat'])
  })

  test('{"type":"chat","clientMsgId"} is acked with the line id; sent again it is acked again and not delivered twice', () => {
    const { gateway, node, socket } = setup()
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    gateway.message('1', JSON.stringify({ type: 'chat', message: 'sure', clientMsgId: 'c-1' }))
    const line = node.lines().find((l) => l.type === 'chat')
    expect(line).toMatchObject({ message: 'sure' })
    expect(a.s.sent.filter((f) => f.type === 'ack')).toEqual([{ type: 'ack', clientMsgId: 'c-1', id: line.id }])
    gateway.message('1', JSON.stringify({ type: 'chat', message: 'sure', clientMsgId: 'c-1' }))
    expect(a.s.sent.filter((f) => f.type === 'ack')).toEqual([{ type: 'ack', clientMsgId: 'c-1', id: line.id }, { type: 'ack', clientMsgId: 'c-1', id: line.id }])
    expect(node.chats()).toEqual(['sure'])
    gateway.message('1', JSON.stringify({ type: 'chat', message: 'x', clientMsgId: 'bad id with spaces' }))
    expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'bad_message' })
  })

  test('text that looks like JSON or a number, or is padded, is kept exactly', () => {
    const { gateway, node, socket } = setup()
    gateway.open('1', socket().client, ok('alice'))
    // Text frames arrive as sent: only a JSON object with a `type` is a typed message.
    const texts = ['007', 'true', '{"a":1}', '"quoted"', '[1,2]', '  x  ', '{not json']
    for (const data of texts) gateway.message('1', data)
    expect(node.chats()).toEqual(texts)
  })

  test('a message refused for now holds the later ones until it is sent again: a user\'s messages land in the order said', () => {
    const { gateway, published, socket, advance } = setup({ perSecond: 20, burst: 2 })
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    const say = (id: string) => gateway.message('1', JSON.stringify({ type: 'chat', message: id, clientMsgId: id }))
    const errors = () => a.s.sent.filter((f: any) => f.type === 'error')
    say('m1')
    say('m2')
    say('m3') // over the rate: refused for now
    expect(errors().at(-1)).toMatchObject({ code: 'rate_limited' })
    advance(1000) // the bucket is full again, but m4 is after m3
    say('m4')
    expect(errors().at(-1)).toMatchObject({ code: 'rate_limited', message: expect.stringContaining('m3') })
    gateway.message('1', 'plain text waits too')
    expect(errors()).toHaveLength(3)
    expect(chats(published)).toEqual(['m1', 'm2'])
    // Sent again in order, as the page does: m3, then m4 (the frames held back used the bucket too).
    advance(1000)
    say('m3')
    say('m4')
    expect(chats(published)).toEqual(['m1', 'm2', 'm3', 'm4'])
    // A hold runs out: a sender that never sends the refused one again is served after HOLD_MS.
    advance(1000)
    say('m5')
    say('m6')
    say('m7') // refused for now
    advance(29_000)
    say('m8')
    expect(chats(published)).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6'])
    advance(1_001)
    say('m8')
    expect(chats(published).at(-1)).toBe('m8')
  })

  test('a node that holds --max-pending unsent lines refuses the next with `unavailable`', () => {
    const { gateway, node, net, socket } = setup(undefined, { maxPending: 2 })
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    // The core stops taking proposals (as when no leader can be reached): the outbox holds them.
    node.alive = false
    gateway.message('1', 'one')
    gateway.message('1', 'two')
    gateway.message('1', 'three')
    expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'unavailable' })
    expect(gateway.stats.refused.unavailable).toBe(1)
    node.alive = true
    net.settle()
    expect(node.chats()).toEqual(['one', 'two'])
  })
})

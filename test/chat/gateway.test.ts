// A session's life through the gateway: claims, the username rule, the rate limit and flooding,
// on a real room and an injected clock. The sockets record what the gateway did to them.
import { describe, expect, test } from 'bun:test'
import { ChatGateway } from '../../src/chat/gateway'
import { FLOOD } from '../../src/chat/rate-limit'
import { ChatRoom } from '../../src/chat/room'
import { Sockets, type ClientSocket } from '../../src/chat/sockets'
import { ok, err } from '../../src/result'

const self = 'bun://S@127.0.0.1:2551'

function setup(rateLimit = { perSecond: 20, burst: 40 }, overloaded?: () => boolean) {
  let clock = 1000
  const published: any[] = []
  const room = new ChatRoom({
    selfAddress: self,
    lang: 'en',
    maxMessageLength: 2000,
    now: () => clock,
    publish: (json) => published.push(JSON.parse(json)),
    broadcast: () => {},
    sendTo: () => {},
    disconnect: () => {},
  })
  const gateway = new ChatGateway({ room, sockets: new Sockets(), selfAddress: self, now: () => clock, rateLimit, overloaded })
  const socket = () => {
    const s = { sent: [] as any[], closed: null as null | { code?: number; reason?: string } }
    const client: ClientSocket = {
      send: (json) => s.sent.push(JSON.parse(json)),
      close: (code, reason) => void (s.closed = { code, reason }),
      subscribe: () => {},
    }
    return { s, client }
  }
  return { gateway, room, published, socket, advance: (ms: number) => (clock += ms) }
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
  test('while the node is overloaded a chat frame is refused with `overloaded` and not delivered; after, it goes through', () => {
    let busy = true
    const { gateway, published, socket } = setup(undefined, () => busy)
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    gateway.message('1', 'shed')
    expect(chats(published)).toEqual([])
    expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'overloaded' })
    expect(gateway.stats.refused.overloaded).toBe(1)
    busy = false
    gateway.message('1', 'served')
    expect(chats(published)).toEqual(['served'])
  })

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
    for (const text of kept) gateway.message('1', { type: 'chat', message: text })
    expect(chats(published)).toEqual(kept)
  })
})

// A session's life through the gateway: claims, the username rule, the rate limit and flooding,
// on a real room and an injected clock. The sockets record what the gateway did to them.
import { describe, expect, test } from 'bun:test'
import { ChatGateway } from '../../src/chat/gateway'
import { FLOOD } from '../../src/chat/rate-limit'
import { ChatRoom } from '../../src/chat/room'
import { Sockets, type ClientSocket } from '../../src/chat/sockets'
import { LagMonitor } from '../../src/load'
import { ok, err } from '../../src/result'

const self = 'bun://S@127.0.0.1:2551'

function setup(rateLimit = { perSecond: 20, burst: 40 }) {
  let clock = 1000
  // The real lag monitor on the same hand-driven clock: `probe(ms)` is its timer firing ms later.
  let fireProbe = () => {}
  const load = new LagMonitor({ now: () => clock, every: (_ms, fn) => ((fireProbe = fn), () => {}), after: () => () => {} }, { intervalMs: 20, thresholdMs: 100, turnMs: 30 })
  load.start()
  const probe = (ms: number) => ((clock += ms), fireProbe())
  for (let t = 0; t < 1000; t += 20) probe(20) // past the monitor's warm-up
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
  const gateway = new ChatGateway({ room, sockets: new Sockets(), selfAddress: self, now: () => clock, rateLimit, load })
  const socket = () => {
    const s = { sent: [] as any[], closed: null as null | { code?: number; reason?: string }, paused: false }
    const client: ClientSocket = {
      send: (json) => s.sent.push(JSON.parse(json)),
      close: (code, reason) => void (s.closed = { code, reason }),
      subscribe: () => {},
      pause: () => void (s.paused = true),
      resume: () => void (s.paused = false),
    }
    return { s, client }
  }
  return { gateway, room, published, socket, load, probe, advance: (ms: number) => (clock += ms) }
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
    const { gateway, published, socket, load, probe } = setup()
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    for (let i = 0; i < 3; i++) probe(150) // late three times in a row
    expect(load.overloaded()).toBe(true)
    gateway.message('1', 'shed')
    expect(chats(published)).toEqual([])
    expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'overloaded' })
    expect(gateway.stats.refused.overloaded).toBe(1)
    expect(a.s.paused).toBe(false) // refused, but this turn is short: the socket is still read
    while (load.overloaded()) probe(20)
    gateway.message('1', 'served')
    expect(chats(published)).toEqual(['served'])
  })

  test('a socket sending a burst in a turn that went on too long is paused, and what it sent meanwhile refused, until the loop catches up', () => {
    const { gateway, published, socket, advance, probe } = setup({ perSecond: 0, burst: 0 })
    const a = socket()
    const b = socket()
    gateway.open('1', a.client, ok('alice'))
    gateway.open('2', b.client, ok('bob'))
    gateway.message('1', 'early in the turn')
    advance(45) // the turn goes on: the probe due 20 ms after the last one is 25 ms late, under the 30 ms budget
    gateway.message('1', 'still in budget')
    advance(10)
    const errorsBefore = a.s.sent.length
    for (let i = 0; i < 1000; i++) gateway.message('1', `flood ${i}`)
    gateway.message('2', 'bob in the same turn') // one frame: a late turn only delays it
    // Alice's first 16 frames of the turn go through; the 17th, past the budget, pauses her socket.
    const floodTaken = Array.from({ length: 14 }, (_, i) => `flood ${i}`)
    expect(chats(published)).toEqual(['early in the turn', 'still in budget', ...floodTaken, 'bob in the same turn'])
    expect(a.s.paused).toBe(true)
    expect(b.s.paused).toBe(false)
    // One error, not one per refused frame.
    expect(a.s.sent.slice(errorsBefore).filter((f) => f.type === 'error')).toEqual([expect.objectContaining({ code: 'overloaded' })])
    expect(gateway.stats.refused.overloaded).toBe(1000 - 14)
    probe(0) // the timers' turn: the loop caught up (55 ms is under the 100 ms threshold), but the pause lasts 20 ms
    expect(a.s.paused).toBe(true)
    probe(20)
    expect(a.s.paused).toBe(false)
    gateway.message('1', 'alice again')
    expect(chats(published).at(-1)).toBe('alice again')
    // A turn 100 ms past due refuses even a lone frame (many sockets a frame each make turns long too), without a pause.
    advance(130)
    gateway.message('2', 'bob late')
    expect(chats(published).at(-1)).toBe('alice again')
    expect(b.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'overloaded' })
    expect(b.s.paused).toBe(false)
    probe(0)
    // Back filling the next turn at once: paused twice as long, then four times, ...
    const pausedFor = () => {
      advance(60)
      for (let i = 0; i < 17; i++) gateway.message('1', 'flood')
      let ms = 0
      while (a.s.paused) probe(20), (ms += 20)
      return ms
    }
    expect([pausedFor(), pausedFor(), pausedFor(), pausedFor()]).toEqual([40, 80, 160, 320])
    for (let t = 0; t < 1000; t += 20) probe(20) // quiet for a while: the next pause is short again
    expect(pausedFor()).toBe(20)
  })

  test('new sockets: as many as their joins cost 50,000 deliveries a second (5,000 at once), and always the first of a turn', () => {
    const { gateway, socket, probe } = setup()
    for (let i = 0; i < 200; i++) gateway.open(String(i), socket().client, ok(`u${i}`))
    // Each join tells the 200 users (a presence frame and a system message): 400 deliveries.
    const admitted = () => {
      let n = 0
      while (gateway.admitsJoin()) n++
      return n
    }
    expect(admitted()).toBe(12) // 5,000 at once
    probe(20) // the next turn, 20 ms later: 1,000 more
    expect(admitted()).toBe(3) // 200 left over and 1,000 new
    expect(gateway.admitsJoin()).toBe(false)
    probe(1) // 1 ms later: 50 more, not enough for a join, but the first of a turn goes anyway
    expect(admitted()).toBe(1)
    for (let t = 0; t < 1000; t += 20) probe(20) // a second later: no more than 5,000 saved up
    expect(admitted()).toBe(12)
    // A small node takes a burst of dozens at once.
    const small = setup()
    let burst = 0
    while (burst < 100 && small.gateway.admitsJoin()) burst++
    expect(burst).toBe(100)
  })

  test('users whose sockets close in a turn past its budget leave over the next turns, in order; one back at once under the same name is admitted', () => {
    const { gateway, room, socket, advance, probe } = setup()
    const names = ['ann', 'ben', 'cat', 'dan']
    names.forEach((name, i) => gateway.open(String(i), socket().client, ok(name)))
    gateway.close('0') // a short turn: ann leaves at once
    expect(room.users().map((u) => u.username)).toEqual(['ben', 'cat', 'dan'])
    advance(60) // the turn goes on past its budget
    gateway.close('1')
    gateway.close('2')
    expect(room.users().map((u) => u.username)).toEqual(['ben', 'cat', 'dan'])
    expect(gateway.sessionCount).toBe(1)
    // ben is back before his leave came: it comes first, and he is admitted.
    const again = socket()
    gateway.open('5', again.client, ok('ben'))
    expect(again.s.closed).toBeNull()
    expect(room.users().map((u) => u.username)).toEqual(['dan', 'ben'])
    probe(0) // the loop caught up: nothing left to do
    gateway.close('3')
    expect(room.users().map((u) => u.username)).toEqual(['ben'])
    advance(60)
    gateway.close('5')
    expect(room.users().map((u) => u.username)).toEqual(['ben'])
    probe(0) // the timers' turn: the put-off leave is done
    expect(room.users()).toEqual([])
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

// The gateway under load, on a real replicated log (one node, test/support/room-cluster.ts) and
// the real lag monitor on the same hand-driven clock: what a node sheds while its event loop is
// behind, and what it keeps serving. `probe(ms)` is the monitor's timer firing ms later (a turn
// of the loop ending); what a frame proposed is delivered when the test lets the turn end.
import { describe, expect, test } from 'bun:test'
import { ChatGateway } from '../../src/chat/gateway'
import { Sockets, type ClientSocket } from '../../src/chat/sockets'
import { LINES_AHEAD_MAX } from '../../src/chat/room'
import { LagMonitor } from '../../src/load'
import { ok } from '../../src/result'
import { singleNode } from '../support/room-cluster'

function setup(rateLimit = { perSecond: 20, burst: 40 }, fanoutPerSecond?: number) {
  const { net, node } = singleNode({ maxMessageLength: 2000, fanoutPerSecond })
  let fireProbe = () => {}
  const clock = { now: () => net.now, every: (_ms: number, fn: () => void) => ((fireProbe = fn), () => {}), after: () => () => {}, defer: (fn: () => void) => fn(), soon: (fn: () => void) => fn() }
  const load = new LagMonitor(clock, { intervalMs: 20, thresholdMs: 100, turnMs: 30 })
  load.start()
  const probe = (ms: number) => {
    net.now += ms
    fireProbe()
  }
  for (let t = 0; t < 1000; t += 20) probe(20) // past the monitor's warm-up
  const gateway = new ChatGateway({ room: node.room, sockets: new Sockets(), selfAddress: node.address, now: () => net.now, rateLimit, load })
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
  // The turn ends: what was proposed is appended, committed and delivered.
  const chats = () => {
    net.deliver()
    return node.chats()
  }
  return { gateway, room: node.room, chats, socket, load, probe, advance: (ms: number) => (net.now += ms) }
}

describe('ChatGateway under load', () => {
  test('while the node is overloaded a chat frame is refused with `overloaded` and not delivered; after, it goes through', () => {
    const { gateway, chats, socket, load, probe } = setup()
    const a = socket()
    gateway.open('1', a.client, ok('alice'))
    for (let i = 0; i < 3; i++) probe(150) // late three times in a row
    expect(load.overloaded()).toBe(true)
    gateway.message('1', 'shed')
    expect(chats()).toEqual([])
    expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'overloaded' })
    expect(gateway.stats.refused.overloaded).toBe(1)
    expect(a.s.paused).toBe(false) // refused, but this turn is short: the socket is still read
    while (load.overloaded()) probe(20)
    gateway.message('1', 'served')
    expect(chats()).toEqual(['served'])
  })

  test('a socket sending a burst in a turn that went on too long is paused, and what it sent meanwhile refused, until the loop catches up', () => {
    const { gateway, chats, socket, advance, probe } = setup({ perSecond: 0, burst: 0 })
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
    expect(chats()).toEqual(['early in the turn', 'still in budget', ...floodTaken, 'bob in the same turn'])
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
    expect(chats().at(-1)).toBe('alice again')
    // A turn 100 ms past due refuses even a lone frame (many sockets a frame each make turns long too), without a pause.
    advance(130)
    gateway.message('2', 'bob late')
    expect(chats().at(-1)).toBe('alice again')
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
    // Alice quiet for a while (bob chatting keeps the probe awake): the next pause is short again.
    for (let t = 0; t < 1000; t += 20) probe(20), gateway.message('2', 'bob')
    expect(pausedFor()).toBe(20)
  })

  test('a socket that keeps sending into a full line window is paused after a burst, not answered frame by frame; a user saying one line then is told, not paused', () => {
    const { gateway, chats, socket, probe } = setup({ perSecond: 0, burst: 0 })
    const a = socket()
    const b = socket()
    gateway.open('1', a.client, ok('alice'))
    gateway.open('2', b.client, ok('bob'))
    const errorsBefore = a.s.sent.length
    // A turn on time: nothing is late, only the window (LINES_AHEAD_MAX lines waiting) refuses.
    for (let i = 0; i < 1000; i++) gateway.message('1', `flood ${i}`)
    gateway.message('2', 'bob into the full window')
    expect(a.s.paused).toBe(true)
    expect(a.s.sent.slice(errorsBefore).filter((f) => f.type === 'error')).toEqual([expect.objectContaining({ code: 'overloaded' })])
    expect(b.s.paused).toBe(false)
    expect(b.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'overloaded' })
    // The window holds the two joins too.
    const taken = LINES_AHEAD_MAX - 2
    expect(chats()).toEqual(Array.from({ length: taken }, (_, i) => `flood ${i}`))
    expect(gateway.stats.refused.overloaded).toBe(1000 - taken + 1)
    // The window drained: once the pause is over, both are read and served again.
    probe(20)
    expect(a.s.paused).toBe(false)
    gateway.message('1', 'alice again')
    gateway.message('2', 'bob again')
    expect(chats().slice(-2)).toEqual(['alice again', 'bob again'])
  })

  test('a paused socket that hands over more than 1,000 frames after it was told is closed as flooding; others go on', () => {
    const { gateway, chats, socket } = setup({ perSecond: 0, burst: 0 })
    const a = socket()
    const b = socket()
    gateway.open('1', a.client, ok('alice'))
    gateway.open('2', b.client, ok('bob'))
    // What Bun hands over of a receive buffer read before the pause: the window fills, then the socket is paused.
    for (let i = 0; i < 1000; i++) gateway.message('1', `flood ${i}`)
    expect(a.s.paused).toBe(true)
    expect(a.s.closed).toBeNull()
    for (let i = 0; i < 200; i++) gateway.message('1', 'more')
    expect(a.s.closed).toEqual({ code: 4429, reason: 'sent more than 1000 messages after being told this node is overloaded' })
    expect(gateway.stats.refused.flooding).toBe(1)
    expect(gateway.sessionCount).toBe(1)
    chats()
    gateway.message('2', 'bob goes on')
    expect(chats().at(-1)).toBe('bob goes on')
  })

  test('with the fan-out budget spent by a busy user, a user who had said nothing for a second is still heard; its next line at once waits its turn', () => {
    // 40 deliveries a second, 4 at once; each line costs 2 (two local users).
    const { gateway, chats, socket, probe } = setup({ perSecond: 0, burst: 0 }, 40)
    const a = socket()
    const b = socket()
    gateway.open('1', a.client, ok('alice'))
    gateway.open('2', b.client, ok('bob'))
    chats()
    for (let t = 0; t < 1000; t += 20) probe(20) // a second on time
    gateway.message('1', 'a1')
    gateway.message('1', 'a2')
    gateway.message('1', 'a3') // alice spoke a moment ago: the budget is spent
    expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'overloaded' })
    gateway.message('2', 'b1') // bob had said nothing: heard
    gateway.message('2', 'b2') // his next line at once: refused, as anyone's
    expect(b.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'overloaded' })
    expect(chats()).toEqual(['a1', 'a2', 'b1'])
    // The debt is repaid before a busy user is heard again: 2 deliveries owed and 2 for the line take 100 ms.
    probe(20), probe(20)
    gateway.message('1', 'a4')
    expect(a.s.sent.at(-1)).toMatchObject({ type: 'error', code: 'overloaded' })
    probe(20), probe(20), probe(20), probe(20)
    gateway.message('1', 'a5')
    expect(chats()).toEqual(['a1', 'a2', 'b1', 'a5'])
  })

  test('new sockets: however many users the room holds, a turn on time takes as many as come; past its budget, none after the first 16 of a turn', () => {
    const { gateway, socket, probe, advance } = setup()
    for (let i = 0; i < 200; i++) gateway.open(String(i), socket().client, ok(`u${i}`))
    // A join does not cost a frame to each of the 200: a turn takes as many as it has time for.
    let burst = 0
    while (burst < 1000 && gateway.admitsJoin()) burst++
    expect(burst).toBe(1000)
    advance(51) // the turn runs on, past its budget (probe every 20 ms + turnMs 30)
    expect(gateway.admitsJoin()).toBe(false)
    probe(0) // the next turn
    expect(gateway.admitsJoin()).toBe(true)
  })

  test('a storm of new sockets at a node with few users: admitted while the turn is within its budget, then refused until the next turn', () => {
    const { gateway, socket, advance, probe } = setup()
    // Each socket is admitted, then opened (its upgrade, welcome, users and history frames, a
    // proposal), which takes time the join's deliveries (2 per local user) do not count.
    const storm = (openMs: number) => {
      let n = 0
      for (let i = 0; i < 500 && gateway.admitsJoin(); i++, n++) {
        gateway.open(`s${openMs}-${i}`, socket().client, ok(`s${openMs}x${i}`))
        advance(openMs)
      }
      return n
    }
    // The probe (every 20 ms here) is 30 ms late 50 ms after the last one, but the first 16 of a
    // turn go in however late it runs.
    expect(storm(5)).toBe(16)
    expect(gateway.admitsJoin()).toBe(false)
    probe(0) // the timers' turn
    expect(storm(1)).toBe(51) // joins of 1 ms: until the turn is 50 ms old
    expect(gateway.admitsJoin()).toBe(false)
  })

  test('users whose sockets close leave at once, even in a turn past its budget (a leave costs no frame to each user); one back at once under the same name is admitted', () => {
    const { gateway, room, socket, advance } = setup()
    const names = ['ann', 'ben', 'cat', 'dan']
    names.forEach((name, i) => gateway.open(String(i), socket().client, ok(name)))
    advance(60) // the turn goes on past its budget
    gateway.close('0')
    gateway.close('1')
    expect(room.users().map((u) => u.username)).toEqual(['cat', 'dan'])
    expect(gateway.sessionCount).toBe(2)
    const again = socket()
    gateway.open('5', again.client, ok('ben'))
    expect(again.s.closed).toBeNull()
    expect(room.users().map((u) => u.username)).toEqual(['cat', 'dan', 'ben'])
  })

})

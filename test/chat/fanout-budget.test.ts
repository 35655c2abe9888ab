import { describe, expect, test } from 'bun:test'
import { FanoutBudget, messageCost } from '../../src/chat/fanout-budget'
import { ChatRoom } from '../../src/chat/room'

describe('fan-out budget', () => {
  test('a tenth of a second of deliveries at once, then the rate; a message bigger than that still goes when it is full', () => {
    const budget = new FanoutBudget(10_000, 0)
    expect(budget.take(600, 0)).toBe(true)
    expect(budget.take(600, 0)).toBe(false)
    expect(budget.take(400, 0)).toBe(true)
    expect(budget.take(100, 5)).toBe(false) // 5 ms refill 50
    expect(budget.take(100, 10)).toBe(true)
    expect(budget.take(1000, 1000)).toBe(true) // no more than 1,000 saved up however long it was quiet
    expect(budget.take(1, 1000)).toBe(false)
    const small = new FanoutBudget(100, 0)
    expect(small.take(500, 0)).toBe(true) // one message to more users than the burst
    expect(small.take(1, 0)).toBe(false)
  })

  test('deliveries from other nodes use the budget up (at most a second of debt); 0 turns it off', () => {
    const budget = new FanoutBudget(1000, 0)
    budget.spend(5000, 0)
    expect(budget.take(1, 0)).toBe(false)
    expect(budget.take(1, 999)).toBe(false) // a second's debt takes a second to pay
    expect(budget.take(1, 1001)).toBe(true)
    const off = new FanoutBudget(0, 0)
    off.spend(1e9, 0)
    expect(off.take(1e9, 0)).toBe(true)
  })

  test('the room refuses a local message past the budget with overloaded, and says nothing for it', () => {
    const published: string[] = []
    let now = 0
    const room = new ChatRoom({
      selfAddress: 'bun://S@a:1', lang: 'en', maxMessageLength: 100, now: () => now,
      publish: (json) => published.push(json), broadcast: () => {}, sendTo: () => {}, disconnect: () => {}, fanoutPerSecond: 40,
    })
    for (const name of ['a', 'b']) room.join(name)
    published.length = 0
    expect(room.say('a', 'one').ok).toBe(true) // 2 deliveries
    expect(room.say('a', 'two').ok).toBe(true) // 2 more: the budget is spent
    expect(room.say('a', 'three')).toMatchObject({ ok: false, error: { code: 'overloaded' } })
    expect(published.filter((p) => p.includes('"chat"'))).toHaveLength(2)
    now = 1000
    expect(room.say('a', 'four').ok).toBe(true)
  })

  test('relaying to other members counts too: a node with few users cannot take on a flood every member must carry', () => {
    let now = 0
    const relayed: unknown[] = []
    const room = new ChatRoom({
      selfAddress: 'bun://S@a:1', lang: 'en', maxMessageLength: 100, now: () => now,
      publish: () => {}, broadcast: (m) => relayed.push(m), sendTo: () => {}, disconnect: () => {}, fanoutPerSecond: 10_000,
    })
    room.setMembers(['bun://S@b:1', 'bun://S@c:1'], true)
    room.join('a')
    relayed.length = 0
    let said = 0
    while (room.say('a', `m${said}`).ok) said++
    // Each message: 1 local delivery and 2 relays; the 1,000 a budget of 10,000 a second has at once take 1000 / (1 + 2 × 5) of them.
    expect(said).toBe(Math.floor(1000 / messageCost(1, 2)))
    expect(relayed.filter((m: any) => m.type === 'chat')).toHaveLength(said)
  })
})

import { describe, expect, test } from 'bun:test'
import { FanoutBudget } from '../../src/chat/fanout-budget'
import { RoomCluster, singleNode } from '../support/room-cluster'

describe('fan-out budget', () => {
  test('a second of deliveries at once, then the rate; a message bigger than the budget still goes when it is full', () => {
    const budget = new FanoutBudget(1000, 0)
    expect(budget.take(600, 0)).toBe(true)
    expect(budget.take(600, 0)).toBe(false)
    expect(budget.take(400, 0)).toBe(true)
    expect(budget.take(100, 50)).toBe(false) // 50 ms refill 50
    expect(budget.take(100, 100)).toBe(true)
    const small = new FanoutBudget(10, 0)
    expect(small.take(500, 0)).toBe(true) // one message to more users than a second's budget
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
    const { net, node } = singleNode({ fanoutPerSecond: 4, maxMessageLength: 100 })
    const room = node.room
    for (const name of ['a', 'b']) room.join(name)
    net.settle()
    const applied = node.transcript.applied
    expect(room.say('a', 'one').ok).toBe(true) // 2 deliveries
    expect(room.say('a', 'two').ok).toBe(true) // 2 more: the budget is spent
    expect(room.say('a', 'three')).toMatchObject({ ok: false, error: { code: 'overloaded' } })
    net.settle()
    expect(node.chats()).toEqual(['one', 'two'])
    expect(node.transcript.applied).toBe(applied + 2) // nothing proposed for the refused one
    net.now += 1000
    expect(room.say('a', 'four').ok).toBe(true)
    net.settle()
    expect(node.chats()).toEqual(['one', 'two', 'four'])
  })

  test('lines from other nodes are always delivered and use the budget up', () => {
    const net = RoomCluster.form(2, { fanoutPerSecond: 4 })
    net.node(1).room.join('a')
    net.node(1).room.join('b')
    net.node(2).room.join('c')
    net.settle()
    for (let i = 0; i < 3; i++) expect(net.node(2).room.say('c', `from 2: ${i}`).ok).toBe(true)
    net.settle()
    expect(net.node(1).chats()).toEqual(['from 2: 0', 'from 2: 1', 'from 2: 2'])
    // Node 1 delivered 6 lines to its two users: over its budget of 4, so its own users wait.
    expect(net.node(1).room.say('a', 'mine')).toMatchObject({ ok: false, error: { code: 'overloaded' } })
  })
})

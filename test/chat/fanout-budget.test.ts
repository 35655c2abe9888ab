import { describe, expect, test } from 'bun:test'
import { FanoutBudget, messageCost } from '../../src/chat/fanout-budget'
import { LINES_AHEAD_MAX } from '../../src/chat/room'
import { RoomCluster, singleNode } from '../support/room-cluster'

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

  test('a light message (its user had said nothing for a while) may take the budget into debt down to one burst, which the others then wait out', () => {
    const budget = new FanoutBudget(10_000, 0)
    expect(budget.take(1000, 0)).toBe(true) // the burst, spent
    expect(budget.take(600, 0)).toBe(false)
    expect(budget.take(600, 0, 1, true)).toBe(true) // 600 of debt
    expect(budget.take(600, 0, 1, true)).toBe(false) // past one burst's debt
    expect(budget.take(400, 0, 1, true)).toBe(true) // exactly one burst's debt
    expect(budget.take(1, 0, 1, true)).toBe(false)
    expect(budget.take(100, 100)).toBe(false) // the debt is repaid first: 100 ms refilled 1,000, back to 0
    expect(budget.take(100, 110)).toBe(true)
    // A message bigger than a burst: others' go when a whole burst is saved up, a light one's when the debt is repaid.
    const small = new FanoutBudget(100, 0)
    expect(small.take(500, 0, 1, true)).toBe(true) // 490 of debt
    expect(small.take(500, 0, 1, true)).toBe(false)
    expect(small.take(500, 4900)).toBe(false) // repaid, nothing saved up
    expect(small.take(500, 4900, 1, true)).toBe(true)
  })

  test('a share of the budget: refilled that much slower, and that much saved up at most', () => {
    const budget = new FanoutBudget(10_000, 0)
    expect(budget.take(1000, 0)).toBe(true)
    expect(budget.take(100, 100, 0.05)).toBe(true) // 100 ms at 500 a second: 50, the share's whole burst, so a bigger message goes
    expect(budget.take(50, 110, 0.05)).toBe(false) // 10 ms at 500 a second: 5
    expect(budget.take(50, 1000, 0.05)).toBe(true) // no more than 50 saved up
    expect(budget.take(1, 1000, 0.05)).toBe(false)
    expect(budget.take(1000, 2000)).toBe(true) // all of it again
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
    // 40 a second: 4 deliveries at once (a tenth of a second's worth).
    const { net, node } = singleNode({ fanoutPerSecond: 40, maxMessageLength: 100 })
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

  test('a line the line window refuses (the log is behind) does not use the budget up', () => {
    // 2,000 a second: 200 deliveries at once, one per line (one local user).
    const { net, node } = singleNode({ fanoutPerSecond: 2000, maxMessageLength: 100 })
    node.room.join('a')
    net.settle()
    let taken = 0
    for (let i = 0; i < 300; i++) if (node.room.say('a', `m${i}`).ok) taken++
    expect(taken).toBe(LINES_AHEAD_MAX) // the window refused the rest
    net.deliver() // applied, with no time passing
    // What the window refused left the budget as it was: 200 - 128 still there.
    for (let i = 0; i < 200 - LINES_AHEAD_MAX; i++) expect(node.room.say('a', `n${i}`).ok).toBe(true)
    expect(node.room.say('a', 'one too many')).toMatchObject({ ok: false, error: { code: 'overloaded', message: expect.stringContaining('delivering all it can') } })
  })

  test('lines from other nodes are always delivered and use the budget up', () => {
    // 200 a second: 20 deliveries at once.
    const net = RoomCluster.form(2, { fanoutPerSecond: 200 })
    for (let i = 0; i < 10; i++) net.node(1).room.join(`a${i}`)
    net.node(2).room.join('c')
    net.settle()
    // Each costs node 2 one local delivery and one relay (1 + 5): 18 of its 20.
    for (let i = 0; i < 3; i++) expect(net.node(2).room.say('c', `from 2: ${i}`).ok).toBe(true)
    net.settle()
    expect(net.node(1).chats()).toEqual(['from 2: 0', 'from 2: 1', 'from 2: 2'])
    // Node 1 delivered 3 lines to its ten users: 30, over its 20, so its own users wait.
    expect(net.node(1).room.say('a0', 'mine')).toMatchObject({ ok: false, error: { code: 'overloaded' } })
  })

  test('relaying to other members counts too: a node with few users cannot take on a flood every member must carry', () => {
    const net = RoomCluster.form(3, { fanoutPerSecond: 10_000 })
    const room = net.node(1).room
    room.join('a')
    net.settle()
    let said = 0
    while (room.say('a', `m${said}`).ok) said++
    // Each message: 1 local delivery and 2 other members; the 1,000 a budget of 10,000 a second has at once take 1000 / (1 + 2 × 5) of them.
    expect(said).toBe(Math.floor(1000 / messageCost(1, 2)))
    net.settle()
    // Every member carries them all (in its transcript; only node 1 has users to deliver them to).
    for (const n of [1, 2, 3]) expect(net.node(n).transcript.after(0).filter((l) => l.type === 'chat')).toHaveLength(said)
    expect(net.node(1).chats()).toHaveLength(said)
  })
})

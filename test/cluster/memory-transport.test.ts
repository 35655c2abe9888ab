// The in-memory transport: the same contract as TCP (on a virtual clock), then the faults it can
// inject, each shown to do what it says.
import { afterEach, describe, expect, test } from 'bun:test'
import { formatAddress } from '../../src/cluster/address'
import { MemoryNetwork } from '../../src/cluster/memory-transport'
import { Prng } from '../sim/simulator'
import { VirtualClock } from '../sim/virtual-clock'
import { handlersFor, leave, SYSTEM, transportContract, usernames, validatePeerMessage, type ContractNode, type StartOptions } from './transport-contract'

const VIRTUAL_DEADLINE_MS = 60_000

let clock = new VirtualClock()
let network = new MemoryNetwork(clock, new Prng(1).next)
let nextPort = 1
afterEach(() => {
  clock = new VirtualClock()
  network = new MemoryNetwork(clock, new Prng(1).next)
})

const freeAddress = () => formatAddress({ systemName: SYSTEM, host: 'sim', port: nextPort++ })

async function start(options: StartOptions = {}): Promise<ContractNode> {
  const address = options.address ?? freeAddress()
  const node = { address, received: [], connected: [], logs: [] } as unknown as ContractNode
  node.transport = await network.factory({
    systemName: SYSTEM,
    address,
    incarnation: options.incarnation ?? 'inc-1',
    validate: validatePeerMessage,
    log: (line) => node.logs.push(line),
    handlers: handlersFor(node, options),
  })
  return node
}

/** Runs virtual time forward until the condition holds. */
async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = clock.elapsed + VIRTUAL_DEADLINE_MS
  while (!condition()) {
    if (clock.elapsed >= deadline) throw new Error(`${what}: not within ${VIRTUAL_DEADLINE_MS} virtual ms`)
    clock.runUntil(clock.elapsed + 1)
  }
}

transportContract('in-memory', { freeAddress, start, waitFor })

describe('in-memory transport faults', () => {
  const sendNumbered = (from: ContractNode, to: ContractNode, count: number) => {
    for (let i = 0; i < count; i++) from.transport.send([to.address], leave(`m${i}`))
  }

  test('delays keep FIFO order per connection', async () => {
    network.faults = { ...network.faults, delayMsMin: 1, delayMsMax: 50 }
    const [a, b] = await Promise.all([start(), start()])
    sendNumbered(a, b, 500)
    await waitFor(() => b.received.length === 500, 'all')
    expect(usernames(b)).toEqual(Array.from({ length: 500 }, (_, i) => `m${i}`))
  })

  test('reorder lets frames overtake each other', async () => {
    network.faults = { ...network.faults, delayMsMin: 1, delayMsMax: 50, reorder: 0.5 }
    const [a, b] = await Promise.all([start(), start()])
    sendNumbered(a, b, 500)
    await waitFor(() => b.received.length === 500, 'all')
    expect(usernames(b)).not.toEqual(Array.from({ length: 500 }, (_, i) => `m${i}`))
    expect(new Set(usernames(b)).size).toBe(500)
  })

  test('drop loses frames and duplicate doubles them, and both are counted', async () => {
    network.faults = { ...network.faults, drop: 0.2, duplicate: 0.2 }
    const [a, b] = await Promise.all([start(), start()])
    sendNumbered(a, b, 1000)
    clock.runUntil(clock.elapsed + 1000)
    const names = usernames(b)
    expect(new Set(names).size).toBeLessThan(1000)
    expect(names.length).toBeGreaterThan(new Set(names).size)
    expect(network.counters.dropped).toBeGreaterThan(100)
    expect(network.counters.duplicated).toBeGreaterThan(100)
  })

  test('a cut link loses what crosses it and resets the connection; after the heal the backlog goes through', async () => {
    const [a, b] = await Promise.all([start(), start()])
    a.transport.send([b.address], leave('before'))
    await waitFor(() => b.received.length === 1, 'before')
    network.cut(a.address, b.address)
    a.transport.send([b.address], leave('lost in flight'))
    await waitFor(() => a.logs.some((line) => line.includes('link cut')), 'the reset')
    a.transport.send([b.address], leave('queued while cut'))
    clock.runUntil(clock.elapsed + 5000)
    expect(usernames(b)).toEqual(['before'])
    network.heal(a.address, b.address)
    await waitFor(() => b.received.length === 2, 'the backlog')
    expect(usernames(b)).toEqual(['before', 'queued while cut'])
    expect(a.connected).toEqual([b.address, b.address])
  })

  test('a one-way cut stops that direction; an open connection the other way keeps carrying frames, a new one cannot open', async () => {
    const [a, b, c] = await Promise.all([start(), start(), start()])
    b.transport.send([a.address], leave('b to a'))
    await waitFor(() => a.received.length === 1, 'b to a')
    network.cut(a.address, b.address, true)
    network.cut(a.address, c.address, true)
    b.transport.send([a.address], leave('still b to a'))
    a.transport.send([b.address], leave('a to b'))
    await waitFor(() => a.received.length === 2, 'b to a on the open connection')
    // A connection needs both directions to open (TCP's handshake), so c cannot reach a either.
    c.transport.send([a.address], leave('c to a'))
    clock.runUntil(clock.elapsed + 5000)
    expect(b.received).toHaveLength(0)
    expect(usernames(a)).toEqual(['b to a', 'still b to a'])
  })

  test('reset kills a live connection: frames in flight are lost, later ones arrive on the new one', async () => {
    network.faults = { ...network.faults, delayMsMin: 20, delayMsMax: 20 }
    const [a, b] = await Promise.all([start(), start()])
    a.transport.send([b.address], leave('first'))
    await waitFor(() => b.received.length === 1, 'first')
    a.transport.send([b.address], leave('in flight'))
    network.reset(a.address, b.address)
    a.transport.send([b.address], leave('after'))
    await waitFor(() => b.received.length === 2, 'after')
    clock.runUntil(clock.elapsed + 1000)
    expect(usernames(b)).toEqual(['first', 'after'])
    expect(network.counters.resets).toBe(1)
  })

  test('one seed is one run', async () => {
    const run = async (seed: number) => {
      clock = new VirtualClock()
      network = new MemoryNetwork(clock, new Prng(seed).next)
      network.faults = { delayMsMin: 1, delayMsMax: 30, drop: 0.1, duplicate: 0.1, reorder: 0.3 }
      const [a, b] = await Promise.all([start(), start()])
      sendNumbered(a, b, 200)
      clock.runUntil(clock.elapsed + 1000)
      return usernames(b)
    }
    expect(await run(7)).toEqual(await run(7))
    expect(await run(7)).not.toEqual(await run(8))
  })
})

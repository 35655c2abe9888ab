import { afterEach, describe, expect, test } from 'bun:test'
import type { Socket } from 'bun'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from '../../src/cluster/codec'
import { formatAddress, parseAddress } from '../../src/cluster/address'
import { PROTOCOL_VERSION, type Hello } from '../../src/cluster/messages'
import { createTcpTransport } from '../../src/cluster/tcp/tcp-transport'
import { waitFor } from '../support/wait'
import { handlersFor, leave, SYSTEM, transportContract, usernames, validatePeerMessage as validate, type ContractNode, type PeerMessage, type StartOptions } from './transport-contract'

const HOST = '127.0.0.1'

type TestNode = ContractNode & { port: number }

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  const pending = cleanups.splice(0)
  await Promise.all(pending.map((cleanup) => cleanup()))
})

/** A port that was free a moment ago: the kernel picks it, nothing in the test hard-codes one. */
function freePort(): number {
  const probe = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} } })
  const port = probe.port
  probe.stop(true)
  return port
}

async function startNode(options: StartOptions & { port?: number; maxQueueBytes?: number } = {}): Promise<TestNode> {
  const port = options.port ?? freePort()
  const address = formatAddress({ systemName: SYSTEM, host: HOST, port })
  const node = { address, port, received: [], connected: [], logs: [] } as unknown as TestNode
  node.transport = await createTcpTransport(
    { systemName: SYSTEM, address, incarnation: options.incarnation ?? 'inc-1', validate, log: (line) => node.logs.push(line), handlers: handlersFor(node, options) },
    { maxQueueBytes: options.maxQueueBytes },
  )
  cleanups.push(() => node.transport.close())
  return node
}


/** A hand-made client on an inbound port, for bytes a real transport never sends. */
async function rawClient(port: number) {
  let closed = false
  const socket = await Bun.connect({
    hostname: HOST,
    port,
    socket: {
      data() {},
      close() {
        closed = true
      },
    },
  })
  cleanups.push(() => socket.terminate())
  return {
    write: (bytes: Uint8Array) => socket.write(bytes),
    get closed() {
      return closed
    },
  }
}

const hello = (overrides: Partial<Hello> = {}): Hello => ({
  type: 'hello',
  version: PROTOCOL_VERSION,
  systemName: SYSTEM,
  address: 'bun://WebSocketClusterSystem@127.0.0.1:1',
  incarnation: 'raw',
  ...overrides,
})

describe('parseAddress', () => {
  test('reads system name, host and port', () => {
    expect(parseAddress('bun://WebSocketClusterSystem@127.0.0.1:2551')).toEqual({ systemName: SYSTEM, host: '127.0.0.1', port: 2551 })
    expect(parseAddress('bun://S@[::1]:80')).toEqual({ systemName: 'S', host: '::1', port: 80 })
    expect(formatAddress({ systemName: 'S', host: '::1', port: 80 })).toBe('bun://S@[::1]:80')
  })

  test('rejects anything else', () => {
    for (const bad of ['', 'bun://S@host', 'bun://S@host:0', 'bun://S@host:65536', 'http://S@host:1', 'bun://@host:1', 'bun://S@host:1#inc', 'bun://S@ho st:1']) {
      expect(parseAddress(bad)).toBeNull()
    }
  })
})

transportContract('tcp', {
  freeAddress: () => formatAddress({ systemName: SYSTEM, host: HOST, port: freePort() }),
  start: async (options = {}) => {
    const port = options.address ? parseAddress(options.address)!.port : undefined
    return startNode({ ...options, port })
  },
  waitFor: (condition, what) => waitFor(condition, 5000, what),
})

describe('tcp transport', () => {
  test('createTcpTransport rejects clearly when the port is taken', async () => {
    const a = await startNode()
    await expect(startNode({ port: a.port })).rejects.toThrow(`cannot listen on ${HOST}:${a.port}`)
  })

  test('a message to something that is not a node address is refused with a log line', async () => {
    const [a, b] = await Promise.all([startNode(), startNode()])
    expect(a.transport.send([b.address, 'not an address'], leave('only-b'))).toBe(1)
    expect(a.logs.some((line) => line.includes('"not an address"'))).toBe(true)
  })
})

describe('tcp transport against bad peers', () => {
  const cases: Array<[string, () => Uint8Array[], string]> = [
    ['garbage bytes', () => [new Uint8Array([0, 0, 0, 3, 0xc4, 0xff, 0xff])], 'bad_msgpack'],
    ['an oversize length', () => [new Uint8Array([0x7f, 0xff, 0xff, 0xff])], 'frame_too_large'],
    ['a non-hello first frame', () => [encodeFrame(leave('sneaky'))], 'first frame is presence_leave, not hello'],
    ['an invalid first frame', () => [encodeFrame({ type: 'hello' })], 'first frame is not a hello'],
    ['a wrong system name', () => [encodeFrame(hello({ systemName: 'Other' }))], `system name "Other" != "${SYSTEM}"`],
    ['a wrong protocol version', () => [encodeFrame(hello({ version: PROTOCOL_VERSION + 1 }))], 'protocol version'],
    ['a second hello', () => [encodeFrame(hello()), encodeFrame(hello())], 'second hello'],
    ['an invalid message after the hello', () => [encodeFrame(hello()), encodeFrame({ type: 'chat', username: 7 })], 'invalid chat'],
    ['a bigint message type after the hello', () => [encodeFrame(hello()), encodeFrame({ type: 2n ** 63n })], 'unknown message type 9223372036854775808'],
    ['an oversize frame after the hello', () => [encodeFrame(hello()), new Uint8Array([0, 0x20, 0, 0])], 'frame_too_large'],
  ]

  for (const [what, frames, expected] of cases) {
    test(`a client sending ${what} is disconnected; real links keep working`, async () => {
      const [a, b] = await Promise.all([startNode(), startNode()])
      a.transport.send([b.address], leave('before'))
      await waitFor(() => b.received.length === 1, 5000, 'first real message')

      const raw = await rawClient(b.port)
      for (const frame of frames()) raw.write(frame)
      await waitFor(() => raw.closed, 5000, 'the bad client to be disconnected')
      expect(b.transport.stats.invalid).toBe(1)
      const lines = b.logs.filter((line) => line.includes(expected))
      expect(lines).toHaveLength(1)
      expect(lines[0]).toMatch(/^(refused|closed) connection from /)

      a.transport.send([b.address], leave('after'))
      await waitFor(() => b.received.length === 2, 5000, 'later real message')
      expect(usernames(b)).toEqual(['before', 'after'])
    })
  }

  test('a refusal names the remote end', async () => {
    const b = await startNode()
    const raw = await rawClient(b.port)
    raw.write(encodeFrame(hello({ systemName: 'Other' })))
    await waitFor(() => raw.closed, 5000, 'refusal')
    expect(b.logs.find((line) => line.includes('Other'))).toMatch(
      new RegExp(`^refused connection from 127\\.0\\.0\\.1:\\d+: system name "Other" != "${SYSTEM}"$`),
    )
  })
})

describe('tcp transport send queue', () => {
  test('an absent peer fills the queue up to the cap; the rest is dropped and logged once', async () => {
    const a = await startNode({ maxQueueBytes: 10_000 })
    const address = formatAddress({ systemName: SYSTEM, host: HOST, port: freePort() })
    const message = leave('x'.repeat(100)) // ~120 bytes a frame
    let accepted = 0
    for (let i = 0; i < 200; i++) accepted += a.transport.send([address], message)
    const frameBytes = encodeFrame(message).length
    expect(accepted).toBe(Math.floor(10_000 / frameBytes))
    expect(a.transport.stats.dropped).toBe(200 - accepted)
    expect(a.logs.filter((line) => line.includes('send queue full'))).toHaveLength(1)
  })

  test('a message larger than the frame limit is dropped, not sent', async () => {
    const [a, b] = await Promise.all([startNode(), startNode()])
    expect(a.transport.send([b.address], leave('y'.repeat(128)))).toBe(1)
    const users = Array.from({ length: 60_000 }, (_, i) => ({ username: `user-${i}`, connectedAt: i })) // ~1.4 MB
    expect(a.transport.send([b.address], { type: 'presence_snapshot', users })).toBe(0)
    expect(a.transport.stats.dropped).toBe(1)
    expect(a.logs.some((line) => line.startsWith('dropping presence_snapshot of'))).toBe(true)
    expect(a.transport.send([b.address], leave('after'))).toBe(1)
    await waitFor(() => b.received.length === 2, 5000, 'the small messages')
    expect(b.transport.stats.invalid).toBe(0)
  })

  test('a peer that stops reading makes the queue hit the cap; it drains intact when the peer reads again', async () => {
    const a = await startNode({ maxQueueBytes: 256 * 1024 })
    // A hand-made peer that can stop reading, and decodes what it gets once it reads again.
    const decoder = new FrameDecoder(DEFAULT_MAX_FRAME_BYTES)
    const decoded: unknown[] = []
    let peer: Socket<undefined> | null = null
    const slow = Bun.listen({
      hostname: HOST,
      port: 0,
      socket: {
        open(socket) {
          socket.pause() // the kernel buffers a few MB, then the sender's writes stop
          peer = socket
        },
        data(_, chunk) {
          decoded.push(...decoder.push(chunk))
        },
      },
    })
    cleanups.push(() => slow.stop(true))
    const address = formatAddress({ systemName: SYSTEM, host: HOST, port: slow.port })
    // Mixed sizes, so that small frames are batched and big ones are split by partial writes.
    let sequence = 0
    const accepted: number[] = []
    const sendOne = () => {
      const size = [10, 3_000, 70_000, 200][sequence % 4]!
      const message: PeerMessage = { type: 'chat', username: 'u', message: 'm'.repeat(size), nodeAddress: a.address, timestamp: sequence }
      if (a.transport.send([address], message) === 1) accepted.push(sequence)
      sequence++
    }
    sendOne()
    await waitFor(() => peer !== null, 5000, 'the slow peer to accept')
    await waitFor(
      () => {
        for (let i = 0; i < 16; i++) sendOne()
        return a.transport.stats.dropped > 0
      },
      10_000,
      'drops',
    )
    expect(a.logs.some((line) => line.includes(`dropping messages to ${address}: send queue full`))).toBe(true)
    // far more than the ~4 big messages the queue alone holds: the kernel buffered the rest first
    expect(accepted.length).toBeGreaterThan(16)
    const { dropped } = a.transport.stats
    expect(dropped).toBe(sequence - accepted.length)

    peer!.resume()
    await waitFor(() => decoded.length === accepted.length + 1, 10_000, 'every accepted message at the peer')
    expect((decoded[0] as Hello).type).toBe('hello')
    expect(decoded.slice(1).map((message) => (message as { timestamp: number }).timestamp)).toEqual(accepted)
    for (const message of decoded.slice(1) as Array<{ timestamp: number; message: string }>) {
      expect(message.message.length).toBe([10, 3_000, 70_000, 200][message.timestamp % 4]!)
    }
    expect(a.transport.stats.framesOut).toBe(accepted.length + 1)
    expect(a.transport.stats.dropped).toBe(dropped)
  })

})

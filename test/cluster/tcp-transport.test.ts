import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test'
import type { Socket } from 'bun'
import { randomBytes } from 'node:crypto'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from '../../src/cluster/codec'
import { formatAddress, parseAddress } from '../../src/cluster/address'
import { dialerOnAck, dialerStart, listenerOnAuth, listenerOnHello, NONCE_BYTES, type ListenerState } from '../../src/cluster/handshake'
import { PROTOCOL_VERSION, type Hello } from '../../src/cluster/messages'
import { createTcpTransport, type TcpOptions } from '../../src/cluster/tcp/tcp-transport'
import { ACCEPTED } from '../../src/cluster/transport'
import type { TlsFiles } from '../../src/cluster/tcp/tls'
import { makeCerts, type CertSet } from '../support/certs'
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

async function startNode(options: StartOptions & { port?: number; maxQueueBytes?: number; tcp?: TcpOptions } = {}): Promise<TestNode> {
  const port = options.port ?? freePort()
  const address = formatAddress({ systemName: SYSTEM, host: HOST, port })
  const node = { address, port, received: [], connected: [], logs: [] } as unknown as TestNode
  node.transport = await createTcpTransport(
    { systemName: SYSTEM, address, incarnation: options.incarnation ?? 'inc-1', validate, log: (line) => node.logs.push(line), handlers: handlersFor(node, options) },
    { maxQueueBytes: options.maxQueueBytes, ...options.tcp },
  )
  cleanups.push(() => node.transport.close())
  return node
}


/** A hand-made client on an inbound port, for bytes a real transport never sends. */
async function rawClient(port: number, options: { secrets?: string[]; address?: string } = {}) {
  let closed = false
  const decoder = new FrameDecoder(DEFAULT_MAX_FRAME_BYTES)
  const frames: unknown[] = []
  const socket = await Bun.connect({
    hostname: HOST,
    port,
    socket: {
      data(socket, chunk) {
        try {
          frames.push(...decoder.push(chunk))
        } catch {
          socket.end() // not our framing (e.g. a TLS alert)
        }
      },
      close() {
        closed = true
      },
    },
  })
  cleanups.push(() => socket.terminate())
  const self = {
    systemName: SYSTEM,
    address: options.address ?? 'bun://WebSocketClusterSystem@127.0.0.1:1',
    incarnation: 'raw',
    secrets: options.secrets ?? [],
  }
  return {
    write: (bytes: Uint8Array) => socket.write(bytes),
    frames,
    /** Runs the dialer's side of the handshake as a real node would. */
    async handshake() {
      const target = formatAddress({ systemName: SYSTEM, host: HOST, port })
      const state = dialerStart(self, target, new Uint8Array(randomBytes(NONCE_BYTES)))
      socket.write(encodeFrame(state.hello))
      await waitFor(() => frames.length > 0 || closed, 5000, 'hello_ack')
      const auth = dialerOnAck(state, frames[0])
      if (!auth.ok) throw new Error(auth.error)
      socket.write(encodeFrame(auth.value))
    },
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
  auth: 'none',
  nonce: new Uint8Array(NONCE_BYTES),
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
  test('the handshake costs the dialer two frames (hello, auth) and the listener one (hello_ack); the link adds a resume and pongs', async () => {
    // A long link timeout: no pings during the test, so every frame is accounted for.
    const tcp = { linkTimeoutMs: 60_000 }
    const [a, b] = await Promise.all([startNode({ incarnation: 'a-1', tcp }), startNode({ tcp })])
    const names = Array.from({ length: 2000 }, (_, i) => `user${i}`)
    for (const name of names) expect(a.transport.send([b.address], leave(name))).toBe(1)
    await waitFor(() => b.received.length === names.length, 5000, 'all messages at b')
    expect(usernames(b)).toEqual(names)
    expect(b.received[0]!.peer).toMatchObject({ address: a.address, incarnation: 'a-1' })
    expect(a.connected).toEqual([b.address])
    expect(a.transport.stats.framesOut).toBe(names.length + 3) // and the hello, auth and link_resume
    expect(b.transport.stats.framesIn).toBe(names.length + 3)
    // the hello_ack, then a pong for each chunk that delivered frames (far fewer than the frames)
    await waitFor(() => a.transport.queuedBytes() === 0 && a.transport.stats.framesIn === b.transport.stats.framesOut, 5000, 'the pongs')
    expect(b.transport.stats.framesOut).toBeGreaterThan(1)
    expect(b.transport.stats.framesOut).toBeLessThan(names.length / 10)
    expect(a.transport.queuedBytes()).toBe(0) // everything acknowledged
    expect(b.transport.stats.bytesIn).toBe(a.transport.stats.bytesOut)
    expect(b.transport.stats.invalid).toBe(0)
    expect(a.transport.stats.authFailures + b.transport.stats.authFailures).toBe(0)
  })

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
  // [what, handshake first?, frames, expected log text, the counter it lands in]
  const cases: Array<[string, boolean, () => Uint8Array[], string, 'authFailures' | 'invalid']> = [
    ['garbage bytes', false, () => [new Uint8Array([0, 0, 0, 3, 0xc4, 0xff, 0xff])], 'bad_msgpack', 'authFailures'],
    ['an oversize length', false, () => [new Uint8Array([0x7f, 0xff, 0xff, 0xff])], 'frame_too_large', 'authFailures'],
    ['a 5 KB frame before authenticating', false, () => [new Uint8Array([0, 0, 0x14, 0])], 'frame_too_large', 'authFailures'],
    ['a non-hello first frame', false, () => [encodeFrame(leave('sneaky'))], 'first frame is presence_leave, not hello', 'authFailures'],
    ['an invalid first frame', false, () => [encodeFrame({ type: 'hello' })], 'first frame is not a hello', 'authFailures'],
    ['a wrong system name', false, () => [encodeFrame(hello({ systemName: 'Other' }))], `system name "Other" != "${SYSTEM}"`, 'authFailures'],
    ['a wrong protocol version', false, () => [encodeFrame(hello({ version: PROTOCOL_VERSION + 1 }))], 'protocol version', 'authFailures'],
    ['a message after the hello, without auth', false, () => [encodeFrame(hello()), encodeFrame(leave('sneaky'))], 'presence_leave before authentication', 'authFailures'],
    ['a second hello', true, () => [encodeFrame(hello())], 'hello after the handshake', 'invalid'],
    ['an invalid message after the handshake', true, () => [encodeFrame({ type: 'presence_leave', username: 7 })], 'invalid presence_leave', 'invalid'],
    ['a bigint message type after the handshake', true, () => [encodeFrame({ type: 2n ** 63n })], 'unknown message type 9223372036854775808', 'invalid'],
    ['an oversize frame after the handshake', true, () => [new Uint8Array([0, 0x20, 0, 0])], 'frame_too_large', 'invalid'],
  ]

  for (const [what, handshake, frames, expected, counter] of cases) {
    test(`a client sending ${what} is disconnected and counted; real links keep working`, async () => {
      const [a, b] = await Promise.all([startNode(), startNode()])
      a.transport.send([b.address], leave('before'))
      await waitFor(() => b.received.length === 1, 5000, 'first real message')

      const raw = await rawClient(b.port)
      if (handshake) await raw.handshake()
      for (const frame of frames()) raw.write(frame)
      await waitFor(() => raw.closed, 5000, 'the bad client to be disconnected')
      expect(b.transport.stats[counter]).toBe(1)
      expect(b.transport.stats[counter === 'invalid' ? 'authFailures' : 'invalid']).toBe(0)
      const lines = b.logs.filter((line) => line.includes(expected))
      expect(lines).toHaveLength(1)
      expect(lines[0]).toMatch(/^(refused|closed) connection from /)

      a.transport.send([b.address], leave('after'))
      await waitFor(() => b.received.length === 2, 5000, 'later real message')
      expect(usernames(b)).toEqual(['before', 'after'])
    })
  }

  test('a refusal by the receiver closes the connection and counts it invalid', async () => {
    const a = await startNode()
    const b = await startNode({ onMessage: (_, m) => (m.type === 'presence_leave' && m.username === 'forged' ? { ok: false, error: 'forged name' } : ACCEPTED) })
    a.transport.send([b.address], leave('forged'))
    await waitFor(() => b.transport.stats.invalid === 1, 5000, 'the refusal')
    expect(b.logs.filter((line) => line.startsWith(`closed connection from ${a.address}`) && line.endsWith('forged name'))).toHaveLength(1)
    // the dialer reconnects and goes on
    a.transport.send([b.address], leave('fine'))
    await waitFor(() => usernames(b).includes('fine'), 5000, 'the next message on a new connection')
  })

  test('a client that connects and says nothing is closed after the handshake timeout', async () => {
    const b = await startNode({ tcp: { handshakeTimeoutMs: 100 } })
    const raw = await rawClient(b.port)
    await waitFor(() => raw.closed, 5000, 'the silent client to be closed')
    expect(b.transport.stats.authFailures).toBe(1)
    expect(b.logs.some((line) => line.endsWith('no authentication within 100 ms'))).toBe(true)
  })

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

  /** A listener that completes each handshake and then never answers: records every connection's pings (arrival times). */
  function mutePeer() {
    const port = freePort()
    const address = formatAddress({ systemName: SYSTEM, host: HOST, port })
    const connections: { pings: number[]; frames: number }[] = []
    const listener = Bun.listen<{ decoder: FrameDecoder; state: ListenerState | null; open: boolean; seen: { pings: number[]; frames: number } }>({
      hostname: HOST,
      port,
      socket: {
        open(socket) {
          socket.data = { decoder: new FrameDecoder(DEFAULT_MAX_FRAME_BYTES), state: null, open: false, seen: { pings: [], frames: 0 } }
        },
        data(socket, chunk) {
          const d = socket.data
          for (const value of d.decoder.push(chunk)) {
            if (d.open) {
              if ((value as { type?: unknown }).type === 'link_ping') d.seen.pings.push(performance.now())
              else d.seen.frames++
            } else if (!d.state) {
              const answer = listenerOnHello({ systemName: SYSTEM, address, incarnation: 'mute', secrets: [] }, value, new Uint8Array(NONCE_BYTES))
              if (!answer.ok) throw new Error(answer.error)
              d.state = answer.value.state
              socket.write(encodeFrame(answer.value.ack))
            } else {
              if (!listenerOnAuth(d.state, value).ok) throw new Error('auth refused')
              d.open = true
              connections.push(d.seen)
            }
          }
        },
      },
    })
    cleanups.push(() => listener.stop(true))
    return { address, connections }
  }

  for (const busy of [false, true]) {
    test(`a link whose peer stops answering is dropped as silent and redialled, ${busy ? 'busy (pings ride with its frames)' : 'idle (pings on their own)'}`, async () => {
      const linkTimeoutMs = 150 // pings at most every 50 ms
      const a = await startNode({ tcp: { linkTimeoutMs } })
      const peer = mutePeer()
      let sent = 0
      const sending = busy ? setInterval(() => a.transport.send([peer.address], leave(`u${sent++}`)), 10) : undefined
      if (!busy) a.transport.send([peer.address], leave('hello'))
      cleanups.push(() => clearInterval(sending))
      await waitFor(() => peer.connections.length >= 3, 5000, 'two redials after silence')
      clearInterval(sending)
      expect(a.logs.filter((line) => line.includes('silent for')).length).toBeGreaterThanOrEqual(2)
      // Pings went, at most one per half a ping interval however busy the link (not one per
      // frame): a connection dropped after 150 ms of silence carried at most seven.
      const dropped = peer.connections.slice(0, -1)
      expect(dropped.reduce((n, c) => n + c.pings.length, 0)).toBeGreaterThan(0)
      for (const c of dropped) expect(c.pings.length).toBeLessThanOrEqual(7)
      if (busy) expect(dropped.reduce((n, c) => n + c.frames, 0)).toBeGreaterThan(dropped.reduce((n, c) => n + c.pings.length, 0))
    })
  }

  test('an idle link pings slowly and stays up; its next frame goes at once', async () => {
    const linkTimeoutMs = 150 // pings every 62 ms while in use; idle after 450 ms, then every 225 ms
    const [a, b] = await Promise.all([startNode({ tcp: { linkTimeoutMs } }), startNode({ tcp: { linkTimeoutMs } })])
    a.transport.send([b.address], leave('first'))
    await waitFor(() => b.received.length === 1, 5000, 'the first frame')
    await Bun.sleep(700) // idle by now
    const framesIn = () => b.transport.stats.framesIn - b.received.length // pings (and the handshake's, counted before)
    const before = framesIn()
    await Bun.sleep(1000)
    const idlePings = framesIn() - before
    expect(idlePings).toBeGreaterThanOrEqual(1)
    expect(idlePings).toBeLessThanOrEqual(6) // at the usual pace: 16
    expect(a.logs.filter((line) => line.includes('silent for'))).toEqual([])
    a.transport.send([b.address], leave('second'))
    await waitFor(() => b.received.length === 2, 1000, 'a frame on the idle link')
    expect(usernames(b)).toEqual(['first', 'second'])
  })

  test('a peer that stops reading makes the queue hit the cap; it drains intact when the peer reads again', async () => {
    // No pings: this hand-made peer never answers them, and must not be redialled as silent.
    const a = await startNode({ maxQueueBytes: 256 * 1024, tcp: { linkTimeoutMs: 60_000 } })
    // A hand-made peer that answers the handshake, then can stop reading, and decodes what it
    // gets once it reads again.
    const decoder = new FrameDecoder(DEFAULT_MAX_FRAME_BYTES)
    const decoded: unknown[] = []
    let peer: Socket<undefined> | null = null
    let listenerState: ListenerState | null = null
    const slowPort = freePort()
    const address = formatAddress({ systemName: SYSTEM, host: HOST, port: slowPort })
    const slow = Bun.listen({
      hostname: HOST,
      port: slowPort,
      socket: {
        data(socket, chunk) {
          for (const value of decoder.push(chunk)) {
            if (peer) {
              if (!String((value as { type?: unknown }).type).startsWith('link_')) decoded.push(value)
            }
            else if (!listenerState) {
              const answer = listenerOnHello({ systemName: SYSTEM, address, incarnation: 'slow', secrets: [] }, value, new Uint8Array(NONCE_BYTES))
              if (!answer.ok) throw new Error(answer.error)
              listenerState = answer.value.state
              socket.write(encodeFrame(answer.value.ack))
            } else {
              if (!listenerOnAuth(listenerState, value).ok) throw new Error('auth refused')
              socket.pause() // the kernel buffers a few MB, then the sender's writes stop
              peer = socket
            }
          }
        },
      },
    })
    cleanups.push(() => slow.stop(true))
    // Mixed sizes, so that small frames are batched and big ones are split by partial writes.
    let sequence = 0
    const accepted: number[] = []
    const sendOne = () => {
      const size = [10, 3_000, 70_000, 200][sequence % 4]!
      const message: PeerMessage = { type: 'presence_snapshot', users: Array.from({ length: Math.ceil(size / 16) }, (_, i) => ({ username: `user${i}`, connectedAt: sequence })) }
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
    // The cap counts every byte the peer has not acknowledged, in the kernel's buffers or ours.
    expect(accepted.length).toBeGreaterThan(4)
    const { dropped } = a.transport.stats
    expect(dropped).toBe(sequence - accepted.length)

    peer!.resume()
    await waitFor(() => decoded.length === accepted.length, 10_000, 'every accepted message at the peer')
    const sequenceOf = (message: unknown) => (message as { users: Array<{ connectedAt: number }> }).users[0]!.connectedAt
    expect(decoded.map(sequenceOf)).toEqual(accepted)
    for (const message of decoded as Array<{ users: unknown[] }>) {
      expect(message.users.length).toBe(Math.ceil([10, 3_000, 70_000, 200][sequenceOf(message) % 4]! / 16))
    }
    expect(a.transport.stats.framesOut).toBe(accepted.length + 3) // and the hello, auth and link_resume
    expect(a.transport.stats.dropped).toBe(dropped)
  })

})

describe('tcp transport authentication', () => {
  const SECRET = 'correct horse battery staple'

  test('nodes with the same secret talk; the secret never crosses the wire', async () => {
    let wire = ''
    const [a, b] = await Promise.all([startNode({ tcp: { secrets: [SECRET] } }), startNode({ tcp: { secrets: [SECRET] } })])
    a.transport.send([b.address], leave('hello'))
    await waitFor(() => b.received.length === 1, 5000, 'the message')
    expect(a.transport.stats.authFailures + b.transport.stats.authFailures).toBe(0)
    // a listener that records everything a real dialer sends
    const port = freePort()
    const recorder = Bun.listen({ hostname: HOST, port, socket: { data: (_, chunk) => void (wire += Buffer.from(chunk).toString('latin1')) } })
    cleanups.push(() => recorder.stop(true))
    a.transport.send([formatAddress({ systemName: SYSTEM, host: HOST, port })], leave('x'))
    await waitFor(() => wire.length > 0, 5000, 'the hello')
    expect(wire).not.toContain(SECRET)
  })

  test('a wrong secret is refused on both sides, logged and counted, and nothing is delivered', async () => {
    const [a, b] = await Promise.all([startNode({ tcp: { secrets: [SECRET] } }), startNode({ tcp: { secrets: ['another secret entirely'] } })])
    a.transport.send([b.address], leave('never'))
    b.transport.send([a.address], leave('never'))
    await waitFor(() => a.transport.stats.authFailures >= 2 && b.transport.stats.authFailures >= 2, 5000, 'refusals on both sides')
    expect(a.received).toEqual([])
    expect(b.received).toEqual([])
    // the dialer says it once per streak; the listener once per connection
    expect(a.logs.filter((line) => line.startsWith(`refused ${b.address}: listener proof does not match the cluster secret`))).toHaveLength(1)
    expect(b.logs.some((line) => line.startsWith('refused connection from') && line.includes('closed by the peer during the handshake'))).toBe(true)
  })

  test('a link that fails authentication redials with backoff, not in a tight loop', async () => {
    const [a, b] = await Promise.all([startNode({ tcp: { secrets: [SECRET] } }), startNode({ tcp: { secrets: ['another secret entirely'] } })])
    a.transport.send([b.address], leave('never'))
    await waitFor(() => a.transport.stats.authFailures >= 1, 5000, 'the first refusal')
    const first = performance.now()
    await waitFor(() => a.transport.stats.authFailures >= 5, 10_000, 'four more refusals')
    // redials wait at least half of 50, 100, 200 and 400 ms (a tight loop would take a few ms)
    expect(performance.now() - first).toBeGreaterThanOrEqual(25 + 50 + 100 + 200 - 10)
  })

  test('a node with a secret and one without refuse each other with a clear reason', async () => {
    const [a, b] = await Promise.all([startNode({ tcp: { secrets: [SECRET] } }), startNode()])
    a.transport.send([b.address], leave('never'))
    b.transport.send([a.address], leave('never'))
    await waitFor(
      () => b.logs.some((l) => l.includes('peer uses a cluster secret; this node has none')) && a.logs.some((l) => l.includes('peer has no cluster secret; this node requires one')),
      5000,
      'both refusals',
    )
    expect(a.received.length + b.received.length).toBe(0)
  })

  test('a rogue client that knows the protocol but not the secret gets no further than hello', async () => {
    const b = await startNode({ tcp: { secrets: [SECRET] } })
    const raw = await rawClient(b.port, { secrets: ['a guess at the secret'] })
    await expect(raw.handshake()).rejects.toThrow('listener proof does not match the cluster secret')
    // and forging the proof instead of checking the listener's gets it closed
    const forger = await rawClient(b.port, { secrets: [] })
    forger.write(encodeFrame(hello({ auth: 'hmac-sha256', nonce: new Uint8Array(randomBytes(NONCE_BYTES)) })))
    await waitFor(() => forger.frames.length === 1, 5000, 'hello_ack')
    forger.write(encodeFrame({ type: 'auth', proof: new Uint8Array(32) }))
    forger.write(encodeFrame(leave('injected')))
    await waitFor(() => forger.closed, 5000, 'the forger to be closed')
    expect(b.received).toEqual([])
    expect(b.logs.some((line) => line.endsWith('dialer proof does not match the cluster secret'))).toBe(true)
  })

  test('rotation: a node holding the new and the previous secret talks to nodes holding either', async () => {
    const rotated = await startNode({ tcp: { secrets: ['the new secret, long', SECRET] } })
    const [old, fresh] = await Promise.all([startNode({ tcp: { secrets: [SECRET] } }), startNode({ tcp: { secrets: ['the new secret, long'] } })])
    for (const [from, to] of [[rotated, old], [old, rotated], [rotated, fresh], [fresh, rotated]] as const) from.transport.send([to.address], leave(from.address))
    await waitFor(() => rotated.received.length === 2 && old.received.length === 1 && fresh.received.length === 1, 5000, 'every message')
    expect(rotated.transport.stats.authFailures + old.transport.stats.authFailures + fresh.transport.stats.authFailures).toBe(0)
  })
})

describe('tcp transport over TLS', () => {
  let certs: CertSet
  beforeAll(() => {
    certs = makeCerts()
  })
  afterAll(() => certs.remove())
  const tls = (cert: 'node' | 'rogue'): TlsFiles => ({
    cert: certs.read(cert === 'node' ? certs.nodeCert : certs.rogueCert),
    key: certs.read(cert === 'node' ? certs.nodeKey : certs.rogueKey),
    ca: certs.read(certs.ca),
  })

  test('nodes with certificates from the cluster CA talk over mutual TLS', async () => {
    const [a, b] = await Promise.all([startNode({ tcp: { tls: tls('node'), secrets: ['s3cret over tls'] } }), startNode({ tcp: { tls: tls('node'), secrets: ['s3cret over tls'] } })])
    for (let i = 0; i < 100; i++) a.transport.send([b.address], leave(`u${i}`))
    b.transport.send([a.address], leave('back'))
    await waitFor(() => b.received.length === 100 && a.received.length === 1, 5000, 'messages both ways')
    expect(usernames(b)).toEqual(Array.from({ length: 100 }, (_, i) => `u${i}`))
  })

  test('a node whose certificate another CA signed is refused, both as dialer and as listener', async () => {
    const good = await startNode({ tcp: { tls: tls('node') } })
    const rogue = await startNode({ tcp: { tls: tls('rogue') } })
    rogue.transport.send([good.address], leave('from rogue'))
    good.transport.send([rogue.address], leave('to rogue'))
    await waitFor(() => good.transport.stats.authFailures >= 2, 5000, 'both refusals at the good node')
    expect(good.received).toEqual([])
    expect(rogue.received).toEqual([])
    expect(good.logs.some((line) => line.startsWith('refused connection from') && line.includes('TLS:'))).toBe(true)
    expect(good.logs.some((line) => line.startsWith(`refused ${rogue.address}: TLS:`))).toBe(true)
  })

  test('a plain TCP client gets nothing from a TLS port', async () => {
    const b = await startNode({ tcp: { tls: tls('node') } })
    const raw = await rawClient(b.port)
    raw.write(encodeFrame(hello()))
    raw.write(encodeFrame(leave('plain')))
    await waitFor(() => raw.closed, 5000, 'the plain client to be closed')
    expect(b.received).toEqual([])
  })
})

describe('send queue order', () => {
  test('urgent frames go ahead of queued ones, in their own order, never inside a frame already started', async () => {
    const { SendQueue } = await import('../../src/cluster/tcp/send-queue')
    const q = new SendQueue()
    const f = (n: number, size = 4) => new Uint8Array(size).fill(n)
    q.push(f(1, 10))
    q.push(f(2))
    const written: number[] = []
    // A socket that takes 5 bytes, then everything.
    let budget = 5
    const socket = { write: (chunk: Uint8Array) => { const n = Math.min(budget, chunk.length); written.push(...chunk.subarray(0, n)); budget = 1e9; return n } } as never
    q.writeTo(socket) // frame 1 half written
    budget = 0
    q.pushUrgent(f(8))
    q.pushUrgent(f(9))
    budget = 1e9
    q.drained(socket)
    q.writeTo(socket)
    expect(written).toEqual([...f(1, 10), ...f(8), ...f(9), ...f(2)])
  })

  test('a socket that took less than offered is not written to again until it drains', async () => {
    const { SendQueue } = await import('../../src/cluster/tcp/send-queue')
    const q = new SendQueue()
    let budget = 3
    const offered: number[] = []
    const socket = { write: (chunk: Uint8Array) => (offered.push(chunk.length), Math.min(budget, chunk.length)) } as never
    q.push(new Uint8Array(10))
    expect(q.writeTo(socket)).toEqual({ frames: 0, bytes: 3 })
    // More frames while the kernel buffer is full: queued, not offered again (one copy and syscall per frame under a backlog).
    for (let i = 0; i < 5; i++) q.push(new Uint8Array(10))
    budget = 1e9
    expect(q.writeTo(socket)).toEqual({ frames: 0, bytes: 0 })
    expect(offered).toEqual([10])
    // A new connection is written to at once; so is the old one after its drain.
    const other = { write: (chunk: Uint8Array) => chunk.length } as never
    q.drained(socket)
    expect(q.writeTo(socket)).toEqual({ frames: 6, bytes: 57 })
    q.push(new Uint8Array(4))
    expect(q.writeTo(other)).toEqual({ frames: 1, bytes: 4 })
  })
})

// The contract every Transport keeps (src/cluster/transport.ts), as one suite run against each
// implementation: the TCP one (tcp-transport.test.ts) and the in-memory one the simulator uses
// (memory-transport.test.ts). After Hono's router/common.case.test.ts.
import { describe, expect, test } from 'bun:test'
import { RaftMessage } from '../../src/cluster/messages'
import { ACCEPTED, type Peer, type Transport, type Verdict } from '../../src/cluster/transport'
import { validatorFor } from '../../src/cluster/validate'
import { ChatMessage } from '../../src/chat/messages'

export type PeerMessage = RaftMessage | ChatMessage
export const validatePeerMessage = validatorFor<PeerMessage>([...RaftMessage.anyOf, ...ChatMessage.anyOf])
export const SYSTEM = 'WebSocketClusterSystem'

export interface ContractNode {
  transport: Transport<PeerMessage>
  address: string
  received: Array<{ peer: Peer; message: PeerMessage }>
  connected: string[]
  logs: string[]
}

export interface StartOptions {
  address?: string
  incarnation?: string
  onConnected?: (node: ContractNode, address: string) => void
  onMessage?: (node: ContractNode, message: PeerMessage) => Verdict | void
}

export interface ContractEnv {
  /** An address nobody listens on yet. */
  freeAddress(): string
  start(options?: StartOptions): Promise<ContractNode>
  /** Waits until `condition` holds: in real time for TCP, in virtual time for the in-memory transport. */
  waitFor(condition: () => boolean, what: string): Promise<void>
}

export const leave = (username: string): PeerMessage => ({ type: 'presence_leave', username })
export const usernames = (node: ContractNode) =>
  node.received.map(({ message }) => (message.type === 'presence_leave' ? message.username : message.type))

/** The handlers that record what a contract node receives. */
export function handlersFor(node: ContractNode, options: StartOptions) {
  return {
    onMessage: (peer: Peer, message: PeerMessage): Verdict => {
      node.received.push({ peer, message })
      return options.onMessage?.(node, message) ?? ACCEPTED
    },
    onConnected: (peerAddress: string) => {
      node.connected.push(peerAddress)
      options.onConnected?.(node, peerAddress)
    },
  }
}

export function transportContract(name: string, env: ContractEnv): void {
  describe(`${name} transport contract`, () => {
    test('messages arrive in order, from the peer that sent them', async () => {
      const [a, b] = await Promise.all([env.start({ incarnation: 'a-1' }), env.start()])
      const names = Array.from({ length: 2000 }, (_, i) => `user${i}`)
      for (const name of names) expect(a.transport.send([b.address], leave(name))).toBe(1)
      await env.waitFor(() => b.received.length === names.length, 'all messages at b')
      expect(usernames(b)).toEqual(names)
      expect(b.received[0]!.peer).toMatchObject({ address: a.address, incarnation: 'a-1' })
      expect(a.connected).toEqual([b.address])
      // Every frame a wrote (its handshake too) arrived at b, and nothing else did.
      expect(a.transport.stats.framesOut).toBeGreaterThan(names.length)
      expect(b.transport.stats.framesIn).toBe(a.transport.stats.framesOut)
      expect(b.transport.stats.bytesIn).toBe(a.transport.stats.bytesOut)
      expect(b.transport.stats.invalid).toBe(0)
    })

    test('send encodes once for several addresses and counts the links that took it', async () => {
      const [a, b, c] = await Promise.all([env.start(), env.start(), env.start()])
      expect(a.transport.send([b.address, c.address], leave('both'))).toBe(2)
      expect(a.transport.send([], leave('nobody'))).toBe(0)
      a.transport.send([b.address], leave('only-b'))
      await env.waitFor(() => b.received.length === 2 && c.received.length === 1, 'deliveries')
      expect(usernames(b)).toEqual(['both', 'only-b'])
      expect(usernames(c)).toEqual(['both'])
    })

    test('a peer that starts after messages were queued still gets them, in order', async () => {
      const a = await env.start()
      const address = env.freeAddress()
      for (let i = 0; i < 5; i++) expect(a.transport.send([address], leave(`early${i}`))).toBe(1)
      await env.waitFor(() => a.logs.some((line) => line.startsWith(`cannot connect to ${address}`)), 'a failed dial')
      const b = await env.start({ address })
      a.transport.send([address], leave('late'))
      await env.waitFor(() => b.received.length === 6, 'queued messages at b')
      expect(usernames(b)).toEqual(['early0', 'early1', 'early2', 'early3', 'early4', 'late'])
      expect(a.connected).toEqual([address])
      // one log line for the streak of failed dials, not one per attempt
      expect(a.logs.filter((line) => line.startsWith('cannot connect')).length).toBe(1)
    })

    test('a peer that went away and came back gets new messages; onConnected sends go first', async () => {
      const a = await env.start({
        onConnected: (node, address) => node.transport.send([address], { type: 'presence_snapshot', users: [] }),
      })
      const address = env.freeAddress()
      const first = await env.start({ address, incarnation: 'b-1' })
      a.transport.send([address], leave('before'))
      await env.waitFor(() => first.received.length === 2, 'first incarnation')
      expect(usernames(first)).toEqual(['presence_snapshot', 'before'])

      await first.transport.close()
      await env.waitFor(() => a.logs.some((line) => line.startsWith(`lost connection to ${address}`)), 'a to notice')
      a.transport.send([address], leave('while-down'))
      const second = await env.start({ address, incarnation: 'b-2' })
      a.transport.send([address], leave('after'))
      await env.waitFor(() => second.received.length === 3, 'second incarnation')
      expect(usernames(second)).toEqual(['presence_snapshot', 'while-down', 'after'])
      expect(second.received.every(({ peer }) => peer.address === a.address)).toBe(true)
      expect(a.connected).toEqual([address, address])
    })

    test('disconnect drops the link; a later send dials again', async () => {
      const [a, b] = await Promise.all([env.start(), env.start()])
      a.transport.send([b.address], leave('one'))
      await env.waitFor(() => b.received.length === 1, 'first message')
      a.transport.disconnect(b.address)
      a.transport.disconnect('bun://Nobody@127.0.0.1:9') // unknown: a no-op
      a.transport.send([b.address], leave('two'))
      await env.waitFor(() => b.received.length === 2, 'second message')
      expect(a.connected).toEqual([b.address, b.address])
    })

    test('a handler that throws does not stop the connection', async () => {
      const a = await env.start()
      const b = await env.start({
        onMessage: (_node, message) => {
          if (message.type === 'presence_leave' && message.username === 'boom') throw new Error('handler bug')
        },
      })
      a.transport.send([b.address], leave('boom'))
      a.transport.send([b.address], leave('fine'))
      await env.waitFor(() => b.received.length === 2, 'both messages')
      expect(b.logs.some((line) => line.includes('handler bug'))).toBe(true)
      expect(b.transport.stats.invalid).toBe(0)
    })

    test('a message the receiver refuses closes that connection and is counted; the sender reconnects', async () => {
      const a = await env.start()
      const b = await env.start({ onMessage: (_node, m) => (m.type === 'presence_leave' && m.username === 'no' ? { ok: false, error: 'not wanted' } : ACCEPTED) })
      a.transport.send([b.address], leave('no'))
      await env.waitFor(() => b.transport.stats.invalid === 1, 'the refusal')
      expect(b.logs.some((line) => line.includes('not wanted'))).toBe(true)
      a.transport.send([b.address], leave('yes'))
      await env.waitFor(() => usernames(b).includes('yes'), 'the next message on a new connection')
    })

    test('a message the validator refuses closes that connection and is counted; the sender reconnects', async () => {
      const [a, b] = await Promise.all([env.start(), env.start()])
      a.transport.send([b.address], { type: 'presence_leave', username: 5 } as unknown as PeerMessage)
      await env.waitFor(() => b.transport.stats.invalid === 1, 'the refusal')
      expect(b.logs.some((line) => line.includes(`closed connection from ${a.address}`))).toBe(true)
      await env.waitFor(() => a.logs.some((line) => line.startsWith(`lost connection to ${b.address}`)), 'a to notice')
      a.transport.send([b.address], leave('after'))
      await env.waitFor(() => b.received.length === 1, 'the next message on a new connection')
      expect(usernames(b)).toEqual(['after'])
    })

    test('close is idempotent; a closed transport accepts nothing', async () => {
      const a = await env.start()
      a.transport.send([env.freeAddress()], leave('x'))
      await Promise.all([a.transport.close(), a.transport.close()])
      expect(a.transport.send([a.address], leave('after close'))).toBe(0)
    })
  })
}

// How cluster nodes exchange messages. The interface hides sockets, so a whole node runs on the
// TCP transport (tcp/) in production and on the in-memory one (memory-transport.ts) in the
// simulator; test/cluster/transport-contract.ts is the suite both pass.
import type { Log } from '../io'
import type { Hello } from './messages'
import { ok, type Result } from '../result'
import type { Typed, Validator } from './validate'

/** What a receiver says of a message: a refusal closes the connection it came on, with one log line. */
export type Verdict = Result<void>
export const ACCEPTED: Verdict = ok(undefined)

/** Who sent a message: the node that authenticated the connection it came on. */
export type Peer = Pick<Hello, 'address' | 'incarnation'>

export interface TransportHandlers<M> {
  /** A validated message from an authenticated peer. A refusal closes that peer's connection. */
  onMessage(peer: Peer, message: M): Verdict
  /** An outbound link to `address` completed a (re)connect and sent its hello. Fires on every reconnect. Messages sent from inside this callback must be the first ones after the hello on the new connection. */
  onConnected?(address: string): void
}

export interface TransportStats {
  /** Frames decoded from inbound connections, hellos included. */
  framesIn: number
  /** Frames completely written to outbound sockets, hellos included. */
  framesOut: number
  bytesIn: number
  bytesOut: number
  /** Messages refused by `send` (queue full, or larger than a frame may be), one per address. */
  dropped: number
  /** Authenticated inbound connections closed for what they sent. */
  invalid: number
  /** Connections (either direction) closed before authenticating: bad handshake, wrong or missing secret, timeout. */
  authFailures: number
  /** Outbound connections that completed the handshake: the first ones and every reconnect. */
  connects: number
}

export const emptyStats = (): TransportStats => ({ framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, dropped: 0, invalid: 0, authFailures: 0, connects: 0 })

/**
 * At-most-once, FIFO per sender and receiver. Frames queued while a link is down are sent after it
 * reconnects; frames the kernel had already taken when a connection died are lost, as in Artery.
 */
export interface Transport<M extends Typed = Typed> {
  /** Encodes once and queues the same frame for every address; never throws; returns how many links accepted it. */
  send(addresses: string[], message: M): number
  /** Drops the outbound link to a peer that left the cluster (closes it, discards its queue, stops redialling). */
  disconnect(address: string): void
  close(): Promise<void>
  readonly stats: TransportStats
  /** Bytes waiting to be sent, over all links (a gauge: a slow or absent peer shows here). */
  queuedBytes(): number
  /** Traffic per peer this node has a link to or heard from. */
  peerStats(): PeerStats[]
}

/** One peer's share of the traffic: what this node sent it (outbound link) and received from it. */
export interface PeerStats {
  address: string
  framesOut: number
  bytesOut: number
  framesIn: number
  /** Messages to it dropped (queue full). */
  dropped: number
  /** Outbound connections to it opened: the first one and every reconnect. */
  connects: number
  queuedBytes: number
}

/** What a node gives its transport: who it is, how to check what peers send, where it goes. */
export interface TransportOptions<M extends Typed> {
  /** This node's address, `bun://<system>@<host>:<port>`: where it listens and what peers dial. */
  address: string
  incarnation: string
  systemName: string
  validate: Validator<M>
  handlers: TransportHandlers<M>
  log: Log
  /**
   * Messages that may overtake others (the cluster's own: heartbeats and votes must not wait behind
   * a chat backlog). Checked on the raw value, the same way on both ends. A transport may honour it
   * (TCP sends them ahead, unnumbered: at most once) or ignore it (the in-memory one keeps FIFO).
   */
  urgent?: (value: unknown) => boolean
}

export type TransportFactory = <M extends Typed>(options: TransportOptions<M>) => Promise<Transport<M>>

// How cluster nodes exchange messages. The interface hides sockets so membership and chat can be
// tested against an in-memory fake; tcp-transport.ts is the real one.
import type { Hello, PeerMessage } from './messages'

export interface TransportHandlers {
  /** A validated message from a peer; `peer` is the hello that peer sent on this connection. */
  onMessage(peer: Hello, message: PeerMessage): void
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
  /** Inbound connections closed for what they sent. */
  invalid: number
}

/**
 * At-most-once, FIFO per sender and receiver. Frames queued while a link is down are sent after it
 * reconnects; frames the kernel had already taken when a connection died are lost, as in Artery.
 */
export interface Transport {
  /** Encodes once and queues the same frame for every address; never throws; returns how many links accepted it. */
  send(addresses: string[], message: PeerMessage): number
  /** Drops the outbound link to a peer that left the cluster (closes it, discards its queue, stops redialling). */
  disconnect(address: string): void
  close(): Promise<void>
  readonly stats: TransportStats
}

export interface NodeAddress {
  systemName: string
  host: string
  port: number
}

// `bun://System@host:port`; an IPv6 host goes in brackets, as in a URL.
const ADDRESS = /^bun:\/\/([A-Za-z0-9][A-Za-z0-9_-]*)@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/

export function parseAddress(address: string): NodeAddress | null {
  const match = ADDRESS.exec(address)
  if (!match) return null
  const port = Number(match[3])
  if (port < 1 || port > 65535) return null
  const host = match[2]!
  return { systemName: match[1]!, host: host.startsWith('[') ? host.slice(1, -1) : host, port }
}

export function formatAddress({ systemName, host, port }: NodeAddress): string {
  return `bun://${systemName}@${host.includes(':') ? `[${host}]` : host}:${port}`
}

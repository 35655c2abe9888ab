// What every fuzz action gets: its lane's random source, what is known about the cluster, the
// budgets, and the counters it reports into.
import type { ClusterConn, HandshakeConfig } from './cluster-conn'
import type { ClusterFacts } from './inputs'
import type { Rng } from './rng'

export type Port = 'cluster' | 'ws' | 'http'

export interface KindStats {
  inputs: number
  bytes: number
  connections: number
  /** Outcomes by name: `closed_by_node`, `ws_close_4400`, `http_404`, `error_frame_bad_message`... */
  outcomes: Record<string, number>
}

export interface Impostor {
  address: string
  id: string
}

/** What the cluster kinds opened and saw refused, to compare with the nodes' own counters at the end. */
export interface ClusterTally {
  /** Connections that never authenticated (every outsider connection). */
  unauthConnections: number
  /** Of those, closed by the node: each is one `authFailures` on that node. */
  unauthRefused: number
  /** Connections that completed the genuine handshake (insiders, and recordings for replays). */
  authedConnections: number
  /** Of those, closed by the node after a frame it must refuse: each is one `invalid`. */
  authedRefused: number
}

export interface FuzzContext {
  rng: Rng
  facts: () => ClusterFacts
  handshake: HandshakeConfig
  /** Addresses the fuzzer listens on itself, claimed by authenticated non-members (nodes that dial them reach only us). */
  impostors: Impostor[]
  /** Addresses claimed only by connections that never authenticate: a node must never dial them. */
  outsiders: Impostor[]
  tally: ClusterTally
  /** The nodes' handshake timeout: an unauthenticated connection must be closed by then. */
  handshakeTimeoutMs: number
  /** Takes `n` bytes from the byte budget; false once the run is stopping. */
  spend(n: number): Promise<boolean>
  stopped(): boolean
  stats: KindStats
  /** An unexpected reaction of a node: a finding. */
  anomaly(text: string): void
  /** Registers a resource to close if the run ends while the action holds it. */
  track(close: () => void): () => void
  /** How long a node may take to refuse an input it must refuse. */
  refusalWaitMs: number
}

export const count = (stats: KindStats, outcome: string, n = 1) => {
  stats.outcomes[outcome] = (stats.outcomes[outcome] ?? 0) + n
}

export type Action = (ctx: FuzzContext) => Promise<void>

export interface Kind {
  name: string
  port: Port
  weight: number
  /** What the input is, for the summary. */
  about: string
  run: Action
}

/** Waits for a connection to be closed by the node, up to `ms`. */
export async function closedByNode(conn: ClusterConn, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const outcome = await Promise.race([conn.closed, new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))])
  clearTimeout(timer)
  return outcome === 'peer'
}

// Prometheus metrics (prom-client), read from the counters the parts already keep: the gateway
// (connections, frames, refusals), the room (chat in and out), the cluster shell (view, leaders,
// elections, rejoins) and its transport (frames, bytes, drops, reconnects, queue). Nothing is
// counted twice: every metric is computed when scraped. Process and event-loop metrics come from
// prom-client's defaults. Names follow Prometheus conventions: websocket_cluster_*, base units,
// _total for counters.
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import type { ChatGateway } from './chat/gateway'
import type { ChatRoom } from './chat/room'
import type { MemberStatus, MembershipView } from './cluster/membership'
import type { PeerStats, TransportStats } from './cluster/transport'

export interface MetricSources {
  gateway: ChatGateway
  room: ChatRoom
  view(): MembershipView
  cluster: { readonly stats: { leaderChanges: number; rejoins: number }; readonly electionsStarted: number; queuedBytes(): number; peerStats(): PeerStats[] }
  transport(): TransportStats
  /** Bytes and frames sent to local users, counted where they are published. */
  sent(): { frames: number; bytes: number }
}

const P = 'websocket_cluster_'
const STATUSES: MemberStatus[] = ['Joining', 'Up', 'Leaving', 'Down']

/** A counter whose value is read from a running total at scrape time. */
function counterOf(registry: Registry, name: string, help: string, read: () => number): void {
  let last = 0
  new Counter({
    name: P + name,
    help,
    registers: [registry],
    collect() {
      const now = read()
      if (now > last) this.inc(now - last)
      last = Math.max(last, now)
    },
  })
}

function gaugeOf(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name: P + name,
    help,
    registers: [registry],
    collect() {
      this.set(read())
    },
  })
}

export function createMetrics(s: MetricSources): Registry {
  const r = new Registry()
  // prom-client samples event-loop delay with a native timer, every 10 ms by default: about 0.6 % of
  // a core on an idle node here, and at 100 ms still 10 wake-ups a second of an idle node's few
  // dozen. Once a second still shows a loop that is behind (what sheds load is src/load.ts).
  collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 1000 })
  const g = s.gateway.stats
  gaugeOf(r, 'websocket_connections', 'WebSocket users admitted and connected to this node', () => s.gateway.sessionCount)
  counterOf(r, 'websocket_joins_total', 'WebSocket users admitted', () => g.admitted)
  counterOf(r, 'websocket_leaves_total', 'WebSocket sessions of admitted users that ended', () => g.closed)
  counterOf(r, 'websocket_frames_received_total', 'frames received from admitted users', () => g.framesIn)
  counterOf(r, 'websocket_received_bytes_total', 'bytes received from admitted users', () => g.bytesIn)
  counterOf(r, 'websocket_frames_sent_total', 'frames sent to local users (a published frame counts once per user)', () => s.sent().frames)
  counterOf(r, 'websocket_sent_bytes_total', 'bytes sent to local users', () => s.sent().bytes)
  new Counter({
    name: `${P}websocket_refused_total`,
    help: 'connections and frames refused, by reason',
    labelNames: ['reason'],
    registers: [r],
    collect() {
      this.reset()
      for (const [reason, count] of Object.entries(g.refused)) this.inc({ reason }, count)
    },
  })
  counterOf(r, 'chat_messages_received_total', 'chat messages said by local users', () => s.room.stats.chatFromUsers)
  counterOf(r, 'chat_messages_relayed_total', 'chat lines from users of other nodes delivered here', () => s.room.stats.chatFromPeers)
  gaugeOf(r, 'transcript_pending', 'lines this node proposed that the transcript has not taken yet (held while no leader is reachable)', () => s.room.pending)
  gaugeOf(r, 'transcript_last_id', 'id of the newest transcript line this node holds', () => s.room.lastId)
  gaugeOf(r, 'transcript_lines', 'transcript lines this node holds for history and resume', () => s.room.linesHeld)
  counterOf(r, 'chat_messages_delivered_total', 'chat messages handed to local users (one per user)', () => s.room.stats.chatDelivered)

  new Gauge({
    name: `${P}cluster_members`,
    help: 'members in this node\'s view, by status',
    labelNames: ['status'],
    registers: [r],
    collect() {
      const members = s.view().members
      for (const status of STATUSES) this.set({ status }, members.filter((m) => m.status === status).length)
    },
  })
  gaugeOf(r, 'cluster_unreachable_members', 'members the leader has not heard from lately', () => s.view().members.filter((m) => !m.reachable).length)
  gaugeOf(r, 'cluster_term', 'current Raft term', () => s.view().term)
  gaugeOf(r, 'cluster_commit_index', 'index of the last committed log entry (member changes and transcript lines)', () => s.view().commitIndex)
  gaugeOf(r, 'cluster_is_leader', '1 while this node is the leader', () => (s.view().role === 'leader' ? 1 : 0))
  gaugeOf(r, 'cluster_up', '1 while this node is Up in a cluster with a leader', () => (s.view().status === 'Up' && s.view().leaderId ? 1 : 0))
  counterOf(r, 'cluster_leader_changes_total', 'leader changes seen by this node', () => s.cluster.stats.leaderChanges)
  counterOf(r, 'cluster_elections_started_total', 'elections this node started', () => s.cluster.electionsStarted)
  counterOf(r, 'cluster_rejoins_total', 'times this node found itself removed and rejoined', () => s.cluster.stats.rejoins)

  const t = () => s.transport()
  counterOf(r, 'transport_frames_received_total', 'frames received on the cluster port', () => t().framesIn)
  counterOf(r, 'transport_frames_sent_total', 'frames written to peers', () => t().framesOut)
  counterOf(r, 'transport_received_bytes_total', 'bytes received on the cluster port', () => t().bytesIn)
  counterOf(r, 'transport_sent_bytes_total', 'bytes written to peers', () => t().bytesOut)
  counterOf(r, 'transport_dropped_total', 'messages to peers dropped (queue full or too large)', () => t().dropped)
  counterOf(r, 'transport_invalid_total', 'peer connections closed for what they sent', () => t().invalid)
  counterOf(r, 'transport_connects_total', 'outbound peer connections opened (first ones and reconnects)', () => t().connects)
  gaugeOf(r, 'transport_queued_bytes', 'bytes waiting to be sent to peers', () => s.cluster.queuedBytes())
  perPeer(r, s)
  return r
}

/** The transport's traffic split by peer address (a counter restarts when a link to a departed peer is dropped). */
function perPeer(r: Registry, s: MetricSources): void {
  const series: Array<[string, string, keyof PeerStats, 'counter' | 'gauge']> = [
    ['transport_peer_frames_sent_total', 'frames written to this peer', 'framesOut', 'counter'],
    ['transport_peer_sent_bytes_total', 'bytes written to this peer', 'bytesOut', 'counter'],
    ['transport_peer_frames_received_total', 'frames received from this peer', 'framesIn', 'counter'],
    ['transport_peer_dropped_total', 'messages to this peer dropped (queue full)', 'dropped', 'counter'],
    ['transport_peer_connects_total', 'connections to this peer opened (first and reconnects)', 'connects', 'counter'],
    ['transport_peer_queued_bytes', 'bytes waiting for this peer', 'queuedBytes', 'gauge'],
  ]
  for (const [name, help, field, kind] of series) {
    const collect = function (this: Counter<'peer'> | Gauge<'peer'>) {
      this.reset()
      for (const peer of s.cluster.peerStats()) {
        const value = peer[field] as number
        if (this instanceof Counter) this.inc({ peer: peer.address }, value)
        else this.set({ peer: peer.address }, value)
      }
    }
    if (kind === 'counter') new Counter({ name: P + name, help, labelNames: ['peer'], registers: [r], collect })
    else new Gauge({ name: P + name, help, labelNames: ['peer'], registers: [r], collect })
  }
}

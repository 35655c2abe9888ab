// HTTP and WebSocket routes (Elysia). A thin shell: Elysia's sockets are adapted to the chat
// gateway, which validates and admits users; the JSON routes read the room and the cluster.
import { Elysia } from 'elysia'
import page from '../../public/index.html'
import type { ChatGateway } from '../chat/gateway'
import type { ChatRoom } from '../chat/room'
import type { ClientSocket, Fanout } from '../chat/sockets'
import { addressOf, incarnationOf } from '../cluster/address'
import type { MembershipView } from '../cluster/membership'
import type { TransportStats } from '../cluster/transport'
import type { Log } from '../io'
import type { Result } from '../result'
import type { Registry } from 'prom-client'

export const CHAT_TOPIC = 'chat'

export interface AppDeps {
  room: ChatRoom
  gateway: ChatGateway
  selfAddress: string
  roles: string[]
  clusterView: () => MembershipView
  transportStats: () => TransportStats
  /** Whether this node should get traffic now, or why not (for load balancers: /readyz). */
  readiness: () => Result<true>
  metrics: Registry
  log: Log
}

export function clusterInfo(view: MembershipView, selfAddress: string, transport: TransportStats, roles: string[] = []) {
  return {
    selfAddress,
    /** As the Pekko example: this node's own status, and its roles. */
    state: view.status,
    roles,
    incarnation: incarnationOf(view.selfId),
    leader: view.leaderId ? addressOf(view.leaderId) : null,
    term: view.term,
    commitIndex: view.commitIndex,
    status: view.status,
    role: view.role,
    members: view.members.map((m) => ({
      address: m.address,
      status: m.status,
      reachable: m.reachable,
      incarnation: m.incarnation,
      httpUrl: m.httpUrl,
      leader: m.leader,
    })),
    /** Frames and bytes on the cluster port; `dropped` counts messages lost to full send queues. */
    transport: { ...transport },
  }
}

/**
 * Publishes to the topic every admitted socket subscribes to: one encoding, fanned out by Bun.
 * Bun's server exists once the app listens; before that no user can be connected, so there is
 * nobody to publish to.
 */
type TopicServer = { publish(topic: string, data: string): unknown; subscriberCount(topic: string): number }

export class TopicFanout implements Fanout {
  /** Frames and bytes handed to users: a frame published to n subscribers counts n times. */
  readonly stats = { frames: 0, bytes: 0 }
  private server: TopicServer | null = null
  attach(server: TopicServer | null | undefined) {
    this.server = server ?? null
  }
  publish(json: string) {
    if (!this.server) return
    const subscribers = this.server.subscriberCount(CHAT_TOPIC)
    this.stats.frames += subscribers
    this.stats.bytes += subscribers * json.length
    this.server.publish(CHAT_TOPIC, json)
  }
}

type ElysiaSocket = { id: string; raw: { send(data: string): unknown; close(code?: number, reason?: string): void }; subscribe(topic: string): unknown }

const adapt = (ws: ElysiaSocket): ClientSocket => ({
  send: (json) => ws.raw.send(json),
  close: (code, reason) => ws.raw.close(code, reason),
  subscribe: () => void ws.subscribe(CHAT_TOPIC),
})

export function createApp(deps: AppDeps) {
  const { room, gateway } = deps
  return new Elysia({
    websocket: {
      // Whole frames beyond this are refused by Bun with close code 1009.
      maxPayloadLength: 64 * 1024,
      // A client that stops reading is disconnected instead of silently missing messages;
      // the page reconnects and gets the current user list.
      backpressureLimit: 4 * 1024 * 1024,
      closeOnBackpressureLimit: true,
    },
  })
    .get('/', page)
    .get('/api/users', () => {
      const users = room.users()
      return { users, count: users.length }
    })
    .get('/api/cluster-info', () => clusterInfo(deps.clusterView(), deps.selfAddress, deps.transportStats(), deps.roles))
    // Liveness: the process answers. Readiness: Up in a cluster with a leader, and not draining.
    .get('/healthz', () => ({ status: 'ok' }))
    .get('/readyz', () => {
      const ready = deps.readiness()
      return ready.ok ? Response.json({ status: 'ready' }) : Response.json({ status: 'not ready', reason: ready.error }, { status: 503 })
    })
    .get('/metrics', async () => new Response(await deps.metrics.metrics(), { headers: { 'content-type': deps.metrics.contentType } }))
    // A plain GET (no Upgrade header) on the chat socket's path: say what is expected.
    .get('/ws/chat', () =>
      Response.json({ error: 'this is a WebSocket endpoint: connect with ws://…/ws/chat?username=NAME' }, { status: 426, headers: { upgrade: 'websocket' } }),
    )
    .ws('/ws/chat', {
      open: (ws) => gateway.open(ws.id, adapt(ws), ws.data.query as Record<string, unknown>),
      message: (ws, data) => gateway.message(ws.id, data),
      close: (ws) => gateway.close(ws.id),
    })
    .onError(({ code, error, path }) => {
      if (code === 'NOT_FOUND') return Response.json({ error: 'not found', path }, { status: 404 })
      deps.log(`http error on ${path}: ${String(error)}`, { level: 'error', event: 'http_error', path })
      return Response.json({ error: 'internal error' }, { status: 500 })
    })
}

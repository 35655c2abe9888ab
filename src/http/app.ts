// HTTP and WebSocket routes (Elysia). A thin shell: Elysia's sockets are adapted to the chat
// gateway, which validates and admits users; the JSON routes read the room and the cluster.
import { Elysia } from 'elysia'
import page from '../../public/index.html'
import type { ChatGateway } from '../chat/gateway'
import { connectParams, type Identify } from '../chat/identity'
import { CloseCode } from '../chat/protocol'
import type { ChatRoom } from '../chat/room'
import type { ClientSocket, Fanout } from '../chat/sockets'
import { addressOf, incarnationOf } from '../cluster/address'
import type { MembershipView } from '../cluster/membership'
import type { TransportStats } from '../cluster/transport'
import type { Log } from '../io'
import type { Result } from '../result'
import type { Registry } from 'prom-client'
import { ConnectionCounts, originRefusal, type ConnectionCaps, type UpgradeRefusal } from './admission'

export const CHAT_TOPIC = 'chat'
const PUBLIC_READ = { 'access-control-allow-origin': '*' }

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
  /** Who a new socket claims to be: its `username` parameter, or its token's name. */
  identify: Identify
  /** Origins allowed to open the chat socket; null: any. */
  allowedOrigins: readonly string[] | null
  connectionCaps: ConnectionCaps
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
type TopicServer = { publish(topic: string, data: string): unknown }

export class TopicFanout implements Fanout {
  /** Frames and bytes handed to users: a frame published to n subscribers counts n times. */
  readonly stats = { frames: 0, bytes: 0 }
  private server: TopicServer | null = null
  /** Who is subscribed, counted by the gateway: asking Bun on every publish costs more than the count is worth. */
  private subscribers: () => number = () => 0
  /** The server to publish through (once it listens) and who counts its subscribers. */
  attach(server: TopicServer | null | undefined, subscribers: () => number) {
    this.server = server ?? null
    this.subscribers = subscribers
  }
  publish(json: string) {
    if (!this.server) return
    const subscribers = this.subscribers()
    this.stats.frames += subscribers
    this.stats.bytes += subscribers * json.length
    this.server.publish(CHAT_TOPIC, json)
  }
}

/** The peer's address as Bun saw it (proxies' forwarding headers are not trusted). */
function clientAddress(server: { requestIP(r: Request): { address: string } | null } | null, request: Request): string {
  return server?.requestIP(request)?.address ?? 'unknown'
}

type ElysiaSocket = { id: string; raw: { send(data: string): unknown; close(code?: number, reason?: string): void; subscribe(topic: string): unknown } }

/**
 * The session keeps Bun's socket, not Elysia's wrapper of it: Elysia makes a new wrapper, with
 * fifteen bound functions, for every event, and one kept for the life of the connection would
 * cost every idle user its bytes.
 */
const adapt = ({ raw }: ElysiaSocket): ClientSocket => ({
  send: (json) => raw.send(json),
  close: (code, reason) => raw.close(code, reason),
  subscribe: () => void raw.subscribe(CHAT_TOPIC),
})

const refuse = (r: UpgradeRefusal) => Response.json({ error: r.error }, { status: r.status })

/**
 * The chat socket, in its own instance so its hooks apply to it alone, in this order, all before
 * the upgrade: the origin and connection-count checks (an HTTP status refuses), then the claim
 * (asynchronous: token signatures), so the socket opens knowing who it claims to be and no frame
 * can arrive before the user is admitted or refused.
 */
function chatSocket(deps: AppDeps) {
  const { gateway } = deps
  const connections = new ConnectionCounts(deps.connectionCaps)
  /** Socket id → the client address it was counted under, so each socket is released once. */
  const counted = new Map<string, string>()
  return new Elysia()
    .onBeforeHandle(({ request, server }) => {
      const ip = clientAddress(server, request)
      const refusal = originRefusal(request.headers.get('origin'), deps.allowedOrigins) ?? connections.refusal(ip) ?? connections.connectRefusal(ip, Date.now())
      if (refusal) return refuse(refusal)
    })
    .resolve(async ({ request, server }) => ({
      claim: await deps.identify(connectParams(request.url)),
      ip: clientAddress(server, request),
    }))
    .ws('/ws/chat', {
      open: (ws) => {
        const { claim, ip } = ws.data
        // Two upgrades racing past the check above: the later one is closed here instead.
        if (!connections.acquire(ip)) return ws.raw.close(CloseCode.tryAgainLater, 'too many connections')
        counted.set(ws.id, ip)
        gateway.open(ws.id, adapt(ws), claim)
      },
      message: (ws, data) => gateway.message(ws.id, data),
      close: (ws) => {
        const ip = counted.get(ws.id)
        if (ip !== undefined) {
          counted.delete(ws.id)
          connections.release(ip)
        }
        gateway.close(ws.id)
      },
    })
}

/**
 * A request whose Host header Bun cannot make a URL of (`Host: a b`, `@`, empty) reaches us with
 * a bare path for a URL (`/public/api/users`), from which Elysia's router skips 7 characters as if
 * they were "http://" and serves `/api/users` (found by the fuzzer). RFC 9112 answers an invalid
 * Host with 400. An HTTP/1.0 request without Host has a bare path too: it is served when the
 * router reads it right (no "/" from index 7 on: `/healthz`, `/api/users`).
 */
function hostRefusal(request: Request): Response | undefined {
  const url = request.url
  if (/^https?:\/\//.test(url)) return
  if (request.headers.has('host') || url.indexOf('/', 7) !== -1) return Response.json({ error: 'invalid or missing Host header' }, { status: 400 })
}

/**
 * The JSON routes, in their own instance so the Host check applies to them alone: a global
 * request hook would make Elysia serve the page (a Bun HTML bundle, a static route) as JSON.
 */
function jsonRoutes(deps: AppDeps) {
  const { room } = deps
  return (
    new Elysia()
      .onBeforeHandle(({ request }) => hostRefusal(request))
      // Read-only and public to any chat user: a page that moved to another member reads it from there.
      .get('/api/users', () => {
        const users = room.users()
        return Response.json({ users, count: users.length }, { headers: PUBLIC_READ })
      })
      .get('/api/cluster-info', () => Response.json(clusterInfo(deps.clusterView(), deps.selfAddress, deps.transportStats(), deps.roles), { headers: PUBLIC_READ }))
      // Liveness: the process answers. Readiness: Up in a cluster with a leader, and not draining.
      .get('/healthz', () => ({ status: 'ok' }))
      .get('/readyz', () => {
        const ready = deps.readiness()
        return ready.ok ? Response.json({ status: 'ready' }) : Response.json({ status: 'not ready', reason: ready.error }, { status: 503 })
      })
      .get('/metrics', async () => new Response(await deps.metrics.metrics(), { headers: { 'content-type': deps.metrics.contentType } }))
  )
}

export function createApp(deps: AppDeps) {
  return new Elysia({
    // Elysia by default finds the path by skipping 11 characters of the URL ("http://a.bc"), so
    // with a one-character Host (`http://a/abc/api/users`) it takes `/api/users` as the path.
    // This makes it search from just after "http://" (this server speaks plain HTTP).
    handler: { standardHostname: false },
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
    .use(jsonRoutes(deps))
    // A plain GET (no Upgrade header) on the chat socket's path: say what is expected.
    .get('/ws/chat', () =>
      Response.json({ error: 'this is a WebSocket endpoint: connect with ws://…/ws/chat?username=NAME' }, { status: 426, headers: { upgrade: 'websocket' } }),
    )
    .use(chatSocket(deps))
    .onError(({ code, error, path }) => {
      if (code === 'NOT_FOUND') return Response.json({ error: 'not found', path }, { status: 404 })
      deps.log(`http error on ${path}: ${String(error)}`, { level: 'error', event: 'http_error', path })
      return Response.json({ error: 'internal error' }, { status: 500 })
    })
}

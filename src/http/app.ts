// HTTP and WebSocket routes (Elysia). A thin shell: Elysia's sockets are adapted to the chat
// gateway, which validates and admits users; the JSON routes read the room and the cluster.
import type { ServerWebSocket } from 'bun'
import { Elysia } from 'elysia'
import page from '../../public/index.html'
import type { ChatGateway } from '../chat/gateway'
import { connectParams, type Claim, type Identify } from '../chat/identity'
import { CloseCode } from '../chat/protocol'
import { PAGE_MAX, type ChatRoom, type Resume } from '../chat/room'
import type { ClientSocket, Fanout } from '../chat/sockets'
import { addressOf, incarnationOf } from '../cluster/address'
import type { MembershipView } from '../cluster/membership'
import type { TransportStats } from '../cluster/transport'
import type { Log } from '../io'
import { err, ok, type Result } from '../result'
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

/**
 * A Bun socket as the chat layer sees it. Its methods live on the prototype: one small object per
 * socket, where a record of five arrow functions cost six more heap cells (and their scope).
 */
class BunClient implements ClientSocket {
  constructor(private readonly ws: ServerWebSocket<{ flooded(): void }>) {}
  send(json: string) {
    return this.ws.send(json)
  }
  close(code?: number, reason?: string) {
    if (code === CloseCode.flooding) this.ws.data.flooded()
    this.ws.close(code, reason)
  }
  subscribe() {
    this.ws.subscribe(CHAT_TOPIC)
  }
  // Not read from until resumed: the client meets TCP backpressure (Bun 1.4.3 and later).
  pause() {
    ;(this.ws as unknown as { pause?(): void }).pause?.()
  }
  resume() {
    ;(this.ws as unknown as { resume?(): void }).resume?.()
  }
}

/** The peer's address as Bun saw it (proxies' forwarding headers are not trusted). */
function clientAddress(server: { requestIP(r: Request): { address: string } | null } | null, request: Request): string {
  return server?.requestIP(request)?.address ?? 'unknown'
}

const refuse = (r: UpgradeRefusal) => Response.json({ error: r.error }, { status: r.status })

const PLAIN_GET = () =>
  Response.json({ error: 'this is a WebSocket endpoint: connect with ws://…/ws/chat?username=NAME' }, { status: 426, headers: { upgrade: 'websocket' } })

/**
 * The chat socket. The upgrade is done here rather than by Elysia's `.ws()`: Elysia parses text
 * frames that look like JSON, numbers or booleans before any hook sees them (`007` arrived as
 * `7`, Elysia issue #1911), and keeps a copy of the request context and a set of closures per
 * socket. Here each socket's data is one small object whose handlers live on a shared prototype
 * (Elysia's Bun websocket dispatcher calls `ws.data.open/message/close`), and text arrives as sent.
 * Checks, in order, all before the upgrade: the origin and connection counts (an HTTP status
 * refuses), the resume parameters (400), then the claim (asynchronous: token signatures), so the
 * socket opens knowing who it claims to be and no frame can arrive before it is admitted or refused.
 */
function chatSocket(deps: AppDeps) {
  const { gateway } = deps
  const connections = new ConnectionCounts(deps.connectionCaps)
  let sockets = 0
  class Connection {
    /** Set when the socket was counted under its address, so it is released once. */
    counted = false
    /** The name it claimed, once open: kept out for a while if it is closed for flooding. */
    private name: string | null = null
    constructor(
      readonly id: string,
      readonly ip: string,
      /** Needed until the socket opens, then let go: thousands of idle sockets would hold them for nothing. */
      private claim: Claim | null,
      private resume: Resume | null,
    ) {}
    open(ws: ServerWebSocket<Connection>) {
      const { claim, resume } = this
      this.claim = this.resume = null
      // Two upgrades racing past the check before the upgrade: the later one is closed here instead.
      if (!connections.acquire(this.ip)) return ws.close(CloseCode.tryAgainLater, 'too many connections')
      this.counted = true
      if (claim!.ok) this.name = claim!.value
      gateway.open(this.id, new BunClient(ws), claim!, resume!)
    }
    flooded() {
      if (this.name !== null) connections.penalize(this.ip, this.name, Date.now())
    }
    message(_ws: ServerWebSocket<Connection>, data: string | Buffer) {
      // A paused socket still hands over what was read before the pause: the gateway drops it unread.
      gateway.message(this.id, data)
    }
    close() {
      if (this.counted) {
        this.counted = false
        connections.release(this.ip)
      }
      gateway.close(this.id)
    }
  }
  return new Elysia().get('/ws/chat', async ({ request, server }) => {
    // A plain GET (no Upgrade header) on the chat socket's path: say what is expected.
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') return PLAIN_GET()
    const ip = clientAddress(server, request)
    const refusal = originRefusal(request.headers.get('origin'), deps.allowedOrigins) ?? connections.refusal(ip) ?? connections.connectRefusal(ip, Date.now())
    if (refusal) return refuse(refusal)
    const resume = resumeParams(request.url)
    if (!resume.ok) return Response.json({ error: resume.error }, { status: 400 })
    const claim = await deps.identify(connectParams(request.url))
    const kept = claim.ok ? connections.penaltyRefusal(ip, claim.value, Date.now()) : null
    if (kept) return refuse(kept)
    const data = new Connection(String(++sockets), ip, claim, resume.value)
    if (server?.upgrade(request, { data })) return
    return Response.json({ error: 'expected a WebSocket upgrade' }, { status: 400 })
  })
}

const WHOLE = /^\d{1,15}$/

function searchOf(url: string): URLSearchParams {
  try {
    return new URL(url, 'http://x').searchParams
  } catch {
    return new URLSearchParams()
  }
}

/** `since` (a line id) and `epoch` of a resuming chat socket; anything else there is refused with 400. */
export function resumeParams(url: string): Result<Resume> {
  const q = searchOf(url)
  const since = q.get('since')
  const epoch = q.get('epoch')
  if (since !== null && !WHOLE.test(since)) return err('since must be the id of a line (a whole number)')
  if (epoch !== null && (epoch.length === 0 || epoch.length > 300)) return err('epoch must be 1 to 300 characters')
  return ok({ ...(since === null ? {} : { since: Number(since) }), ...(epoch === null ? {} : { epoch }) })
}

/** `before` and `limit` of /api/messages. */
function pageParams(url: string): Result<{ before: number | undefined; limit: number }> {
  const q = searchOf(url)
  const before = q.get('before')
  const limit = q.get('limit')
  if (before !== null && !WHOLE.test(before)) return err('before must be the id of a line (a whole number)')
  if (limit !== null && (!WHOLE.test(limit) || Number(limit) < 1)) return err('limit must be a whole number from 1')
  return ok({ before: before === null ? undefined : Number(before), limit: Math.min(PAGE_MAX, limit === null ? 50 : Number(limit)) })
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
      // Older lines of the transcript, newest last: `before` an id (the oldest a page shows), at most `limit`.
      .get('/api/messages', ({ request }) => {
        const query = pageParams(request.url)
        if (!query.ok) return Response.json({ error: query.error }, { status: 400, headers: PUBLIC_READ })
        const page = room.page(query.value.before, query.value.limit)
        return Response.json({ epoch: page.epoch, messages: page.messages, complete: page.complete }, { headers: PUBLIC_READ })
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
    .use(chatSocket(deps))
    .onError(({ code, error, path }) => {
      if (code === 'NOT_FOUND') return Response.json({ error: 'not found', path }, { status: 404 })
      deps.log(`http error on ${path}: ${String(error)}`, { level: 'error', event: 'http_error', path })
      return Response.json({ error: 'internal error' }, { status: 500 })
    })
}

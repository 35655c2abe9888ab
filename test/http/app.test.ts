// The HTTP routes in-process (Elysia's app.handle), on a real room over a real single-node
// membership core and transcript (test/support/room-cluster.ts): status codes and JSON bodies, including the error cases. (`GET /` is a Bun
// HTML bundle served by Bun.serve itself, so the e2e and browser tests cover it.)
import { describe, expect, test } from 'bun:test'
import { Membership } from '../../src/cluster/membership'
import { ChatGateway } from '../../src/chat/gateway'
import { Sockets } from '../../src/chat/sockets'
import { DEFAULT_TIMING as TIMING } from '../../src/cluster/timing'
import { createApp } from '../../src/http/app'
import { createMetrics } from '../../src/metrics'
import { readiness } from '../../src/node'
import { anonymous } from '../../src/chat/identity'
import { PAGE_MAX } from '../../src/chat/room'
import { addr, singleNode, type NodeOptions } from '../support/room-cluster'

const self = addr(1)

function makeApp(options: NodeOptions = {}) {
  const { net, node } = singleNode({ maxMessageLength: 2000, ...options })
  const { core, room } = node
  const stats = { framesIn: 1, framesOut: 2, bytesIn: 3, bytesOut: 4, dropped: 0, invalid: 0, authFailures: 5, connects: 1 }
  const gateway = new ChatGateway({ room, sockets: new Sockets(), selfAddress: self, now: () => net.now, rateLimit: { perSecond: 20, burst: 40 } })
  let draining = false
  const cluster = { stats: { leaderChanges: 1, rejoins: 0 }, electionsStarted: 0, queuedBytes: () => 0, peerStats: () => [{ address: 'bun://S@127.0.0.1:2552', framesOut: 7, bytesOut: 70, framesIn: 5, dropped: 0, connects: 1, queuedBytes: 0 }] }
  const metrics = createMetrics({ gateway, room, view: () => core.view(), cluster, transport: () => stats, sent: () => ({ frames: 0, bytes: 0 }) })
  const app = createApp({
    room,
    gateway,
    selfAddress: self,
    roles: ['chat'],
    clusterView: () => core.view(),
    transportStats: () => stats,
    readiness: () => readiness(core.view(), draining),
    metrics,
    log: () => {},
    identify: anonymous,
    allowedOrigins: ['http://good.example'],
    connectionCaps: { perIp: 2, total: 3 },
  })
  return { app, room, gateway, core, net, node, drain: () => (draining = true) }
}

const get = (app: ReturnType<typeof makeApp>['app'], path: string) => app.handle(new Request(`http://localhost${path}`))

describe('HTTP routes', () => {
  test('GET /api/users lists the users with a count', async () => {
    const { app, room, net } = makeApp()
    room.join('alice')
    const response = await get(app, '/api/users')
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({ users: [{ username: 'alice', nodeAddress: self, connectedAt: net.now }], count: 1 })
  })

  test('GET /api/cluster-info describes this node, the leader and the members', async () => {
    const { app } = makeApp()
    const body = await (await get(app, '/api/cluster-info')).json()
    expect(body).toMatchObject({
      selfAddress: self,
      state: 'Up',
      roles: ['chat'],
      incarnation: 'i1',
      leader: self,
      term: 1,
      status: 'Up',
      role: 'leader',
      members: [{ address: self, status: 'Up', reachable: true, incarnation: 'i1', httpUrl: 'http://127.0.0.1:8081', leader: true }],
      transport: { framesIn: 1, dropped: 0, authFailures: 5 },
    })
    expect(body.commitIndex).toBeGreaterThanOrEqual(1)
  })

  test('unknown paths get a JSON 404, a plain GET on the socket path a JSON 426', async () => {
    const { app } = makeApp()
    const missing = await get(app, '/api/nope')
    expect(missing.status).toBe(404)
    expect(await missing.json()).toEqual({ error: 'not found', path: '/api/nope' })
    const plain = await get(app, '/ws/chat?username=a')
    expect(plain.status).toBe(426)
    expect((await plain.json()).error).toContain('WebSocket')
  })

  test('a one-character Host does not shift the path (Elysia standardHostname off)', async () => {
    const { app } = makeApp()
    expect((await app.handle(new Request('http://a/abc/api/users'))).status).toBe(404)
    expect((await app.handle(new Request('http://a/api/users'))).status).toBe(200)
    expect((await app.handle(new Request('http://a:1/x/api/cluster-info'))).status).toBe(404)
  })

  test('a socket upgrade from an origin not allowed gets a JSON 403 before the upgrade', async () => {
    const { app } = makeApp()
    const upgrade = (origin: string) =>
      app.handle(new Request('http://localhost/ws/chat?username=a', { headers: { origin, upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } }))
    const evil = await upgrade('http://evil.example')
    expect(evil.status).toBe(403)
    expect(await evil.json()).toEqual({ error: 'origin http://evil.example is not allowed' })
    // An allowed origin passes the check (in-process there is no server to upgrade with).
    expect((await upgrade('http://good.example')).status).not.toBe(403)
  })
})

describe('GET /api/messages', () => {
  function withLines(count: number, options: NodeOptions = {}) {
    const made = makeApp(options)
    made.room.join('alice')
    // A few at a time, as users say them: a node takes LINES_AHEAD_MAX at once (room.ts).
    for (let i = 1; i <= count; i++) {
      made.room.say('alice', `m${i}`)
      if (i % 20 === 0) made.net.settle()
    }
    made.net.settle()
    return made
  }
  const texts = (body: any) => body.messages.map((m: any) => m.message)

  test('the latest lines, newest last, in the frames users receive; `before` pages further back', async () => {
    const { app, node } = withLines(5)
    const latest = await (await get(app, '/api/messages?limit=2')).json()
    expect(latest).toEqual({ epoch: node.transcript.epoch, messages: [expect.objectContaining({ type: 'chat', message: 'm4' }), expect.objectContaining({ message: 'm5' })], complete: true })
    const older = await (await get(app, `/api/messages?before=${latest.messages[0].id}&limit=2`)).json()
    expect(texts(older)).toEqual(['m2', 'm3'])
    const oldest = await (await get(app, `/api/messages?before=${older.messages[0].id}&limit=50`)).json()
    expect(texts(oldest)).toEqual(['alice joined the chat', 'm1'])
    expect(oldest.complete).toBe(true)
    expect(texts(await (await get(app, '/api/messages')).json())).toEqual(['alice joined the chat', 'm1', 'm2', 'm3', 'm4', 'm5'])
  })

  test('past --history-size the oldest page says it is not complete', async () => {
    const { app } = withLines(8, { historySize: 3 })
    const body = await (await get(app, '/api/messages?limit=50')).json()
    expect(texts(body)).toEqual(['m6', 'm7', 'm8'])
    expect(body.complete).toBe(false)
  })

  test('limit is capped; bad parameters get a JSON 400', async () => {
    const { app } = withLines(PAGE_MAX + 5, { historyOnJoin: 0 })
    expect((await (await get(app, `/api/messages?limit=${PAGE_MAX * 10}`)).json()).messages).toHaveLength(PAGE_MAX)
    for (const bad of ['before=-1', 'before=x', 'limit=0', 'limit=1.5', 'before=1e3']) {
      const response = await get(app, `/api/messages?${bad}`)
      expect(response.status).toBe(400)
      expect((await response.json()).error).toEqual(expect.any(String))
    }
  })

  test('a socket asking to resume from a bad `since` or `epoch` gets a JSON 400 before the upgrade', async () => {
    const { app } = makeApp()
    for (const bad of ['since=abc', 'since=-2', 'epoch=', `epoch=${'e'.repeat(301)}`]) {
      const response = await app.handle(new Request(`http://localhost/ws/chat?username=a&${bad}`, { headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } }))
      expect(response.status).toBe(400)
      expect((await response.json()).error).toMatch(/since|epoch/)
    }
  })
})

describe('health and metrics', () => {
  test('/healthz answers while the process lives; /readyz only while Up with a leader and not draining', async () => {
    const { app, drain } = makeApp()
    expect(await (await get(app, '/healthz')).json()).toEqual({ status: 'ok' })
    const ready = await get(app, '/readyz')
    expect(ready.status).toBe(200)
    drain()
    const draining = await get(app, '/readyz')
    expect(draining.status).toBe(503)
    expect(await draining.json()).toEqual({ status: 'not ready', reason: 'draining: this node is shutting down' })
  })

  test('/readyz is 503 with a reason while the node is still joining', async () => {
    const joining = new Membership({ self: { address: self, incarnation: 'b1', httpUrl: '' }, seeds: ['bun://S@127.0.0.1:9'], bootstrap: false, ...TIMING, random: () => 0.5 })
    expect(readiness(joining.view(), false)).toEqual({ ok: false, error: 'this node is Joining' })
  })

  test('/metrics is Prometheus text whose values move with what happens', async () => {
    const { app, room, gateway, net } = makeApp()
    const scrape = async () => {
      const response = await get(app, '/metrics')
      expect(response.headers.get('content-type')).toContain('text/plain')
      const values = new Map<string, number>()
      for (const line of (await response.text()).split('\n')) {
        const m = /^(websocket_cluster_\w+(?:\{[^}]*\})?) (\S+)$/.exec(line)
        if (m) values.set(m[1]!, Number(m[2]))
      }
      return values
    }
    const before = await scrape()
    expect(before.get('websocket_cluster_websocket_connections')).toBe(0)
    expect(before.get('websocket_cluster_cluster_is_leader')).toBe(1)
    expect(before.get('websocket_cluster_cluster_members{status="Up"}')).toBe(1)
    expect(before.get('websocket_cluster_transport_frames_received_total')).toBe(1)
    expect(before.get('websocket_cluster_transport_peer_frames_sent_total{peer="bun://S@127.0.0.1:2552"}')).toBe(7)
    expect(before.get('websocket_cluster_transport_peer_connects_total{peer="bun://S@127.0.0.1:2552"}')).toBe(1)
    const socket = { frames: [] as string[], send(json: string) { this.frames.push(json) }, close() {}, subscribe() {} }
    gateway.open('c1', socket, { ok: true, value: 'alice' })
    gateway.message('c1', 'hello')
    gateway.message('c1', 'x'.repeat(3000))
    gateway.open('c2', { send() {}, close() {}, subscribe() {} }, { ok: true, value: '' })
    net.deliver() // the end of the event-loop turn: the line is proposed, applied and delivered
    const after = await scrape()
    expect(after.get('websocket_cluster_websocket_connections')).toBe(1)
    expect(after.get('websocket_cluster_websocket_joins_total')).toBe(1)
    expect(after.get('websocket_cluster_chat_messages_received_total')).toBe(1)
    expect(after.get('websocket_cluster_chat_messages_delivered_total')).toBe(1)
    expect(after.get('websocket_cluster_websocket_refused_total{reason="message_too_long"}')).toBe(1)
    expect(after.get('websocket_cluster_websocket_refused_total{reason="bad_username"}')).toBe(1)
    gateway.close('c1')
    const closed = await scrape()
    expect(closed.get('websocket_cluster_websocket_connections')).toBe(0)
    expect(closed.get('websocket_cluster_websocket_leaves_total')).toBe(1)
    expect(room.users()).toEqual([])
    const text = await (await get(app, '/metrics')).text()
    expect(text).toContain('process_resident_memory_bytes')
    expect(text).toContain('nodejs_eventloop_lag_seconds')
  })
})

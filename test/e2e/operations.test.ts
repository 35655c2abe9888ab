// What an operator relies on, on real processes: health and readiness, Prometheus metrics that
// move with traffic, JSON logs, and the drain a SIGTERM starts (the `moving` frame naming the
// other members, close 1012, readiness gone).
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { startCluster, stopAll, waitFor, type NodeHandle } from '../support/cluster'
import { userPool } from '../support/ws-client'

setDefaultTimeout(60_000)
let nodes: NodeHandle[]
const users = userPool()

beforeAll(async () => {
  nodes = await startCluster(3, { args: ['--log-format', 'json', '--roles', 'chat'] })
})
afterAll(async () => {
  await users.closeAll()
  await stopAll()
})

/** The value of one sample line of a Prometheus text page. */
async function metric(node: NodeHandle, sample: string): Promise<number> {
  const text = await (await node.fetch('/metrics')).text()
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `))
  if (!line) throw new Error(`no ${sample} in /metrics`)
  return Number(line.slice(sample.length + 1))
}

describe('operations', () => {
  test('/healthz and /readyz answer 200 on every node of a formed cluster; cluster-info has state and roles', async () => {
    for (const node of nodes) {
      expect((await node.fetch('/healthz')).status).toBe(200)
      const ready = await node.fetch('/readyz')
      expect(ready.status).toBe(200)
      expect(await ready.json()).toEqual({ status: 'ready' })
      expect(await node.info()).toMatchObject({ state: 'Up', roles: ['chat'] })
    }
  })

  test('/metrics counts members, connections and chat, and the counters move', async () => {
    const [a, b] = nodes as [NodeHandle, NodeHandle]
    expect(await metric(a, 'websocket_cluster_cluster_members{status="Up"}')).toBe(3)
    expect(await metric(a, 'websocket_cluster_cluster_up')).toBe(1)
    const received = await metric(a, 'websocket_cluster_chat_messages_received_total')
    const relayed = await metric(b, 'websocket_cluster_chat_messages_relayed_total')
    const alice = await users.connect(a.httpUrl, 'metrics-alice')
    const bob = await users.connect(b.httpUrl, 'metrics-bob')
    expect(await metric(a, 'websocket_cluster_websocket_connections')).toBe(1)
    alice.sendChat('counted')
    await bob.next((f) => f.type === 'chat' && f.message === 'counted')
    await waitFor(async () => (await metric(a, 'websocket_cluster_chat_messages_received_total')) === received + 1, { message: 'received counter' })
    await waitFor(async () => (await metric(b, 'websocket_cluster_chat_messages_relayed_total')) === relayed + 1, { message: 'relayed counter' })
    expect(await metric(b, 'websocket_cluster_chat_messages_delivered_total')).toBeGreaterThanOrEqual(1)
    expect(await metric(a, 'websocket_cluster_transport_frames_sent_total')).toBeGreaterThan(0)
    expect(await metric(a, `websocket_cluster_transport_peer_frames_sent_total{peer="${b.address}"}`)).toBeGreaterThan(0)
    expect(await metric(b, `websocket_cluster_transport_peer_frames_received_total{peer="${a.address}"}`)).toBeGreaterThan(0)
    expect(await metric(a, 'nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0)
  })

  test('logs are JSON lines with time, level, node, event and fields', () => {
    const lines = nodes[0]!.logs().split('\n').filter((l) => l.startsWith('{'))
    const events = lines.map((l) => JSON.parse(l) as { time: string; level: string; node: string; event: string; msg: string })
    expect(events.length).toBeGreaterThan(3)
    for (const e of events) {
      expect(e.time).toMatch(/^\d{4}-\d\d-\d\dT/)
      expect(['debug', 'info', 'warn', 'error']).toContain(e.level)
      expect(e.node).toBe(nodes[0]!.address)
    }
    expect(events.some((e) => e.event === 'member_up')).toBe(true)
  })

  test('SIGTERM drains: users get the other members in a moving frame, then 1012; the node leaves and exits 0', async () => {
    const node = nodes[2]!
    const carol = await users.connect(node.httpUrl, 'drain-carol')
    node.kill('SIGTERM')
    const moving = await carol.next('moving')
    expect(moving.reason).toBe('service restart')
    expect(moving.members.map((m: { httpUrl: string }) => m.httpUrl).sort()).toEqual([nodes[0]!.httpUrl, nodes[1]!.httpUrl].sort())
    expect(await carol.closed).toEqual({ code: 1012, reason: 'service restart' })
    expect(await node.exited).toBe(0)
    const others = nodes.slice(0, 2)
    await waitFor(async () => (await others[0]!.info()).members.length === 2, { message: 'the drained node left the cluster' })
    expect(node.logs()).toContain('"event":"drain"')
  })
})

// The attacks of issue 7 against real node processes with a cluster secret: a process that can
// reach the cluster port but lacks the secret cannot join, inject chat or presence, or change
// leadership; a node with the wrong secret is refused; a recorded handshake cannot be replayed;
// even a holder of the secret that is not a member cannot take leadership or wedge the cluster
// with joins nobody can answer; and a node on a non-loopback host without a secret refuses to start.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ENTRY, freePort, HOST, REPO_ROOT, startCluster, startNode, stopAll, waitUntil, type NodeHandle } from '../support/cluster'
import { connectRogue } from '../support/rogue-peer'
import { userPool } from '../support/ws-client'

const SECRET = 'e2e-cluster-secret-0123456789'
const SYSTEM = 'WebSocketClusterSystem'
let nodes: NodeHandle[] = []
let leader: NodeHandle
const users = userPool()

beforeAll(async () => {
  nodes = await startCluster(3, { env: { CLUSTER_SECRET: SECRET } })
  const info = await nodes[0]!.info()
  leader = nodes.find((n) => n.address === info.leader)!
})

afterAll(async () => {
  await users.closeAll()
  await stopAll()
}, 30_000)

const address = (port: number) => `bun://${SYSTEM}@${HOST}:${port}`
const totals = async () => {
  const infos = await Promise.all(nodes.map((n) => n.info()))
  return {
    authFailures: infos.reduce((n, i) => n + i.transport.authFailures, 0),
    invalid: infos.reduce((n, i) => n + i.transport.invalid, 0),
    terms: new Set(infos.map((i) => i.term)),
    leaders: new Set(infos.map((i) => i.leader)),
    members: infos.map((i) => i.members.map((m: any) => m.address).sort().join(',')),
  }
}

/** The cluster still has the same three members, one leader and one term. */
async function expectUndisturbed(before: Awaited<ReturnType<typeof totals>>) {
  const now = await totals()
  expect(now.leaders).toEqual(before.leaders)
  expect(now.terms).toEqual(before.terms)
  expect(now.members).toEqual(before.members)
}

describe('a cluster with a secret, attacked by processes without it', () => {
  test('a rogue peer without the secret cannot inject chat or presence, join, or take leadership', async () => {
    const watcher = await users.connect(nodes[0]!.httpUrl, 'watcher')
    const before = await totals()
    const rogueAddress = address(await freePort())
    const frames = [
      { type: 'chat', username: 'admin', message: 'injected', nodeAddress: nodes[1]!.address, timestamp: Date.now() },
      { type: 'presence_join', user: { username: 'ghost', connectedAt: 0 } },
      { type: 'presence_snapshot', users: [] },
      { type: 'join_request', from: `${rogueAddress}#r`, to: leader.address, member: { address: rogueAddress, incarnation: 'r', httpUrl: 'http://x' } },
      { type: 'vote_request', from: `${rogueAddress}#r`, to: `${nodes[1]!.address}`, term: 2 ** 53, lastIndex: 2 ** 53, lastTerm: 2 ** 53, preVote: false, transfer: true },
    ]
    let attempts = 0
    for (const node of nodes) {
      // 1. straight to business, no handshake at all
      for (const frame of frames) {
        const rogue = await connectRogue(node.clusterPort)
        rogue.send(frame)
        await waitUntil(() => rogue.closed, 5000, 'the rogue to be closed')
        attempts++
      }
      // 2. a hello in the no-secret mode, then the frames
      const plain = await connectRogue(node.clusterPort)
      expect(await plain.handshake({ address: rogueAddress, secrets: [], target: node.address })).toEqual({ ok: false, error: 'closed before hello_ack' })
      attempts++
      // 3. the protocol with a guessed secret: the node's proof does not verify, and a forged proof is refused
      const guesser = await connectRogue(node.clusterPort)
      const verdict = await guesser.handshake({ address: rogueAddress, secrets: ['guess-guess-guess-guess'], target: node.address })
      expect(verdict).toEqual({ ok: false, error: 'listener proof does not match the cluster secret' })
      guesser.send({ type: 'auth', proof: new Uint8Array(32) })
      for (const frame of frames) guesser.send(frame)
      await waitUntil(() => guesser.closed, 5000, 'the guesser to be closed')
      attempts++
    }
    // Every attempt was refused and counted (in authFailures, not as an authenticated peer's bad frame).
    await waitUntil(async () => (await totals()).authFailures - before.authFailures >= attempts, 5000, 'every refusal counted')
    const after = await totals()
    expect(after.invalid).toBe(before.invalid)
    for (const node of nodes) {
      expect(node.logs()).toContain('refused connection from')
      expect(node.logs()).toContain('peer has no cluster secret; this node requires one')
      expect(node.logs()).toContain('dialer proof does not match the cluster secret')
      expect(node.logs()).not.toContain('injected')
    }
    await expectUndisturbed(before)
    // Nothing reached users: a real message sent now arrives, and nothing injected came before it.
    const sender = await users.connect(nodes[1]!.httpUrl, 'sender')
    sender.sendChat('real message')
    await watcher.next((f) => f.type === 'chat' && f.message === 'real message')
    expect(watcher.received((f) => f.type === 'chat').map((f) => f.message)).toEqual(['real message'])
    for (const node of nodes) {
      const { users: list } = await node.users()
      expect(list.map((u: any) => u.username).sort()).toEqual(['sender', 'watcher'])
    }
  })

  test('a node started with the wrong secret is refused by every member, logged and counted', async () => {
    const before = await totals()
    const wrong = await startNode({
      seeds: nodes.map((n) => `${HOST}:${n.clusterPort}`),
      env: { CLUSTER_SECRET: 'not-the-cluster-secret-at-all' },
      name: 'wrong-secret',
    })
    try {
      await waitUntil(async () => (await totals()).authFailures - before.authFailures >= 3, 10_000, 'refusals at the members')
      expect(wrong.logs()).toContain('listener proof does not match the cluster secret')
      // it is never a member, and the members' logs say why they refused it (one line per connection)
      const info = await wrong.info()
      expect(info.status).toBe('Joining')
      expect(info.transport.authFailures).toBeGreaterThan(0)
      await expectUndisturbed(before)
      const lines = nodes.flatMap((n) => n.logs().split('\n')).filter((l) => l.includes('refused connection from') && l.includes(wrong.address))
      expect(lines.length).toBeGreaterThan(0)
    } finally {
      await wrong.stop()
    }
  })

  test('a recorded handshake cannot be replayed', async () => {
    const target = nodes[2]!
    const before = (await target.info()).transport
    // A genuine handshake (the test knows the secret), recorded byte for byte.
    const genuine = await connectRogue(target.clusterPort)
    expect(await genuine.handshake({ address: address(await freePort()), secrets: [SECRET], target: target.address })).toEqual({ ok: true })
    const recorded = [...genuine.written]
    // Proof that it was accepted: a bad frame now counts as an authenticated peer's (invalid).
    genuine.send({ type: 'no_such_message' })
    await waitUntil(async () => (await target.info()).transport.invalid === before.invalid + 1, 5000, 'the genuine connection counted as authenticated')
    // The same bytes on a new connection: the node's fresh nonce makes the recorded proof worthless.
    const replay = await connectRogue(target.clusterPort)
    for (const bytes of recorded) replay.writeRaw(bytes)
    replay.send({ type: 'presence_join', user: { username: 'replayed', connectedAt: 1 } })
    await waitUntil(() => replay.closed, 5000, 'the replay to be closed')
    const after = (await target.info()).transport
    expect(after.authFailures).toBe(before.authFailures + 1)
    expect(after.invalid).toBe(before.invalid + 1)
    expect(target.logs()).toContain('dialer proof does not match the cluster secret')
  })

  test('even with the secret, a process that is not a member cannot take leadership or wedge the cluster with joins', async () => {
    const before = await totals()
    const voter = nodes.find((n) => n !== leader)!
    // Vote requests with terms that would overflow, or just very far ahead, with transfer set.
    for (const term of [2 ** 53, 2 ** 48]) {
      const rogueAddress = address(await freePort())
      const rogue = await connectRogue(voter.clusterPort)
      expect(await rogue.handshake({ address: rogueAddress, secrets: [SECRET], target: voter.address })).toEqual({ ok: true })
      rogue.send({ type: 'vote_request', from: `${rogueAddress}#r`, to: voter.address, term, lastIndex: term, lastTerm: term, preVote: false, transfer: true })
      rogue.send({ type: 'timeout_now', from: `${rogueAddress}#r`, to: voter.address, term })
      rogue.send({ type: 'no_such_message' }) // closes the connection once the frames before it are handled
      await waitUntil(() => rogue.closed, 5000, 'the rogue connection to end')
    }
    await expectUndisturbed(before)
    // Three joins at once, from addresses nobody listens on: the leader probes each and adds none.
    const ghosts = await Promise.all([1, 2, 3].map(async () => address(await freePort())))
    for (const ghost of ghosts) {
      const rogue = await connectRogue(leader.clusterPort)
      expect(await rogue.handshake({ address: ghost, secrets: [SECRET], target: leader.address })).toEqual({ ok: true })
      for (let i = 0; i < 3; i++) {
        rogue.send({ type: 'join_request', from: `${ghost}#g`, to: leader.address, member: { address: ghost, incarnation: 'g', httpUrl: 'http://x' } })
        rogue.send({ type: 'join_request', from: `${ghost}#g`, to: leader.address, member: { address: ghost, incarnation: 'g', httpUrl: 'http://x' }, probe: String(i) })
      }
    }
    await waitUntil(() => ghosts.every((g) => leader.logs().includes(`cannot connect to ${g}`)), 10_000, 'the leader to try each probe')
    await expectUndisturbed(before)
    // The cluster still admits a real node, and keeps a quorum with it.
    const fourth = await startNode({ seeds: nodes.map((n) => `${HOST}:${n.clusterPort}`), env: { CLUSTER_SECRET: SECRET }, name: 'fourth' })
    try {
      await waitUntil(async () => (await Promise.all([...nodes, fourth].map((n) => n.info()))).every((i) => i.members.length === 4 && i.members.every((m: any) => m.status === 'Up')), 15_000, 'four Up members')
    } finally {
      await fourth.stop()
    }
  })
})

describe('safe by default', () => {
  test('a node on a non-loopback --host with no secret refuses to start (exit 2)', async () => {
    const proc = Bun.spawn(['bun', 'run', ENTRY, '--host', '10.0.0.1', '--cluster-port', String(await freePort()), '--http-port', String(await freePort())], {
      cwd: REPO_ROOT,
      env: { ...process.env, CLUSTER_SECRET: '', INSECURE_CLUSTER: '' },
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const code = await proc.exited
    const stderr = await new Response(proc.stderr).text()
    expect(code).toBe(2)
    expect(stderr).toContain('--host 10.0.0.1 is not a loopback address')
    expect(stderr).toContain('--insecure-cluster')
  })
})

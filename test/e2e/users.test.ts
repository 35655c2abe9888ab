// The WebSocket users' defences on real node processes, tried the way the attack report did:
// a cross-origin upgrade, look-alike names, a repeated username, a flooding client, too many
// sockets, tokens (missing, expired, forged, RS/ES keys from a file), an odd Host header.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportSPKI, generateKeyPair, SignJWT } from 'jose'
import { ENTRY, HOST, startNode, stopAll, waitFor, type NodeHandle } from '../support/cluster'
import { chatUrl, connectUrl, presenceOf, refusal, refusalAt, userPool, type ChatClient } from '../support/ws-client'

const SECRET = 'an-e2e-secret-that-is-long-enough!'
const users = userPool()
let open: NodeHandle // anonymous; origin list, a low rate and a low per-address cap
let authed: NodeHandle // HS256 tokens; node-wide cap of 2
let dir = ''

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'wsc-users-'))
  ;[open, authed] = await Promise.all([
    startNode({ args: ['--allowed-origins', 'http://good.example', '--rate-limit', '5', '--rate-burst', '5', '--max-connections-per-ip', '6'] }),
    startNode({ env: { AUTH_JWT_SECRET: SECRET }, args: ['--max-connections', '2'] }),
  ])
})

afterAll(async () => {
  await users.closeAll()
  await stopAll()
  rmSync(dir, { recursive: true, force: true })
}, 30_000)

/** An upgrade request whose refusal is an HTTP status (a refused upgrade never becomes a socket). */
function upgrade(node: NodeHandle, query: string, headers: Record<string, string> = {}) {
  return node.fetch(`/ws/chat?${query}`, {
    headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
  })
}

const token = (claims: Record<string, unknown>, secret = SECRET) =>
  new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret))
const inAMinute = () => Math.floor(Date.now() / 1000) + 60
const tokenUrl = (node: NodeHandle, jwt: string) => `${chatUrl(node.httpUrl, null)}?token=${encodeURIComponent(jwt)}`

async function rawGet(node: NodeHandle, path: string, host: string): Promise<string> {
  return rawRequest(node, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
}

async function rawRequest(node: NodeHandle, request: string): Promise<string> {
  let text = ''
  const { promise, resolve } = Promise.withResolvers<string>()
  const socket = await Bun.connect({
    hostname: HOST,
    port: node.httpPort,
    socket: { data: (_s, d) => void (text += new TextDecoder().decode(d)), close: () => resolve(text), error: () => resolve(text) },
  })
  socket.write(request)
  return promise
}

describe('HTTP', () => {
  test('a one-character Host header does not shift the path (it was Elysia\'s 11-character skip)', async () => {
    expect(await rawGet(open, '/abc/api/users', 'a')).toStartWith('HTTP/1.1 404')
    expect(await rawGet(open, '/api/users', 'a')).toStartWith('HTTP/1.1 200')
  })

  test('a Host header Bun cannot parse gets 400, not a path shifted by 7 characters (found by the fuzzer)', async () => {
    // Bun hands such a request a bare path as its URL; Elysia's router skipped "/public" as if it were "http://".
    for (const host of ['a b', '@', '']) {
      const answer = await rawGet(open, '/public/api/users', host)
      expect({ host, status: answer.split('\r\n')[0] }).toEqual({ host, status: 'HTTP/1.1 400 Bad Request' })
      expect(answer).not.toContain('"count":')
      expect(await rawGet(open, '/api/users', host)).toStartWith('HTTP/1.1 400')
    }
    // HTTP/1.0 without Host: served where the router reads the path right, refused where it would not.
    expect(await rawRequest(open, 'GET /api/users HTTP/1.0\r\n\r\n')).toContain('"count":')
    expect(await rawRequest(open, 'GET /healthz HTTP/1.0\r\n\r\n')).toStartWith('HTTP/1.1 200')
    expect(await rawRequest(open, 'GET /public/api/users HTTP/1.0\r\n\r\n')).toStartWith('HTTP/1.1 400')
  })

  test('an upgrade from an origin not on --allowed-origins gets HTTP 403 with a JSON reason', async () => {
    const evil = await upgrade(open, 'username=eve', { origin: 'http://evil.example' })
    expect(evil.status).toBe(403)
    expect(await evil.json()).toEqual({ error: 'origin http://evil.example is not allowed' })
    const ws = new WebSocket(chatUrl(open.httpUrl, 'goodie'), { headers: { origin: 'http://good.example' } } as any)
    const first = await new Promise<string>((resolve) => ws.addEventListener('message', (e) => resolve(String(e.data)), { once: true }))
    expect(JSON.parse(first)).toMatchObject({ type: 'welcome', username: 'goodie' })
    ws.close()
  })
})

describe('usernames', () => {
  test('a repeated username parameter is refused with 4400', async () => {
    const url = `${chatUrl(open.httpUrl, null)}?username=a&username=b`
    expect(await refusalAt(url, 'a&b')).toEqual({ code: 4400, reason: 'username given more than once' })
  })

  test('look-alikes of an online name cannot join; Korean and accented names can', async () => {
    await users.connect(open.httpUrl, 'alice')
    expect(await refusal(open.httpUrl, 'аlice')).toMatchObject({ code: 4400, reason: expect.stringContaining('mixes scripts') })
    expect(await refusal(open.httpUrl, 'ａｌｉｃｅ')).toEqual({ code: 4409, reason: 'username taken' })
    expect(await refusal(open.httpUrl, 'ali\u3164ce')).toMatchObject({ code: 4400, reason: expect.stringContaining('invisible') })
    expect(await refusal(open.httpUrl, 'a' + '\u0301'.repeat(31))).toMatchObject({ code: 4400, reason: expect.stringContaining('marks') })
    await users.connect(open.httpUrl, 'асе') // all Cyrillic: allowed while nobody holds "ace"
    expect(await refusal(open.httpUrl, 'ace')).toEqual({ code: 4409, reason: 'username taken' })
    const korean = await users.connect(open.httpUrl, '김철수')
    const jose = await users.connect(open.httpUrl, 'José')
    expect(korean.welcome?.username).toBe('김철수')
    expect(jose.welcome?.username).toBe('José')
    await Promise.all([korean.close(), jose.close()])
  })
})

describe('rate limit', () => {
  test('over the rate: error frames and nothing delivered; a client that floods on is closed with 4429', async () => {
    const [flooder, reader] = [await users.connect(open.httpUrl, 'flooder'), await users.connect(open.httpUrl, 'reader')]
    for (let i = 0; i < 40; i++) flooder.sendChat(`flood ${i}`)
    const closed = await flooder.closed
    expect(closed.code).toBe(4429)
    expect(flooder.received((f) => f.type === 'error' && f.code === 'rate_limited').length).toBeGreaterThan(0)
    // Reconnecting at once under the same name is refused for a while (HTTP 429 before the upgrade: no join, no leave).
    const again = await upgrade(open, 'username=flooder')
    expect(again.status).toBe(429)
    expect((await again.json()).error).toContain('closed for flooding')
    // The other user is still connected and saw at most the burst of the flood, then the leave
    // line (after the flooder's lines in the transcript: one node's entries keep their order).
    await reader.next((f) => f.type === 'system' && f.event === 'leave' && f.username === 'flooder')
    const seen = reader.received((f) => f.type === 'chat' && f.username === 'flooder').length
    expect(seen).toBeGreaterThanOrEqual(5)
    expect(seen).toBeLessThanOrEqual(6)
    expect((await open.users()).users.map((u: any) => u.username)).not.toContain('flooder')
    reader.sendChat('still here')
    await reader.next((f) => f.type === 'chat' && f.message === 'still here')
    await reader.close()
  })
})

describe('connection limits', () => {
  test('per client address: HTTP 429 once it holds the cap; a closed socket frees its place', async () => {
    await users.closeAll()
    await waitFor(async () => (await open.users()).count === 0, { message: 'earlier users gone' })
    const held: ChatClient[] = []
    for (let i = 0; i < 6; i++) held.push(await users.connect(open.httpUrl, `held${i}`))
    const over = await upgrade(open, 'username=one-more')
    expect(over.status).toBe(429)
    expect((await over.json()).error).toContain('per client address')
    await held[0]!.close()
    // The server counts the close once it has seen it; until then the upgrade is refused (1006).
    await waitFor(async () => (await refusal(open.httpUrl, '')).code === 4400, { message: 'the closed socket to be released' })
    // Refused sockets (4400 here) count while open and are released on close too.
    for (let i = 0; i < 10; i++) expect((await refusal(open.httpUrl, '')).code).toBe(4400)
    const again = await users.connect(open.httpUrl, 'held-again')
    expect(again.welcome?.username).toBe('held-again')
    await users.closeAll()
  })

  test('node-wide: HTTP 503 over --max-connections', async () => {
    const a = await connectUrl(tokenUrl(authed, await token({ name: 'cap1', exp: inAMinute() })), 'cap1')
    const b = await connectUrl(tokenUrl(authed, await token({ name: 'cap2', exp: inAMinute() })), 'cap2')
    const over = await upgrade(authed, `token=${await token({ name: 'cap3', exp: inAMinute() })}`)
    expect(over.status).toBe(503)
    await Promise.all([a.close(), b.close()])
    await waitFor(async () => (await authed.users()).count === 0, { message: 'cap users gone' })
  })
})

describe('signed tokens', () => {
  test('the name comes from the token; missing, expired and forged tokens are closed with 4401', async () => {
    const carol = await connectUrl(`${tokenUrl(authed, await token({ sub: 'u-1', name: '캐롤', exp: inAMinute() }))}&username=mallory`, 'carol')
    expect(carol.welcome?.username).toBe('캐롤')
    expect(await refusal(authed.httpUrl, 'mallory')).toEqual({ code: 4401, reason: 'token required' })
    expect(await refusalAt(tokenUrl(authed, await token({ sub: 'late', exp: inAMinute() - 120 })), 'late')).toEqual({ code: 4401, reason: 'token expired' })
    const forged = await token({ sub: 'forger', exp: inAMinute() }, 'another-secret-of-enough-length!!!')
    expect(await refusalAt(tokenUrl(authed, forged), 'forger')).toEqual({ code: 4401, reason: 'token signature does not verify' })
    await carol.close()
  })

  test('ES256 with --auth-jwt-public-key; an unreadable key file exits with status 2', async () => {
    const pair = await generateKeyPair('ES256', { extractable: true })
    const pemPath = join(dir, 'users.pub.pem')
    writeFileSync(pemPath, await exportSPKI(pair.publicKey))
    const node = await startNode({ args: ['--auth-jwt-public-key', pemPath] })
    const jwt = await new SignJWT({ name: 'dana', exp: inAMinute() }).setProtectedHeader({ alg: 'ES256' }).sign(pair.privateKey)
    const dana = await connectUrl(tokenUrl(node, jwt), 'dana')
    expect(dana.welcome?.username).toBe('dana')
    await dana.close()
    await node.stop()
    const bad = Bun.spawnSync(['bun', 'run', ENTRY, '--auth-jwt-public-key', join(dir, 'missing.pem')], { stderr: 'pipe', stdout: 'pipe' })
    expect(bad.exitCode).toBe(2)
    expect(bad.stderr.toString()).toContain('--auth-jwt-public-key')
  })
})

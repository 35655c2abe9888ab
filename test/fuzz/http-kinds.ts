// Raw HTTP requests on the HTTP port: random methods, paths, query strings and headers (odd Host
// headers included), written by hand so malformed requests reach the server. A 5xx, a hang on a
// complete request, or a JSON route answering a path it does not own is a finding.
import { LOOPBACK } from './cluster-conn'
import { count, type FuzzContext, type Kind } from './context'
import { encodeQuery, randomString } from './inputs'

const WAIT_MS = 5_000
const RESPONSE_BYTES_MAX = 64 * 1024

function path(ctx: FuzzContext): string {
  const r = ctx.rng
  const segment = () => r.pick(['api', 'users', 'cluster-info', 'ws', 'chat', '..', '.', '', '%2e%2e', '%2F', 'a', encodeQuery(randomString(r, 12)), '_bun', 'public', 'index.html'])
  const base = r.pick([
    () => '/',
    () => '/api/users',
    () => '/api/cluster-info',
    () => '/ws/chat',
    () => `/${segment()}/api/users`,
    () => `/${segment()}/api/cluster-info`,
    () => `/${Array.from({ length: r.int(1, 5) }, segment).join('/')}`,
    () => `//api//users`,
    () => `/api/users/`,
    () => `/${'a'.repeat(r.pick([100, 5000, 20_000]))}`,
    () => r.pick(['*', 'http://127.0.0.1/api/users', 'api/users', '', '/%00', '/\u00e9']),
  ])()
  const q = r.chance(0.3) ? `?${encodeQuery(randomString(r, 30))}=${encodeQuery(randomString(r, 30))}` : ''
  return base + q
}

function request(ctx: FuzzContext, port: number): { text: string; complete: boolean; upgrade: boolean; target: string; method: string; version: string } {
  const r = ctx.rng
  const method = r.pick(['GET', 'GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT', 'FOO', 'get', randomString(r, 8).replace(/\s/g, '') || 'X'])
  const target = path(ctx)
  const version = r.pick(['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9', ''])
  const headers: string[] = []
  const host = r.pick([`${LOOPBACK}:${port}`, `localhost:${port}`, 'a', 'x', '', '[::1]', 'evil.example', 'a'.repeat(300), `${LOOPBACK}:${port}/api/users`, '@', 'a b'])
  if (r.chance(0.9)) headers.push(`Host: ${host}`)
  if (r.chance(0.1)) headers.push(`Host: ${r.pick(['b', 'evil.example'])}`)
  const upgrade = r.chance(0.15)
  if (upgrade) headers.push('Upgrade: websocket', 'Connection: Upgrade', ...(r.chance(0.5) ? ['Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='] : []))
  if (r.chance(0.3)) headers.push(`Origin: ${r.pick(['http://evil.example', 'null', `http://${LOOPBACK}:${port}`])}`)
  for (let i = r.size(5); i > 0; i--) headers.push(`${r.pick(['X-A', 'Accept', 'Cookie', 'Content-Type', 'X-Forwarded-For', 'X-Forwarded-Host', encodeQuery(randomString(r, 10)) || 'X'])}: ${randomString(r, 40).replace(/[\r\n]/g, '')}`)
  let body = ''
  let complete = version.startsWith('HTTP/1')
  const bodyKind = r.int(0, 4)
  if (bodyKind === 1) {
    body = randomString(r, 200)
    headers.push(`Content-Length: ${Buffer.byteLength(body)}`)
  } else if (bodyKind === 2) {
    body = randomString(r, 50)
    headers.push(`Content-Length: ${Buffer.byteLength(body) + r.int(1, 100)}`) // promises more: the server may wait
    complete = false
  } else if (bodyKind === 3) {
    headers.push('Transfer-Encoding: chunked')
    body = r.pick(['0\r\n\r\n', '5\r\nhello\r\n0\r\n\r\n', 'zz\r\n', 'ffffffffffffffff\r\n'])
    complete = body.endsWith('\r\n\r\n')
  }
  if (!headers.some((h) => h.startsWith('Host: ')) && version === 'HTTP/1.1') complete = false
  return { text: `${method} ${target} ${version}\r\n${headers.join('\r\n')}\r\n\r\n${body}`, complete, upgrade, target, method, version }
}

/** Sends raw bytes, collects the response until close, a size cap or the timeout. */
async function exchange(port: number, bytes: Uint8Array, track: FuzzContext['track']): Promise<{ response: string; timedOut: boolean }> {
  let response = ''
  let resolve!: (timedOut: boolean) => void
  const done = new Promise<boolean>((r) => (resolve = r))
  const decoder = new TextDecoder()
  const socket = await Bun.connect({
    hostname: LOOPBACK,
    port,
    socket: {
      data(s, chunk) {
        response += decoder.decode(chunk, { stream: true })
        // One response is enough: keep-alive would otherwise wait for the timeout.
        if (response.length > RESPONSE_BYTES_MAX || /\r\n\r\n/.test(response)) {
          const m = /content-length: *(\d+)/i.exec(response)
          const head = response.indexOf('\r\n\r\n')
          if (!m || response.length - head - 4 >= Number(m[1]) || response.length > RESPONSE_BYTES_MAX) resolve(false)
        }
      },
      close: () => resolve(false),
      error: () => resolve(false),
      connectError: () => resolve(false),
    },
  }).catch(() => null)
  if (!socket) return { response: '', timedOut: false }
  const untrack = track(() => socket.terminate())
  let sent = 0
  const timer = setTimeout(() => resolve(true), WAIT_MS)
  while (sent < bytes.length) {
    const n = socket.write(bytes.subarray(sent))
    if (n <= 0) break
    sent += n
  }
  const timedOut = await done
  clearTimeout(timer)
  socket.terminate()
  untrack()
  return { response, timedOut }
}

/** The path a WHATWG URL parser makes of a request target (origin or absolute form), without a trailing slash. */
export function routeOf(target: string): string {
  let path: string
  try {
    path = new URL(target, 'http://host.invalid').pathname
  } catch {
    path = target.split('?')[0]!
  }
  return path.replace(/\/+$/, '')
}

export const httpKinds: Kind[] = [
  {
    name: 'http.random',
    port: 'http',
    weight: 3,
    about: 'raw HTTP requests: random methods, paths, queries, headers, odd Host headers, lying bodies',
    run: async (ctx) => {
      const port = ctx.rng.pick(ctx.facts().nodes).httpPort
      const req = request(ctx, port)
      const bytes = new TextEncoder().encode(req.text)
      if (!(await ctx.spend(bytes.length))) return
      ctx.stats.inputs++
      ctx.stats.bytes += bytes.length
      ctx.stats.connections++
      const { response, timedOut } = await exchange(port, bytes, ctx.track)
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(response)?.[1]
      count(ctx.stats, status ? `http_${status}` : timedOut ? 'http_no_answer' : 'http_closed')
      const what = `${req.method} ${req.target.slice(0, 80)} (${req.text.split('\r\n').find((l) => l.startsWith('Host:'))?.slice(0, 40) ?? 'no Host'})`
      // 505 is Bun's answer to a request line it cannot parse (HTTP/2.0, HTTP/9, a method that is no token); 503 will be the node-wide connection limit.
      const malformed = !/^HTTP\/1\.[01]$/.test(req.version) || !/^[A-Za-z]+$/.test(req.method)
      const refusal = (status === '505' && malformed) || (status === '503' && req.upgrade)
      if (status && status.startsWith('5') && !refusal) ctx.anomaly(`HTTP ${status} for ${what}`)
      if (!status && timedOut && req.complete && !ctx.stopped()) ctx.anomaly(`no answer within ${WAIT_MS} ms to a complete request ${what}`)
      // A JSON route answering a path that is not its own (seen with a one-character Host).
      // Judged on the path as a URL parser resolves it: `/./api/users` and `/x/../api/users` are
      // `/api/users` (RFC 3986 dot segments), `/abc/api/users` is not.
      const route = routeOf(req.target)
      if (status === '200' && /"selfAddress"|"count":/.test(response) && !['/api/users', '/api/cluster-info'].includes(route)) {
        ctx.anomaly(`path confusion: ${what} answered a JSON route`)
      }
    },
  },
]

// Inputs on the WebSocket port: odd usernames and query strings, random text and binary frames,
// JSON of the wrong shape, oversize frames, and sockets opened and dropped at once. Documented
// refusals (4400, 4409, 1003, 1009, error frames, and the coming 4401/4429/HTTP 403/429/503) are
// outcomes, not findings; an admitted name the server's own rule rejects, or an undocumented close
// code, is a finding.
import { validateUsername } from '../../src/chat/protocol'
import { LOOPBACK } from './cluster-conn'
import { count, type FuzzContext, type Kind } from './context'
import { encodeQuery, longString, randomString, randomValue, toJson } from './inputs'

/** Close codes the server documents (or will, with issue 7's limits); 1006 is an HTTP refusal of the upgrade. */
export const DOCUMENTED_CLOSE_CODES = new Set([1000, 1001, 1003, 1005, 1006, 1009, 4400, 4401, 4409, 4429])
const WAIT_MS = 5_000

interface Socket {
  ws: WebSocket
  frames: any[]
  welcome: Promise<any | null>
  closed: Promise<{ code: number; reason: string }>
  isClosed(): boolean
}

function open(ctx: FuzzContext, url: string): Socket {
  const ws = new WebSocket(url)
  const frames: any[] = []
  let isClosed = false
  let onWelcome!: (frame: any | null) => void
  const welcome = new Promise<any | null>((resolve) => (onWelcome = resolve))
  ws.addEventListener('message', (event) => {
    if (typeof event.data !== 'string') return
    try {
      const frame = JSON.parse(event.data)
      if (frames.length < 200) frames.push(frame)
      if (frame?.type === 'welcome') onWelcome(frame)
    } catch {
      ctx.anomaly(`non-JSON text frame from the server: ${event.data.slice(0, 80)}`)
    }
  })
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.addEventListener('close', (event) => {
      isClosed = true
      onWelcome(null)
      resolve({ code: event.code, reason: event.reason })
    }),
  )
  const untrack = ctx.track(() => ws.close())
  void closed.then(untrack)
  ctx.stats.connections++
  return { ws, frames, welcome, closed, isClosed: () => isClosed }
}

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  return Promise.race([promise, new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))]).finally(() => clearTimeout(timer))
}

function noteClose(ctx: FuzzContext, info: { code: number; reason: string }, what: string): void {
  count(ctx.stats, `ws_close_${info.code}`)
  if (!DOCUMENTED_CLOSE_CODES.has(info.code)) ctx.anomaly(`undocumented close ${info.code} ${toJson(info.reason)} after ${what}`)
}

async function closeAndWait(socket: Socket): Promise<void> {
  if (!socket.isClosed()) socket.ws.close()
  await within(socket.closed, WAIT_MS)
}

const wsBase = (ctx: FuzzContext) => `ws://${LOOPBACK}:${ctx.rng.pick(ctx.facts().nodes).httpPort}`
const fuzzName = (ctx: FuzzContext) => `fz${ctx.rng.int(0, 1e9).toString(36)}`

/** Raw query strings: odd usernames, repeats, bad escapes, junk. Never a checker's name. */
function query(ctx: FuzzContext): string {
  const r = ctx.rng
  const name = () => encodeQuery(randomString(r, 40))
  return r.pick([
    () => `?username=${name()}`,
    () => `?username=${encodeQuery(fuzzName(ctx))}`,
    () => '',
    () => '?username',
    () => '?username=',
    () => `?username=${fuzzName(ctx)}&username=${fuzzName(ctx)}`,
    () => `?username=%ZZ${fuzzName(ctx)}`,
    () => `?username=${'a'.repeat(r.pick([32, 33, 1000, 8000]))}`,
    () => `?username[]=${fuzzName(ctx)}`,
    () => `?username=${fuzzName(ctx)}%00`,
    () => `?&&&=&username=${fuzzName(ctx)}&=x`,
    () => `?${encodeQuery(randomString(r, 60))}=${name()}`,
    () => `?username=${encodeQuery(String(randomValue(r, 0)))}`,
    () => `?username=${encodeQuery(toJson({ a: 1 }))}`,
  ])()
}

function textFrame(ctx: FuzzContext): string {
  const r = ctx.rng
  return r.pick([
    () => randomString(r, 200),
    () => toJson(randomValue(r, 3)) ?? 'undefined',
    () => toJson({ type: 'chat', message: randomValue(r, 1) }) ?? '{}',
    () => toJson({ type: randomString(r, 10), message: 'x' }),
    () => '{"type":"chat"}',
    () => '{"__proto__":{"polluted":1},"type":"chat","message":"p"}',
    () => `${'['.repeat(r.pick([100, 5000]))}${']'.repeat(r.pick([100, 5000]))}`,
    () => r.pick(['007', '1e400', '-0', 'NaN', 'true', 'null', '""', '   ', '\n', '{', '[1,2', '{"type":"chat","message":"a"}x']),
    () => 'x'.repeat(r.pick([2000, 2001, 5000, 60_000])),
  ])()
}

export const wsKinds: Kind[] = [
  {
    name: 'ws.username',
    port: 'ws',
    weight: 3,
    about: 'random and malformed usernames and query strings',
    run: async (ctx) => {
      const q = query(ctx)
      const path = ctx.rng.pick(['/ws/chat', '/ws/chat', '/ws/chat', '/ws/chat/', '//ws/chat', '/ws/chat/x'])
      if (!(await ctx.spend(q.length + 100))) return
      ctx.stats.inputs++
      ctx.stats.bytes += q.length + 100
      const socket = open(ctx, `${wsBase(ctx)}${path}${q}`)
      const welcome = await within(socket.welcome, WAIT_MS)
      if (welcome && welcome !== 'timeout') {
        count(ctx.stats, 'admitted')
        const checked = validateUsername(welcome.username)
        if (!checked.ok || checked.value !== welcome.username) ctx.anomaly(`admitted username ${toJson(welcome.username)} that the server's rule refuses (${q.slice(0, 80)})`)
        if (ctx.facts().checkerNames.includes(welcome.username)) ctx.anomaly(`admitted a second ${welcome.username}`)
        await closeAndWait(socket)
      } else if (welcome === 'timeout') {
        if (!ctx.stopped()) ctx.anomaly(`neither welcome nor close within ${WAIT_MS} ms for ${path}${q.slice(0, 80)}`)
        await closeAndWait(socket)
      } else {
        noteClose(ctx, await socket.closed, `query ${q.slice(0, 60)}`)
      }
    },
  },
  {
    name: 'ws.frames',
    port: 'ws',
    weight: 4,
    about: 'random text, JSON of the wrong shape, numbers, deep arrays and (last) binary frames from an admitted user',
    run: async (ctx) => {
      const socket = open(ctx, `${wsBase(ctx)}/ws/chat?username=${fuzzName(ctx)}`)
      try {
        const welcome = await within(socket.welcome, WAIT_MS)
        if (!welcome || welcome === 'timeout') {
          if (socket.isClosed()) noteClose(ctx, await socket.closed, 'a plain fuzz username')
          return
        }
        for (let i = ctx.rng.int(1, 8); i > 0 && !socket.isClosed(); i--) {
          const binary = i === 1 && ctx.rng.chance(0.15)
          const data: string | Uint8Array<ArrayBuffer> = binary ? (ctx.rng.bytes(ctx.rng.size(1024)) as Uint8Array<ArrayBuffer>) : textFrame(ctx)
          if (!(await ctx.spend(data.length))) return
          socket.ws.send(data)
          ctx.stats.inputs++
          ctx.stats.bytes += data.length
          if (binary) {
            const closed = await within(socket.closed, WAIT_MS)
            if (closed === 'timeout') ctx.anomaly('a binary frame did not close the socket (documented: 1003)')
            else noteClose(ctx, closed, 'a binary frame')
          }
        }
        await Bun.sleep(ctx.rng.int(0, 200))
        for (const f of socket.frames) if (f?.type === 'error') count(ctx.stats, `error_frame_${f.code}`)
      } finally {
        await closeAndWait(socket)
      }
    },
  },
  {
    name: 'ws.oversize',
    port: 'ws',
    weight: 1,
    about: 'text or binary frames over the 64 KiB limit',
    run: async (ctx) => {
      const socket = open(ctx, `${wsBase(ctx)}/ws/chat?username=${fuzzName(ctx)}`)
      try {
        const welcome = await within(socket.welcome, WAIT_MS)
        if (!welcome || welcome === 'timeout') return
        const size = 64 * 1024 + ctx.rng.pick([1, 100, 200_000])
        if (!(await ctx.spend(size))) return
        socket.ws.send(ctx.rng.chance(0.7) ? longString(ctx.rng).padEnd(size, 'x') : new Uint8Array(size))
        ctx.stats.inputs++
        ctx.stats.bytes += size
        const closed = await within(socket.closed, WAIT_MS)
        if (closed === 'timeout') ctx.anomaly(`a ${size}-byte frame did not close the socket (documented: 1009)`)
        else noteClose(ctx, closed, `a ${size}-byte frame`)
      } finally {
        await closeAndWait(socket)
      }
    },
  },
  {
    name: 'ws.churn',
    port: 'ws',
    weight: 2,
    about: 'sockets opened and closed at once, some before the upgrade completes',
    run: async (ctx) => {
      const sockets: Socket[] = []
      for (let i = ctx.rng.int(2, 8); i > 0; i--) {
        if (!(await ctx.spend(200))) break
        const socket = open(ctx, `${wsBase(ctx)}/ws/chat${ctx.rng.chance(0.8) ? `?username=${fuzzName(ctx)}` : ''}`)
        ctx.stats.inputs++
        ctx.stats.bytes += 200
        sockets.push(socket)
        if (ctx.rng.chance(0.5)) socket.ws.close()
        else if (ctx.rng.chance(0.5)) await within(socket.welcome, WAIT_MS).then(() => socket.ws.close())
      }
      await Promise.all(sockets.map(closeAndWait))
    },
  },
]

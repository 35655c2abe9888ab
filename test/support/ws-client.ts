// A chat user over a real WebSocket, for end-to-end tests.
//
//   const alice = await connectUser(node.httpUrl, 'alice');   // resolves on the `welcome` frame
//   alice.sendChat('hi');
//   const frame = await bob.next((f) => f.type === 'chat' && f.message === 'hi');
//   await alice.close();
//
//   expect(await refusal(node.httpUrl, '')).toMatchObject({ code: 4400 });

export interface CloseInfo {
  code: number
  reason: string
}

export type Frame = Record<string, any> & { type?: string }
/** A predicate, or a frame type as shorthand for `(f) => f.type === type`. */
export type FrameMatcher = ((frame: Frame) => boolean) | string

export interface ChatClient {
  username: string
  url: string
  ws: WebSocket
  /** Every parsed JSON frame received, in order (consumed or not). */
  frames: Frame[]
  /** Text frames that were not JSON, kept verbatim. */
  rawFrames: string[]
  /** The `welcome` frame, when connectUser waited for it. */
  welcome: Frame | null
  /**
   * Resolves with the first frame matching `matcher` that no earlier `next` call consumed
   * (frames already received count), and consumes it. Rejects at the timeout, or as soon
   * as the socket closes without such a frame.
   */
  next(matcher: FrameMatcher, timeoutMs?: number): Promise<Frame>
  /** All received frames matching `matcher`, consumed or not. */
  received(matcher: FrameMatcher): Frame[]
  closed: Promise<CloseInfo>
  isClosed(): boolean
  sendChat(text: string): void
  /** Send anything as is (a string, or bytes for a binary frame). */
  send(data: string | ArrayBuffer | Uint8Array<ArrayBuffer>): void
  /** Close and wait for the close handshake (or the timeout). */
  close(code?: number, reason?: string): Promise<CloseInfo>
}

export interface ConnectOptions {
  /** Resolve on `open`, or on the server's `welcome` frame (default). */
  until?: 'open' | 'welcome'
  timeoutMs?: number
}

const DEFAULT_TIMEOUT_MS = 5_000

/** `http://h:p` -> `ws://h:p/ws/chat?username=...`; `username: null` omits the parameter. */
export function chatUrl(httpUrl: string, username: string | null): string {
  const url = new URL('/ws/chat', httpUrl)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  if (username !== null) url.searchParams.set('username', username)
  return url.toString()
}

function matches(matcher: FrameMatcher, frame: Frame): boolean {
  return typeof matcher === 'string' ? frame.type === matcher : matcher(frame)
}

function summarize(frames: Frame[]): string {
  const shown = frames.slice(-10).map((f) => {
    const text = JSON.stringify(f)
    return text.length > 300 ? `${text.slice(0, 300)}…` : text
  })
  return `${frames.length} frame(s) received; last: [${shown.join(', ')}]`
}

function openClient(url: string, username: string): ChatClient {
  const ws = new WebSocket(url)
  const frames: Frame[] = []
  const consumed = new Set<Frame>()
  const rawFrames: string[] = []
  interface Waiter {
    matcher: FrameMatcher
    resolve: (frame: Frame) => void
    reject: (error: Error) => void
    timer: ReturnType<typeof setTimeout>
  }
  let waiters: Waiter[] = []
  let closeInfo: CloseInfo | null = null

  let resolveClosed!: (info: CloseInfo) => void
  const closed = new Promise<CloseInfo>((resolve) => {
    resolveClosed = resolve
  })

  const deliver = (frame: Frame): void => {
    const waiter = waiters.find((w) => matches(w.matcher, frame))
    if (!waiter) return
    consumed.add(frame)
    waiters = waiters.filter((w) => w !== waiter)
    clearTimeout(waiter.timer)
    waiter.resolve(frame)
  }

  ws.addEventListener('message', (event) => {
    if (typeof event.data !== 'string') return
    let frame: Frame
    try {
      frame = JSON.parse(event.data)
    } catch {
      rawFrames.push(event.data)
      return
    }
    if (frame === null || typeof frame !== 'object') {
      rawFrames.push(event.data)
      return
    }
    frames.push(frame)
    deliver(frame)
  })

  ws.addEventListener('close', (event) => {
    closeInfo = { code: event.code, reason: event.reason }
    resolveClosed(closeInfo)
    const pending = waiters
    waiters = []
    for (const waiter of pending) {
      clearTimeout(waiter.timer)
      waiter.reject(
        new Error(
          `${username}: socket closed (${closeInfo.code} ${closeInfo.reason}) before a matching frame; ${summarize(frames)}`,
        ),
      )
    }
  })

  const client: ChatClient = {
    username,
    url,
    ws,
    frames,
    rawFrames,
    welcome: null,
    next(matcher, timeoutMs = DEFAULT_TIMEOUT_MS) {
      const found = frames.find((frame) => !consumed.has(frame) && matches(matcher, frame))
      if (found) {
        consumed.add(found)
        return Promise.resolve(found)
      }
      if (closeInfo) {
        return Promise.reject(
          new Error(`${username}: socket already closed (${closeInfo.code} ${closeInfo.reason}); ${summarize(frames)}`),
        )
      }
      return new Promise<Frame>((resolve, reject) => {
        const waiter: Waiter = {
          matcher,
          resolve,
          reject,
          timer: setTimeout(() => {
            waiters = waiters.filter((w) => w !== waiter)
            reject(new Error(`${username}: no matching frame within ${timeoutMs} ms; ${summarize(frames)}`))
          }, timeoutMs),
        }
        waiters.push(waiter)
      })
    },
    received: (matcher) => frames.filter((frame) => matches(matcher, frame)),
    closed,
    isClosed: () => closeInfo !== null,
    sendChat(text) {
      ws.send(JSON.stringify({ type: 'chat', message: text }))
    },
    send(data) {
      ws.send(data)
    },
    async close(code = 1000, reason = '') {
      if (!closeInfo && ws.readyState !== WebSocket.CLOSED) ws.close(code, reason)
      const timeout = Bun.sleep(DEFAULT_TIMEOUT_MS).then(() => ({ code: -1, reason: 'close timed out' }))
      return Promise.race([closed, timeout])
    },
  }
  return client
}

/**
 * Connects as `username` and resolves once the server's `welcome` frame arrives (or on
 * `open` with `{ until: 'open' }`). Rejects with the close code and reason if the server
 * refuses or drops the connection first, or at the timeout.
 */
export async function connectUser(
  httpUrl: string,
  username: string,
  options: ConnectOptions = {},
): Promise<ChatClient> {
  return connectUrl(chatUrl(httpUrl, username), username, options)
}

/** connectUser with a whole socket URL (a token, repeated parameters); `label` names it in errors. */
export async function connectUrl(url: string, label: string, options: ConnectOptions = {}): Promise<ChatClient> {
  const httpUrl = url
  const username = label
  const { until = 'welcome', timeoutMs = DEFAULT_TIMEOUT_MS } = options
  const client = openClient(url, username)
  const ready =
    until === 'open'
      ? new Promise<void>((resolve) => client.ws.addEventListener('open', () => resolve(), { once: true }))
      : client.next('welcome', timeoutMs).then((frame) => {
          client.welcome = frame
        })
  const refused = client.closed.then((info) => {
    throw new Error(
      `connectUser(${JSON.stringify(username)}) at ${httpUrl}: closed with ${info.code} ${JSON.stringify(info.reason)}`,
    )
  })
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(`connectUser(${JSON.stringify(username)}) at ${httpUrl}: not ${until} within ${timeoutMs} ms`),
        ),
      timeoutMs,
    )
  })
  try {
    await Promise.race([ready, refused, timeout])
  } catch (error) {
    client.ws.close()
    throw error
  } finally {
    clearTimeout(timer)
  }
  refused.catch(() => {})
  return client
}

/**
 * Opens a connection that the server is expected to refuse and resolves with the close
 * code and reason. `username: null` omits the query parameter. Rejects if the server sends
 * `welcome` (the connection was accepted) or nothing happens within the timeout.
 */
export async function refusal(
  httpUrl: string,
  username: string | null,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<CloseInfo> {
  return refusalAt(chatUrl(httpUrl, username), username ?? '(none)', timeoutMs)
}

/** refusal with a whole socket URL (a token, repeated parameters); `label` names it in errors. */
export async function refusalAt(url: string, label: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<CloseInfo> {
  const username = label
  const client = openClient(url, label)
  let timer: ReturnType<typeof setTimeout> | undefined
  type Outcome = { kind: 'closed'; info: CloseInfo } | { kind: 'accepted'; frame: Frame }
  const closedOutcome = client.closed.then((info): Outcome => ({ kind: 'closed', info }))
  const acceptedOutcome = client.next('welcome', timeoutMs).then(
    (frame): Outcome => ({ kind: 'accepted', frame }),
    () => new Promise<never>(() => {}), // closed or timed out: the other branches decide.
  )
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      client.ws.close()
      reject(new Error(`refusal(${JSON.stringify(username)}): not closed within ${timeoutMs} ms`))
    }, timeoutMs)
  })
  try {
    const outcome = await Promise.race([closedOutcome, acceptedOutcome, timeout])
    if (outcome.kind === 'closed') return outcome.info
    await client.close()
    throw new Error(`refusal(${JSON.stringify(username)}): connection was accepted: ${JSON.stringify(outcome.frame)}`)
  } finally {
    clearTimeout(timer)
  }
}

/** Connects users and remembers them, so one call in afterAll/afterEach closes them all. */
export function userPool() {
  const clients: ChatClient[] = []
  return {
    /**
     * Connects as the page does: a node shedding a join storm refuses some sockets before the
     * upgrade (HTTP 503, seen as close 1006) or just after it (1013), and the page tries again.
     */
    async connect(httpUrl: string, username: string): Promise<ChatClient> {
      const deadline = performance.now() + 20_000
      for (let attempt = 0; ; attempt++) {
        try {
          const client = await connectUser(httpUrl, username)
          clients.push(client)
          return client
        } catch (error) {
          const refused = /closed with (1006|1013)\b/.test(String(error))
          if (!refused || performance.now() > deadline) throw error
          await Bun.sleep(Math.min(500, 20 * 2 ** attempt)) // backoff between attempts, not a wait for a condition
        }
      }
    },
    closeAll: () => Promise.all(clients.splice(0).map((c) => c.close().catch(() => {}))),
  }
}

/** Whether the client's user list (the `users` frame on connect, then `presence` frames: leaves, then joins) holds `name`. */
export function sees(client: ChatClient, name: string): boolean {
  const list = new Map<string, Frame>()
  for (const f of client.frames) {
    if (f.type === 'users') list.clear()
    if (f.type === 'users') for (const u of f.users) list.set(u.username, u)
    if (f.type !== 'presence') continue
    for (const u of f.leaves) if (list.get(u.username)?.nodeAddress === u.nodeAddress) list.delete(u.username)
    for (const u of f.joins) list.set(u.username, u)
  }
  return list.has(name)
}

/** Whether a `presence` frame tells that `name` joined (`joins`) or left (`leaves`). */
export const presenceOf = (event: 'joins' | 'leaves', name: string) => (f: Frame) =>
  f.type === 'presence' && (f[event] as Array<{ username: string }>).some((u) => u.username === name)

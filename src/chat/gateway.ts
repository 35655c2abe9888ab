// A user's session, from the socket opening to its close, whatever serves the socket: Elysia in
// production, simulated users in the whole-node simulator. Input is validated here, at the
// boundary, before the room sees it. Time comes from `now` (the node's clock), never from Date.
import type { Claim } from './identity'
import { CloseCode, parseClientMessage, validateUsername, type ServerMessage } from './protocol'
import { FLOOD, MessageLimiter, type RateLimit } from './rate-limit'
import type { ChatRoom } from './room'
import type { ClientSocket, Sockets } from './sockets'

export interface GatewayDeps {
  room: ChatRoom
  sockets: Sockets
  selfAddress: string
  now: () => number
  rateLimit: RateLimit
  /** True while the node is behind (src/load.ts): chat frames are refused, so cluster traffic stays on time. */
  overloaded?: () => boolean
}

interface Session {
  username: string
  socket: ClientSocket
  limiter: MessageLimiter
}

/** Why a connection or a frame was refused: the label of the refusal counter in /metrics. */
export type Refusal = 'bad_token' | 'bad_username' | 'username_taken' | 'bad_message' | 'binary_frame' | 'message_too_long' | 'rate_limited' | 'flooding' | 'overloaded'

export class ChatGateway {
  /** Counters for /metrics. */
  readonly stats = { admitted: 0, closed: 0, framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0, refused: {} as Partial<Record<Refusal, number>> }
  /** Connection id → session of an admitted user; refused sockets never get an entry. */
  private readonly sessions = new Map<string, Session>()

  constructor(private readonly d: GatewayDeps) {}

  /**
   * A socket opened, claiming a name (from its `username` parameter or its token, see
   * identity.ts); it is admitted or closed with a code and a reason.
   */
  open(id: string, socket: ClientSocket, claim: Claim): void {
    if (!claim.ok) return this.refuse(claim.error.code === CloseCode.badUsername ? 'bad_username' : 'bad_token', () => socket.close(claim.error.code, claim.error.reason))
    const checked = validateUsername(claim.value)
    if (!checked.ok) return this.refuse('bad_username', () => socket.close(CloseCode.badUsername, checked.error))
    const username = checked.value
    if (!this.d.room.available(username)) return this.refuse('username_taken', () => socket.close(CloseCode.usernameTaken, 'username taken'))
    this.stats.admitted++
    this.sessions.set(id, { username, socket, limiter: new MessageLimiter(this.d.rateLimit, this.d.now()) })
    this.d.sockets.add(username, socket)
    this.send(socket, { type: 'welcome', username, nodeAddress: this.d.selfAddress })
    socket.subscribe()
    this.d.room.join(username)
    this.sendJson(socket, this.d.room.usersJson())
  }

  message(id: string, data: unknown): void {
    const session = this.sessions.get(id)
    if (!session) return
    this.stats.framesIn++
    this.stats.bytesIn += typeof data === 'string' ? data.length : data instanceof Uint8Array ? data.byteLength : 0
    // Rate first: a flood of bad frames costs as little as a flood of good ones.
    const verdict = session.limiter.take(this.d.now())
    if (verdict === 'flood') {
      return this.refuse('flooding', () => this.drop(id, session, CloseCode.flooding, `over the rate limit more than ${FLOOD.refusalsMax} times in ${FLOOD.windowMs / 1000} s`))
    }
    if (verdict === 'refuse') {
      return this.refuse('rate_limited', () =>
        this.send(session.socket, { type: 'error', code: 'rate_limited', message: `at most ${this.d.rateLimit.perSecond} messages per second; this one was not delivered` }),
      )
    }
    if (this.d.overloaded?.()) {
      return this.refuse('overloaded', () => this.send(session.socket, { type: 'error', code: 'overloaded', message: 'this node is overloaded; this message was not delivered, send it again shortly' }))
    }
    const parsed = parseClientMessage(data)
    if (!parsed.ok) {
      if (data instanceof Uint8Array || data instanceof ArrayBuffer) return this.refuse('binary_frame', () => this.drop(id, session, CloseCode.unsupportedData, parsed.error))
      return this.refuse('bad_message', () => this.send(session.socket, { type: 'error', code: 'bad_message', message: parsed.error }))
    }
    const said = this.d.room.say(session.username, parsed.value.message)
    if (!said.ok) this.refuse(said.error.code, () => this.send(session.socket, { type: 'error', code: said.error.code, message: said.error.message }))
  }

  /**
   * A drain: every user is told where else to go (the other members), its socket is closed with
   * 1012, and it leaves the room at once, so the other nodes hear of the leave before the user
   * reconnects there under the same name.
   */
  drain(members: Array<{ nodeAddress: string; httpUrl: string }>): void {
    // One frame for everyone: encoded once, not once per user.
    const moving = JSON.stringify({ type: 'moving', reason: 'service restart', members } satisfies ServerMessage)
    const sessions = [...this.sessions]
    // Every user leaves the room first, and the leaves go to the other members at once (not at
    // the end of a presence window), before any user is told where to go.
    for (const [id] of sessions) this.close(id)
    this.d.room.flushPresence()
    for (const [, session] of sessions) {
      this.sendJson(session.socket, moving)
      session.socket.close(CloseCode.serviceRestart, 'service restart')
    }
  }

  /** Admitted sessions now open. */
  get sessionCount(): number {
    return this.sessions.size
  }

  close(id: string): void {
    const session = this.sessions.get(id)
    if (!session) return
    this.stats.closed++
    this.sessions.delete(id)
    this.d.sockets.remove(session.username, session.socket)
    this.d.room.leave(session.username)
  }

  /** Closes a session's socket and leaves at once, without waiting for the close handshake. */
  private drop(id: string, session: Session, code: number, reason: string): void {
    session.socket.close(code, reason)
    this.close(id)
  }

  private send(socket: ClientSocket, message: ServerMessage): void {
    this.sendJson(socket, JSON.stringify(message))
  }

  private sendJson(socket: ClientSocket, json: string): void {
    this.stats.framesOut++
    this.stats.bytesOut += json.length
    socket.send(json)
  }

  private refuse(reason: Refusal, act: () => void): void {
    this.stats.refused[reason] = (this.stats.refused[reason] ?? 0) + 1
    act()
  }
}

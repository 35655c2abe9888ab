// A user's session, from the socket opening to its close, whatever serves the socket: Elysia in
// production, simulated users in the whole-node simulator. Input is validated here, at the
// boundary, before the room sees it. Time comes from `now` (the node's clock), never from Date.
import type { Claim } from './identity'
import { CloseCode, parseClientMessage, validateUsername, type ServerMessage } from './protocol'
import { FLOOD, TokenBucket, type RateLimit } from './rate-limit'
import type { ChatRoom, Resume } from './room'
import type { ClientSocket, Sockets } from './sockets'

export interface GatewayDeps {
  room: ChatRoom
  sockets: Sockets
  selfAddress: string
  now: () => number
  rateLimit: RateLimit
  /** The node's event-loop load (src/load.ts); without it nothing is shed. */
  load?: Load
}

/** What the gateway asks of the lag monitor (src/load.ts). */
export interface Load {
  /** True while the node is behind: chat frames are refused, so cluster traffic stays on time. */
  overloaded(): boolean
  /** True when the turn now running has gone on too long: sockets still sending in it are paused. */
  behind(budgetMs?: number): boolean
  /** `behind` through the node's own work, not a machine that did not run it. */
  busyBehind(budgetMs?: number): boolean
  /** Calls `fn` once the loop has caught up. */
  whenOnTime(fn: () => void): void
  /** Which turn of the loop this is: the same number until the next probe. */
  turn(): number
}

/** The first message of a session refused for now and not yet sent again: its clientMsgId, the refusal's code, and until when later messages wait for it. */
interface Held {
  clientMsgId: string
  code: 'rate_limited' | 'overloaded' | 'unavailable'
  until: number
}

/** An admitted user's session; its message rate's bucket is part of it (one object per connection, not two). */
class Session extends TokenBucket {
  /** Not read from (TCP backpressure) until the loop catches up; frames it had sent already are refused. */
  paused = false
  /** Pauses in a row, each within PAUSE_MAX_MS of the last: each one lasts twice as long. */
  strikes = 0
  pausedAt = -Infinity
  resumeAt = 0
  /** Frames handed over since the last pause began (sent before it, or still sent after being told). */
  unreadInPause = 0
  /** Frames it sent in the current turn of the loop (`turn`). */
  turn = -1
  framesInTurn = 0
  /** When its last chat frame came: a user who had said nothing for LIGHT_MS is `light`. */
  lastFrameAt = -Infinity
  /** A message refused for now (rate, load): later ones wait for it (see `holdsOrder`). */
  held: Held | null = null

  constructor(
    readonly username: string,
    readonly socket: ClientSocket,
    limit: RateLimit,
    now: number,
  ) {
    super(limit, now)
  }
}

/**
 * Frames one socket may send in a turn before it can be paused. A user who says something now and
 * then is never paused (a late turn only delays its message); a socket that sent more than this in
 * one turn is what made the turn long.
 */
const FRAMES_IN_TURN = 16
/** How late a turn may run before a frame of any socket is refused (see `message`). */
const LATE_TURN_MS = 100

/**
 * Sockets a turn of the loop admits however late it runs: the first opens of a process are slow
 * (100-300 ms compiling), and a loaded machine makes any turn late, so without them a few users
 * connecting together were refused for nothing. 32 cost 0.6-0.9 s on a
 * machine at load 7 (and an election); 16 are 30-60 ms of work there.
 */
const JOINS_IN_TURN = 16
/** How long a turn may run before joins past those are refused: longer than a frame's budget, as a refused join costs a retry of the whole handshake. */
const JOIN_TURN_MS = 30

/**
 * How long a session's later messages wait for one refused for now to be sent again: the page
 * sends it again after 5 s, then after twice as long each time, up to 30 s.
 */
const HOLD_MS = 30_000

/**
 * A user who sent nothing for this long before a message is `light`: when the node's fan-out
 * budget is spent, its message may borrow from it (FanoutBudget.take). A person saying a line now
 * and then is light; a client at the rate limit (20 a second) never is.
 */
const LIGHT_MS = 1000

/**
 * Frames a paused socket may still hand over before it is closed as flooding (4429; the name is
 * then kept out for a while, admission.ts). Bun reads a whole receive buffer at a time, so each
 * resume of a client flooding with the rate limit off handed over up to hundreds of thousands of
 * frames to refuse (a million in 10 s), and the core that took cost other nodes' users 10-15 ms of
 * p99. A page sends at most a few lines it held after it is told; at the default rate limit 1,000
 * frames are 50 s of messages.
 */
const UNREAD_IN_PAUSE_MAX = 1000

/** The first pause lasts until the loop catches up (a probe, ~20 ms); a socket that keeps filling turns is paused up to this long. */
const PAUSE_MIN_MS = 20
const PAUSE_MAX_MS = 1000

const OVERLOADED = JSON.stringify({ type: 'error', code: 'overloaded', message: 'this node is overloaded; this message was not delivered, send it again shortly' } satisfies ServerMessage)

/** Why a connection or a frame was refused: the label of the refusal counter in /metrics. */
export type Refusal = 'bad_token' | 'bad_username' | 'username_taken' | 'bad_message' | 'binary_frame' | 'message_too_long' | 'rate_limited' | 'flooding' | 'overloaded' | 'unavailable'

export class ChatGateway {
  /** Counters for /metrics. */
  readonly stats = { admitted: 0, closed: 0, framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0, refused: {} as Partial<Record<Refusal, number>> }
  /** Connection id → session of an admitted user; refused sockets never get an entry. */
  private readonly sessions = new Map<string, Session>()
  /** Sessions paused in a turn that went on too long, resumed together once the loop caught up. */
  private paused: Session[] = []
  /** Sockets admitted in this turn of the loop (LagMonitor.turn). */
  private joins = { turn: -1, sockets: 0 }

  constructor(private readonly d: GatewayDeps) {}

  /**
   * A socket opened, claiming a name (from its `username` parameter or its token, see
   * identity.ts); it is admitted or closed with a code and a reason.
   */
  open(id: string, socket: ClientSocket, claim: Claim, resume: Resume = {}): void {
    if (!claim.ok) return this.refuse(claim.error.code === CloseCode.badUsername ? 'bad_username' : 'bad_token', () => socket.close(claim.error.code, claim.error.reason))
    const checked = validateUsername(claim.value)
    if (!checked.ok) return this.refuse('bad_username', () => socket.close(CloseCode.badUsername, checked.error))
    const username = checked.value
    if (!this.d.room.available(username)) return this.refuse('username_taken', () => socket.close(CloseCode.usernameTaken, 'username taken'))
    this.stats.admitted++
    this.sessions.set(id, new Session(username, socket, this.d.rateLimit, this.d.now()))
    this.d.sockets.add(username, socket)
    this.send(socket, { type: 'welcome', username, nodeAddress: this.d.selfAddress })
    // Joined before it subscribes: the users frame (with this user in it) says what the presence
    // frames of the join would; then its history, then live lines, with none missing or repeated.
    this.d.room.join(username)
    this.sendJson(socket, this.d.room.usersJson())
    this.d.room.admit(socket, resume)
  }

  /**
   * Whether a new socket may go ahead now. Asked once per socket, just before its upgrade and
   * open (Bun runs each request's handler to its upgrade before the next request's). A join costs
   * its own socket a `users` frame and a history, and the room a share of one presence frame and
   * one line (presence-batch.ts, presence-lines.ts), never a frame to every user: what bounds a
   * storm is how long the loop spends on it. The first JOINS_IN_TURN of a turn go in; past them,
   * none once the turn is past its budget through the node's own work (500 sockets opening at
   * once were admitted 130-150 to one turn that ran 0.3-0.8 s, and the leader's heartbeats with
   * it: followers held an election). Refused: HTTP 503, and the page tries again.
   */
  admitsJoin(): boolean {
    const load = this.d.load
    if (!load) return true
    const turn = load.turn()
    if (this.joins.turn !== turn) this.joins = { turn, sockets: 0 }
    if (this.joins.sockets >= JOINS_IN_TURN && load.busyBehind(JOIN_TURN_MS)) return false
    this.joins.sockets++
    return true
  }

  message(id: string, data: unknown): void {
    const session = this.sessions.get(id)
    if (!session) return
    this.stats.framesIn++
    const now = this.d.now()
    const light = now - session.lastFrameAt >= LIGHT_MS
    session.lastFrameAt = now
    this.stats.bytesIn += typeof data === 'string' ? data.length : data instanceof Uint8Array ? data.byteLength : 0
    // Bun hands over every frame it read from a socket in one turn: thousands from a flooding
    // client, and a turn that long starves the cluster's heartbeats. Past the turn's budget the
    // socket stops being read, and what it already sent is refused at the cost of a counter.
    if (session.paused) {
      if (++session.unreadInPause > UNREAD_IN_PAUSE_MAX) return this.refuse('flooding', () => this.drop(id, session, CloseCode.flooding, `sent more than ${UNREAD_IN_PAUSE_MAX} messages after being told this node is overloaded`))
      return this.refuseForNow(session, data, 'overloaded', () => {})
    }
    if (this.d.load && this.burstInLateTurn(session, this.d.load)) return this.refuseForNow(session, data, 'overloaded', () => this.pause(session))
    // Many sockets a frame each: the turn is bounded too, by refusing (not pausing) past a later mark.
    if (this.d.load?.behind(LATE_TURN_MS)) return this.refuseForNow(session, data, 'overloaded', () => this.sendJson(session.socket, OVERLOADED))
    // Rate first: a flood of bad frames costs as little as a flood of good ones.
    const verdict = session.take(this.d.rateLimit, now)
    if (verdict === 'flood') {
      return this.refuse('flooding', () => this.drop(id, session, CloseCode.flooding, `over the rate limit more than ${FLOOD.refusalsMax} times in ${FLOOD.windowMs / 1000} s`))
    }
    if (verdict === 'refuse') {
      return this.refuseForNow(session, data, 'rate_limited', () =>
        this.send(session.socket, { type: 'error', code: 'rate_limited', message: `at most ${this.d.rateLimit.perSecond} messages per second; this one was not delivered` }),
      )
    }
    if (session.held && this.holdsOrder(session, data)) {
      const held = session.held
      return this.refuse(held.code, () => this.send(session.socket, { type: 'error', code: held.code, message: `message ${held.clientMsgId} was not delivered and this one is after it: send that one again first (messages are taken in the order they were sent)` }))
    }
    if (this.d.load?.overloaded()) return this.refuseForNow(session, data, 'overloaded', () => this.sendJson(session.socket, OVERLOADED))
    const parsed = parseClientMessage(data)
    if (!parsed.ok) {
      if (data instanceof Uint8Array || data instanceof ArrayBuffer) return this.refuse('binary_frame', () => this.drop(id, session, CloseCode.unsupportedData, parsed.error))
      return this.refuse('bad_message', () => this.send(session.socket, { type: 'error', code: 'bad_message', message: parsed.error }))
    }
    const said = this.d.room.say(session.username, parsed.value.message, parsed.value.clientMsgId, light)
    if (said.ok) session.held = null
    else {
      const { code, message } = said.error
      const refusal = () => this.send(session.socket, { type: 'error', code, message })
      // A socket still sending past FRAMES_IN_TURN frames into this refusal (the line window or the
      // fan-out budget) is what fills it: it stops being read, as in a late turn, instead of being
      // answered frame by frame. One client flooding with the rate limit off was otherwise read
      // and refused 100,000 times a second, and the core that took left other nodes' users a p99
      // of 24-28 ms (quiet: 8-10).
      if (code === 'overloaded' && session.framesInTurn > FRAMES_IN_TURN) this.refuseForNow(session, data, code, () => this.pause(session), parsed.value.clientMsgId)
      else if (code === 'overloaded' || code === 'unavailable') this.refuseForNow(session, data, code, refusal, parsed.value.clientMsgId)
      else this.refuse(code, refusal)
    }
  }

  /**
   * Refuses a message for now (the sender may send it again: rate, load) and, when it has a
   * clientMsgId and none is held yet, holds the session's later messages until it comes again.
   * Taken meanwhile, they would land before it: a user's messages out of the order said.
   */
  private refuseForNow(session: Session, data: unknown, code: Held['code'], act: () => void, clientMsgId = session.held ? undefined : clientMsgIdOf(data)): void {
    if (clientMsgId !== undefined && (session.held === null || session.held.clientMsgId === clientMsgId)) session.held = { clientMsgId, code, until: this.d.now() + HOLD_MS }
    this.refuse(code, act)
  }

  /** Whether `data` waits behind the held message: it is not that message sent again, and the hold has not run out. */
  private holdsOrder(session: Session, data: unknown): boolean {
    const held = session.held!
    if (this.d.now() > held.until) {
      session.held = null
      return false
    }
    // The held id is in the frame's text before it is worth parsing: most frames are not it.
    return !(typeof data === 'string' && data.includes(held.clientMsgId) && clientMsgIdOf(data) === held.clientMsgId)
  }

  /**
   * A drain: every user leaves the room at once and the leaves go to the other members at once
   * (not at the end of a presence window); once `delivered` says the other members have them
   * (and every presence frame before them), each user is told where else to go (the other
   * members) and its socket is closed with 1012. A user can outrun the cluster link: reconnecting
   * at a node that had not yet heard of its join here, then of the leave, it would be taken for a
   * second holder of its own name there and closed (4409).
   */
  async drain(members: Array<{ nodeAddress: string; httpUrl: string }>, delivered: () => Promise<unknown> = async () => {}): Promise<void> {
    // One frame for everyone: encoded once, not once per user.
    const moving = JSON.stringify({ type: 'moving', reason: 'service restart', members } satisfies ServerMessage)
    const sessions = [...this.sessions]
    for (const [id] of sessions) this.close(id)
    this.d.room.flushPresence()
    if (sessions.length > 0) await delivered()
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
    this.d.room.forget(session.socket)
    // At once, however late the turn: a leave costs the room a presence entry and a name in a
    // gathered line (presence-batch.ts, presence-lines.ts), not a frame to every user.
    this.d.room.leave(session.username)
  }

  private burstInLateTurn(session: Session, load: Load): boolean {
    const turn = load.turn()
    if (session.turn !== turn) {
      session.turn = turn
      session.framesInTurn = 0
    }
    return ++session.framesInTurn > FRAMES_IN_TURN && load.behind()
  }

  /**
   * Stops reading `session` until the loop catches up, and longer each time it is back filling a
   * turn soon after (a flooder is read for one turn in many, not every other one); tells it once
   * that what it sent meanwhile was not delivered.
   */
  private pause(session: Session): void {
    const now = this.d.now()
    session.strikes = now - session.pausedAt < PAUSE_MAX_MS ? session.strikes + 1 : 0
    session.pausedAt = now
    session.resumeAt = now + Math.min(PAUSE_MAX_MS, PAUSE_MIN_MS * 2 ** session.strikes)
    session.paused = true
    session.unreadInPause = 0
    session.socket.pause?.()
    this.sendJson(session.socket, OVERLOADED)
    if (this.paused.push(session) === 1) this.d.load?.whenOnTime(() => this.resumePaused())
  }

  private resumePaused(): void {
    const now = this.d.now()
    const still: Session[] = []
    for (const session of this.paused) {
      if (session.resumeAt > now) still.push(session)
      else {
        session.paused = false
        session.socket.resume?.()
      }
    }
    this.paused = still
    if (still.length > 0) this.d.load?.whenOnTime(() => this.resumePaused())
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

/** The clientMsgId of a chat frame, if it is a valid one that has it (parsed only when it may: a flood's frames cost a search). */
function clientMsgIdOf(data: unknown): string | undefined {
  if (typeof data !== 'string' || !data.includes('"clientMsgId"')) return undefined
  const parsed = parseClientMessage(data)
  return parsed.ok ? parsed.value.clientMsgId : undefined
}

// A user's session, from the socket opening to its close, whatever serves the socket: Elysia in
// production, simulated users in the whole-node simulator. Input is validated here, at the
// boundary, before the room sees it.
import { CloseCode, parseClientMessage, validateUsername, type ServerMessage } from './protocol'
import type { ChatRoom } from './room'
import type { ClientSocket, Sockets } from './sockets'

/** Why a connection or a frame was refused: the label of the refusal counter in /metrics. */
export type Refusal = 'bad_username' | 'username_taken' | 'bad_message' | 'binary_frame' | 'message_too_long'

export class ChatGateway {
  /** Counters for /metrics. */
  readonly stats = { admitted: 0, closed: 0, framesIn: 0, bytesIn: 0, framesOut: 0, bytesOut: 0, refused: {} as Partial<Record<Refusal, number>> }
  /** Connection id → session of an admitted user; refused sockets never get an entry. */
  private readonly sessions = new Map<string, { username: string; socket: ClientSocket }>()

  constructor(
    private readonly room: ChatRoom,
    private readonly sockets: Sockets,
    private readonly selfAddress: string,
  ) {}

  /** A socket opened with these query parameters; it is admitted or closed with a reason. */
  open(id: string, socket: ClientSocket, query: Record<string, unknown>): void {
    const checked = validateUsername(query.username)
    if (!checked.ok) return this.refuse('bad_username', () => socket.close(CloseCode.badUsername, checked.error))
    const username = checked.value
    if (!this.room.available(username)) return this.refuse('username_taken', () => socket.close(CloseCode.usernameTaken, 'username taken'))
    this.stats.admitted++
    this.sessions.set(id, { username, socket })
    this.sockets.add(username, socket)
    this.send(socket, { type: 'welcome', username, nodeAddress: this.selfAddress })
    socket.subscribe()
    this.room.join(username)
    this.send(socket, this.room.usersMessage())
  }

  message(id: string, data: unknown): void {
    const session = this.sessions.get(id)
    if (!session) return
    this.stats.framesIn++
    this.stats.bytesIn += typeof data === 'string' ? data.length : data instanceof Uint8Array ? data.byteLength : 0
    const parsed = parseClientMessage(data)
    if (!parsed.ok) {
      if (data instanceof Uint8Array || data instanceof ArrayBuffer) return this.refuse('binary_frame', () => session.socket.close(CloseCode.unsupportedData, parsed.error))
      return this.refuse('bad_message', () => this.send(session.socket, { type: 'error', code: 'bad_message', message: parsed.error }))
    }
    const said = this.room.say(session.username, parsed.value.message)
    if (!said.ok) this.refuse(said.error.code, () => this.send(session.socket, { type: 'error', code: said.error.code, message: said.error.message }))
  }

  /** Admitted sessions now open. */
  get sessionCount(): number {
    return this.sessions.size
  }

  private send(socket: ClientSocket, message: ServerMessage): void {
    const json = JSON.stringify(message)
    this.stats.framesOut++
    this.stats.bytesOut += json.length
    socket.send(json)
  }

  private refuse(reason: Refusal, act: () => void): void {
    this.stats.refused[reason] = (this.stats.refused[reason] ?? 0) + 1
    act()
  }

  close(id: string): void {
    const session = this.sessions.get(id)
    if (!session) return
    this.stats.closed++
    this.sessions.delete(id)
    this.sockets.remove(session.username, session.socket)
    this.room.leave(session.username)
  }
}



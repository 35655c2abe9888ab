// A user's session, from the socket opening to its close, whatever serves the socket: Elysia in
// production, simulated users in the whole-node simulator. Input is validated here, at the
// boundary, before the room sees it.
import { CloseCode, parseClientMessage, validateUsername, type ServerMessage } from './protocol'
import type { ChatRoom } from './room'
import type { ClientSocket, Sockets } from './sockets'

export class ChatGateway {
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
    if (!checked.ok) return socket.close(CloseCode.badUsername, checked.error)
    const username = checked.value
    if (!this.room.available(username)) return socket.close(CloseCode.usernameTaken, 'username taken')
    this.sessions.set(id, { username, socket })
    this.sockets.add(username, socket)
    send(socket, { type: 'welcome', username, nodeAddress: this.selfAddress })
    socket.subscribe()
    this.room.join(username)
    send(socket, this.room.usersMessage())
  }

  message(id: string, data: unknown): void {
    const session = this.sessions.get(id)
    if (!session) return
    const parsed = parseClientMessage(data)
    if (!parsed.ok) {
      if (data instanceof Uint8Array || data instanceof ArrayBuffer) return session.socket.close(CloseCode.unsupportedData, parsed.error)
      send(session.socket, { type: 'error', code: 'bad_message', message: parsed.error })
      return
    }
    const said = this.room.say(session.username, parsed.value.message)
    if (!said.ok) send(session.socket, { type: 'error', code: said.error.code, message: said.error.message })
  }

  close(id: string): void {
    const session = this.sessions.get(id)
    if (!session) return
    this.sessions.delete(id)
    this.sockets.remove(session.username, session.socket)
    this.room.leave(session.username)
  }
}

function send(socket: ClientSocket, message: ServerMessage): void {
  socket.send(JSON.stringify(message))
}

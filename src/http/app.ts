// HTTP and WebSocket routes (Elysia). A thin shell: validation at the edge, then the room.
import { Elysia } from 'elysia'
import page from '../../public/index.html'
import type { ChatRoom } from '../chat/room'
import { CloseCode, parseClientMessage, validateUsername, type ServerMessage } from '../chat/protocol'
import type { MembershipView } from '../cluster/membership'
import { addressOf } from '../cluster/messages'
import type { TransportStats } from '../cluster/transport'

export interface AppDeps {
  room: ChatRoom
  selfAddress: string
  clusterView: () => MembershipView
  transportStats: () => TransportStats
  log: (line: string) => void
}

type Socket = { close(code?: number, reason?: string): void; send(data: string): unknown }

/** Local sockets by username, so the room can disconnect a user whose name was taken elsewhere. */
export class Sockets {
  private readonly byName = new Map<string, Socket>()
  add(username: string, socket: Socket) {
    this.byName.set(username, socket)
  }
  remove(username: string, socket: Socket) {
    if (this.byName.get(username) === socket) this.byName.delete(username)
  }
  close(username: string, code: number, reason: string) {
    const socket = this.byName.get(username)
    this.byName.delete(username)
    socket?.close(code, reason)
  }
  closeAll(code: number, reason: string) {
    for (const name of [...this.byName.keys()]) this.close(name, code, reason)
  }
}

export function clusterInfo(view: MembershipView, selfAddress: string, transport: TransportStats) {
  return {
    selfAddress,
    incarnation: view.selfId.slice(view.selfId.lastIndexOf('#') + 1),
    leader: view.leaderId ? addressOf(view.leaderId) : null,
    term: view.term,
    commitIndex: view.commitIndex,
    status: view.status,
    role: view.role,
    members: view.members.map((m) => ({
      address: m.address,
      status: m.status,
      reachable: m.reachable,
      incarnation: m.incarnation,
      httpUrl: m.httpUrl,
      leader: m.leader,
    })),
    /** Frames and bytes on the cluster port; `dropped` counts messages lost to full send queues. */
    transport: { ...transport },
  }
}

export function createApp(deps: AppDeps, sockets: Sockets) {
  const { room } = deps
  // ws.id → username of an admitted session; refused sockets never get an entry.
  const sessions = new Map<string, string>()
  const send = (ws: Socket, message: ServerMessage) => ws.send(JSON.stringify(message))

  return new Elysia({
    websocket: {
      // Whole frames beyond this are refused by Bun with close code 1009.
      maxPayloadLength: 64 * 1024,
      // A client that stops reading is disconnected instead of silently missing messages;
      // the page reconnects and gets the current user list.
      backpressureLimit: 4 * 1024 * 1024,
      closeOnBackpressureLimit: true,
    },
  })
    .get('/', page)
    .get('/api/users', () => {
      const users = room.users()
      return { users, count: users.length }
    })
    .get('/api/cluster-info', () => clusterInfo(deps.clusterView(), deps.selfAddress, deps.transportStats()))
    // A plain GET (no Upgrade header) on the chat socket's path: say what is expected.
    .get('/ws/chat', () =>
      Response.json({ error: 'this is a WebSocket endpoint: connect with ws://…/ws/chat?username=NAME' }, { status: 426, headers: { upgrade: 'websocket' } }),
    )
    .ws('/ws/chat', {
      open(ws) {
        const query = ws.data.query as Record<string, string | undefined>
        const checked = validateUsername(query.username)
        if (!checked.ok) return ws.close(CloseCode.badUsername, checked.reason)
        const { username } = checked
        if (!room.available(username)) return ws.close(CloseCode.usernameTaken, 'username taken')
        sessions.set(ws.id, username)
        sockets.add(username, ws.raw)
        send(ws, { type: 'welcome', username, nodeAddress: deps.selfAddress })
        ws.subscribe('chat')
        room.join(username)
        send(ws, room.usersMessage())
      },
      message(ws, data) {
        const username = sessions.get(ws.id)
        if (!username) return
        const parsed = parseClientMessage(data)
        if (!parsed.ok) {
          if (data instanceof Uint8Array) return ws.close(CloseCode.unsupportedData, parsed.error)
          return send(ws, { type: 'error', code: 'bad_message', message: parsed.error })
        }
        const result = room.say(username, parsed.message.message)
        if (!result.ok) send(ws, { type: 'error', code: result.code, message: result.message })
      },
      close(ws) {
        const username = sessions.get(ws.id)
        if (!username) return
        sessions.delete(ws.id)
        sockets.remove(username, ws.raw)
        room.leave(username)
      },
    })
    .onError(({ code, error, path }) => {
      if (code === 'NOT_FOUND') return Response.json({ error: 'not found', path }, { status: 404 })
      deps.log(`http error on ${path}: ${String(error)}`)
      return Response.json({ error: 'internal error' }, { status: 500 })
    })
}

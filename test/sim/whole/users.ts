// Simulated WebSocket users: a socket that records every frame its node sends it, the topic
// fan-out the node publishes through, and what a client makes of the frames it got (its user
// list, the system lines, the chat lines), as the page would.
import type { ClientSocket, Fanout } from '../../../src/chat/sockets'

export class SimFanout implements Fanout {
  readonly subscribers = new Set<SimSocket>()
  publish(json: string): void {
    for (const socket of this.subscribers) socket.send(json)
  }
}

export class SimSocket implements ClientSocket {
  readonly frames: string[] = []
  open = true
  closeCode: number | null = null
  closeReason = ''

  constructor(
    private readonly fanout: SimFanout,
    /** What the server does when a socket closes (Elysia calls the close handler). */
    private readonly onClosed: (socket: SimSocket) => void,
  ) {}

  send(json: string): void {
    if (this.open) this.frames.push(json)
  }

  close(code = 1005, reason = ''): void {
    if (!this.open) return
    this.kill(code, reason)
    this.onClosed(this)
  }

  subscribe(): void {
    if (this.open) this.fanout.subscribers.add(this)
  }

  /** The connection is gone without the server's close handler running (its process died). */
  kill(code: number, reason: string): void {
    this.open = false
    this.closeCode = code
    this.closeReason = reason
    this.fanout.subscribers.delete(this)
  }
}

/** One connection of one simulated person. */
export interface SimUser {
  id: string
  username: string
  slot: number
  /** The node process it connected to (a restart is another process). */
  process: number
  socket: SimSocket
  openedAt: number
  /** Position among all opens and sends, for those at the same instant. */
  order: number
  closedAt: number | null
}

export interface ChatLine {
  text: string
  username: string
  nodeAddress: string
}

/** What a client knows after reading its frames, and every inconsistency it met on the way. */
export interface ClientView {
  admitted: boolean
  users: Map<string, string>
  chats: ChatLine[]
  problems: string[]
}

export function readFrames(frames: readonly string[]): ClientView {
  const view: ClientView = { admitted: false, users: new Map(), chats: [], problems: [] }
  /** The last system event seen for each name: join and leave must alternate. */
  const lastSystem = new Map<string, 'join' | 'leave'>()
  for (const json of frames) {
    const f = JSON.parse(json)
    switch (f.type) {
      case 'welcome':
        view.admitted = true
        break
      case 'users':
        view.users = new Map(f.users.map((u: { username: string; nodeAddress: string }) => [u.username, u.nodeAddress]))
        for (const name of view.users.keys()) lastSystem.set(name, 'join')
        break
      case 'presence': {
        // Leaves first, then joins. A frame may restate what the client's `users` frame already
        // holds (it was sent while the changes waited for their window): a leave of an entry the
        // client never listed is then a no-op, but only when the same frame joins the name where
        // the client lists it; and no frame joins a name listed at another node without leaving it.
        const joins = f.joins as Array<{ username: string; nodeAddress: string }>
        for (const u of f.leaves as Array<{ username: string; nodeAddress: string }>) {
          const listed = view.users.get(u.username)
          const restated = joins.some((j) => j.username === u.username && j.nodeAddress === listed)
          if (listed !== undefined && listed !== u.nodeAddress && !restated) view.problems.push(`presence leave for ${u.username}@${u.nodeAddress}, listed at ${listed}`)
          if (listed === u.nodeAddress) view.users.delete(u.username)
        }
        for (const u of joins) {
          const listed = view.users.get(u.username)
          if (listed !== undefined && listed !== u.nodeAddress) view.problems.push(`presence join for ${u.username}@${u.nodeAddress}, listed at ${listed}`)
          view.users.set(u.username, u.nodeAddress)
        }
        break
      }
      case 'system': {
        if (lastSystem.get(f.username) === f.event) view.problems.push(`system ${f.event} for ${f.username} twice in a row`)
        lastSystem.set(f.username, f.event)
        break
      }
      case 'chat':
        view.chats.push({ text: f.message, username: f.username, nodeAddress: f.nodeAddress })
        break
      case 'error':
        break
      default:
        view.problems.push(`unknown frame type ${f.type}`)
    }
  }
  return view
}

// Simulated WebSocket users: a socket that records every frame its node sends it, the topic
// fan-out the node publishes through, the person behind a run of connections (what the page
// keeps across reconnects: the last line seen, the messages not yet acknowledged), and what a
// client makes of the frames it got (its user list, the transcript lines, the acks), as the page
// would.
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
    /** Sees every frame as it is sent (checks that need the node's state at that moment). */
    private readonly onFrame?: (json: string) => void,
  ) {}

  send(json: string): void {
    if (!this.open) return
    this.frames.push(json)
    this.onFrame?.(json)
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

/** Where a connection resumes the transcript: after line `since` of transcript `epoch`. */
export interface Resume {
  since: number
  epoch: string
}

/** One connection of one person. */
export interface SimUser {
  id: string
  username: string
  person: Person
  /** A second tab taking a name that is online elsewhere: it never chats (a race for the name). */
  probe: boolean
  slot: number
  /** The node process it connected to (a restart is another process). */
  process: number
  socket: SimSocket
  openedAt: number
  /** Position among all opens and sends, for those at the same instant. */
  order: number
  closedAt: number | null
  /** Closed by its user (the page does not reconnect by itself then). */
  closedByUser: boolean
  resume: Resume | null
  /** The id of the last line the node had delivered when the connection opened (where "after it connected" starts). */
  startId: number
}

/** A message as the person tracks it until its ack. */
export interface Outgoing {
  text: string
  clientMsgId: string
}

/** The person behind a name: the page across its reconnects. */
export interface Person {
  username: string
  connections: SimUser[]
  /** Messages with a clientMsgId not acknowledged yet, in the order first sent. */
  pending: Outgoing[]
  /** The last line seen, over every connection (what the page resumes from). */
  lastSeen: Resume | null
  /** When the page reconnects by itself (after a close it did not ask for); null: it does not. */
  reconnectAt: number | null
  /** How many reconnect attempts in a row failed (backoff). */
  attempts: number
}

export interface ChatLineFrame {
  type: 'chat'
  id: number
  username: string
  message: string
  nodeAddress: string
  timestamp: number
}
export interface SystemLineFrame {
  type: 'system'
  id: number
  event: 'join' | 'leave'
  username: string
  usernames?: string[]
  count?: number
  timestamp: number
  message: string
}
export type LineFrame = ChatLineFrame | SystemLineFrame

/** What a client read, in order: the transcript lines and the history frames between them. */
export type Read =
  | { kind: 'line'; line: LineFrame; live: boolean }
  | { kind: 'history'; epoch: string; complete: boolean; count: number }

/** What a client knows after reading its frames, and every inconsistency it met on the way. */
export interface ClientView {
  admitted: boolean
  users: Map<string, string>
  reads: Read[]
  acks: Array<{ clientMsgId: string; id: number }>
  /** Refusals of sent frames, in order. */
  errors: string[]
  /** Frames the client could not make sense of. */
  problems: string[]
  /** Presence changes that contradict the list the client holds (a change told twice, or of someone not listed). */
  presenceProblems: string[]
}

export function readFrames(frames: readonly string[]): ClientView {
  const view: ClientView = { admitted: false, users: new Map(), reads: [], acks: [], errors: [], problems: [], presenceProblems: [] }
  for (const json of frames) {
    const f = JSON.parse(json)
    switch (f.type) {
      case 'welcome':
        view.admitted = true
        break
      case 'users':
        view.users = new Map(f.users.map((u: { username: string; nodeAddress: string }) => [u.username, u.nodeAddress]))
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
          if (listed !== undefined && listed !== u.nodeAddress && !restated) view.presenceProblems.push(`presence leave for ${u.username}@${u.nodeAddress}, listed at ${listed}`)
          if (listed === u.nodeAddress) view.users.delete(u.username)
        }
        for (const u of joins) {
          const listed = view.users.get(u.username)
          if (listed !== undefined && listed !== u.nodeAddress) view.presenceProblems.push(`presence join for ${u.username}@${u.nodeAddress}, listed at ${listed}`)
          view.users.set(u.username, u.nodeAddress)
        }
        break
      }
      case 'history':
        view.reads.push({ kind: 'history', epoch: f.epoch, complete: f.complete, count: f.messages.length })
        for (const line of f.messages) view.reads.push({ kind: 'line', line, live: false })
        break
      case 'system':
      case 'chat':
        view.reads.push({ kind: 'line', line: f, live: true })
        break
      case 'ack':
        view.acks.push({ clientMsgId: f.clientMsgId, id: f.id })
        break
      case 'error':
        view.errors.push(f.code)
        break
      default:
        view.problems.push(`unknown frame type ${f.type}`)
    }
  }
  return view
}

/** The ids of the lines a client read, in the order read. */
export function lineIds(view: ClientView): number[] {
  const ids: number[] = []
  for (const r of view.reads) if (r.kind === 'line') ids.push(r.line.id)
  return ids
}

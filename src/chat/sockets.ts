// The local users' sockets, by username: how the room closes a user whose name turned out to be
// taken elsewhere, and how a stopping node closes everyone.

/** What the chat layer needs of a user's connection, whatever serves it (Elysia, the simulator). */
export interface ClientSocket {
  send(json: string): unknown
  close(code?: number, reason?: string): void
  /** Starts receiving what the room publishes to all local users. */
  subscribe(): void
  /** Stops reading the client's frames (it sees TCP backpressure) until `resume`; frames already read still arrive. */
  pause?(): void
  resume?(): void
}

/** One encoded frame to every subscribed local user (Bun's topic publish in production). */
export interface Fanout {
  publish(json: string): void
}

export class Sockets {
  private readonly byName = new Map<string, ClientSocket>()
  add(username: string, socket: ClientSocket) {
    this.byName.set(username, socket)
  }
  remove(username: string, socket: ClientSocket) {
    if (this.byName.get(username) === socket) this.byName.delete(username)
  }
  /** Sends to one local user, if connected. */
  send(username: string, json: string) {
    this.byName.get(username)?.send(json)
  }
  close(username: string, code: number, reason: string) {
    const socket = this.byName.get(username)
    this.byName.delete(username)
    socket?.close(code, reason)
  }
}

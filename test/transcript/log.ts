// A committed log written by hand, for the transcript's tests: each call appends the next entry
// and applies it to every transcript given, so tests read as the log they describe.
import type { Entry } from '../../src/cluster/messages'
import type { TranscriptEntry } from '../../src/transcript/entries'
import type { Transcript } from '../../src/transcript/transcript'

export const node = (n: number) => `bun://S@127.0.0.1:${2550 + n}`
export const origin = (n: number, incarnation = 'i1') => `${node(n)}#${incarnation}`

export class HandLog {
  index = 0
  readonly entries: Entry[] = []
  clock = 1_000

  constructor(readonly machines: Transcript[]) {}

  append(entry: Entry): number {
    this.index++
    this.entries.push(entry)
    for (const m of this.machines) m.apply(this.index, entry)
    return this.index
  }

  found(n = 1): number {
    return this.add(n)
  }

  add(n: number, incarnation = 'i1'): number {
    return this.append({ term: 1, change: { type: 'add', member: { address: node(n), incarnation, httpUrl: `http://h${n}` } } })
  }

  remove(n: number, incarnation = 'i1'): number {
    return this.append({ term: 1, change: { type: 'remove', id: origin(n, incarnation), reason: 'down' } })
  }

  noop(): number {
    return this.append({ term: 1, change: { type: 'noop' } })
  }

  app(data: TranscriptEntry): number {
    return this.append({ term: 1, change: { type: 'app', data } })
  }

  chat(n: number, seq: number, key: string, username: string, message: string): number {
    return this.app({ type: 'chat', origin: origin(n), seq, key, username, message, nodeAddress: node(n), timestamp: ++this.clock })
  }

  /** One name, or several that joined together. */
  join(n: number, seq: number, username: string | string[], key = `join:${n}:${seq}`): number {
    return this.app({ type: 'join', origin: origin(n), seq, key, usernames: [username].flat(), nodeAddress: node(n), timestamp: ++this.clock })
  }

  leave(n: number, seq: number, username: string | string[], key = `leave:${n}:${seq}`): number {
    return this.app({ type: 'leave', origin: origin(n), seq, key, usernames: [username].flat(), nodeAddress: node(n), timestamp: ++this.clock })
  }
}

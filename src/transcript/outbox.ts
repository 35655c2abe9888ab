// What this node has proposed for its own users and not yet seen in the transcript. Proposals
// can be lost (a leader that fails before committing them, a link that drops, a partition), so
// the node keeps each one until the transcript accepts it and proposes everything still pending
// again when the leader changes or nothing has moved for a while. Repeats are harmless: the
// transcript takes each origin's entries once, in sequence (transcript.ts). Pure: time comes in
// as arguments.
import type { Accepted } from './transcript'
import type { TranscriptEntry } from './entries'

/** An entry before it has an origin and a place in the origin's sequence. */
export type Draft = TranscriptEntry extends infer E ? (E extends TranscriptEntry ? Omit<E, 'origin' | 'seq'> : never) : never

export interface OutboxOptions {
  /** Entries held at most; more are refused (the node cannot reach a leader, or is far behind). */
  maxPending: number
  /** Proposes again what is pending when nothing was accepted for this long. */
  retryMs: number
}

export class Outbox {
  private origin = ''
  private nextSeq = 1
  private pending: TranscriptEntry[] = []
  /** When each of `pending` was last proposed (`add`, or `due` proposing it again). */
  private proposedAt: number[] = []
  /** How many of `pending` are joins or leaves (presence-lines.ts holds the next ones back while any are). */
  private presence = 0
  /** When something was last accepted or the pending entries were last proposed. */
  private movedAt = 0

  constructor(private readonly o: OutboxOptions) {}

  get size(): number {
    return this.pending.length
  }

  /** Whether a join or leave entry is proposed and not yet in the transcript. */
  get presenceInFlight(): boolean {
    return this.presence > 0
  }

  get full(): boolean {
    return this.pending.length >= this.o.maxPending
  }

  /**
   * How long the oldest pending entry has waited since it was last proposed; 0 when none is
   * pending. What is held through a partition counts from its proposal after the heal: only a
   * queue in front of a working cluster makes this grow.
   */
  oldestWait(now: number): number {
    return this.pending.length === 0 ? 0 : now - this.proposedAt[0]!
  }

  /**
   * A new incarnation of this node (its first, or a rejoin): it proposes under its new id, and
   * what is still pending is numbered afresh (keys unchanged, so nothing is taken twice).
   */
  setOrigin(origin: string): void {
    if (origin === this.origin) return
    this.origin = origin
    this.nextSeq = 1
    this.pending = this.pending.map((e) => ({ ...e, origin, seq: this.nextSeq++ }))
  }

  /** Holds a new entry and returns it to propose now; null when the outbox is full. */
  add(draft: Draft, now: number): TranscriptEntry | null {
    if (this.full) return null
    const entry = { ...draft, origin: this.origin, seq: this.nextSeq++ } as TranscriptEntry
    if (this.pending.length === 0) this.movedAt = now
    this.pending.push(entry)
    this.proposedAt.push(now)
    if (entry.type !== 'chat') this.presence++
    return entry
  }

  /** What the transcript took: our entries among them are done. Returns them with their ids. */
  settle(accepted: Accepted[], now: number): Array<{ entry: TranscriptEntry; id: number }> {
    const done: Array<{ entry: TranscriptEntry; id: number }> = []
    for (const a of accepted) {
      if (a.origin !== this.origin) continue
      // Taken in sequence: everything before it was taken too (or settled already).
      while (this.pending.length > 0 && this.pending[0]!.seq <= a.seq) {
        const entry = this.shift()
        if (entry.seq === a.seq) done.push({ entry, id: a.id })
      }
      this.movedAt = now
    }
    return done
  }

  /**
   * After a snapshot replaced the transcript: entries below `nextSeq` were taken meanwhile, and
   * their ids are found by key (`idOf`); null when the key has left the window.
   */
  settleUpTo(nextSeq: number, idOf: (key: string) => number | undefined, now: number): Array<{ entry: TranscriptEntry; id: number | undefined }> {
    const done: Array<{ entry: TranscriptEntry; id: number | undefined }> = []
    while (this.pending.length > 0 && this.pending[0]!.seq < nextSeq) {
      const entry = this.shift()
      done.push({ entry, id: idOf(entry.key) })
    }
    if (done.length > 0) this.movedAt = now
    return done
  }

  private shift(): TranscriptEntry {
    const entry = this.pending.shift()!
    this.proposedAt.shift()
    if (entry.type !== 'chat') this.presence--
    return entry
  }

  /** Everything pending, when it is time to propose it again: on `leaderChanged`, or after retryMs without progress. */
  due(now: number, leaderChanged: boolean): TranscriptEntry[] {
    if (this.pending.length === 0) return []
    if (!leaderChanged && now - this.movedAt < this.o.retryMs) return []
    this.movedAt = now
    this.proposedAt.fill(now)
    return this.pending
  }
}

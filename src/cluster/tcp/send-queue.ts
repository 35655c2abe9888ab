// The frames waiting for one outbound socket. Bun's `socket.write` does not buffer (it returns how
// many bytes the kernel took), so unsent bytes stay here until the socket drains.
import type { Socket } from 'bun'

/** Small frames are copied into one write of up to this size: one syscall instead of one per frame. */
export const BATCH_BYTES = 64 * 1024

// Bun copies what `write` accepts before returning, so one scratch buffer serves every batch.
const scratch = new Uint8Array(BATCH_BYTES)

/** Frames waiting for one outbound socket, oldest first. */
export class SendQueue {
  private frames: Uint8Array[] = []
  private head = 0
  /** Bytes of the head frame already written to the current socket. */
  private offset = 0
  /** Unwritten bytes. */
  bytes = 0
  /** Index after the last urgent frame: urgent frames keep their own order, ahead of the rest. */
  private urgentEnd = 0
  /**
   * The socket that last took fewer bytes than offered: its kernel buffer is full until Bun calls
   * `drain`. Writing to it again before then copies a whole batch for nothing; under a backlog that
   * was once per queued frame, and a node flooded by a client spent its loop there.
   */
  private full: Socket<unknown> | null = null

  get empty() {
    return this.head === this.frames.length
  }

  push(frame: Uint8Array) {
    this.frames.push(frame)
    this.bytes += frame.length
  }

  /** Queues `frame` ahead of every frame not yet started (a link's ping must not wait behind a backlog). */
  pushUrgent(frame: Uint8Array) {
    const at = Math.max(this.offset > 0 ? this.head + 1 : this.head, this.urgentEnd)
    this.frames.splice(at, 0, frame)
    this.urgentEnd = at + 1
    this.bytes += frame.length
  }

  /** Moves `other`'s frames behind ours. A partly written frame starts over: the new connection never saw its start. */
  append(other: SendQueue) {
    for (let i = other.head; i < other.frames.length; i++) this.push(other.frames[i]!)
    other.clear()
  }

  clear() {
    this.frames = []
    this.head = this.offset = this.bytes = this.urgentEnd = 0
  }

  /** Writes until the socket stops taking bytes; returns how many frames were completed and bytes written. */
  writeTo(socket: Socket<unknown>): { frames: number; bytes: number } {
    let frames = 0
    let bytes = 0
    if (socket === this.full) return { frames, bytes }
    while (!this.empty) {
      const chunk = this.nextChunk()
      const written = socket.write(chunk)
      if (written > 0) {
        bytes += written
        frames += this.advance(written)
      }
      if (written < chunk.length) {
        this.full = socket
        break
      }
    }
    return { frames, bytes }
  }

  /** Bun's `drain` on `socket`: it takes bytes again. Call before `writeTo`. */
  drained(socket: Socket<unknown>) {
    if (this.full === socket) this.full = null
  }

  private nextChunk(): Uint8Array {
    const first = this.frames[this.head]!
    let size = first.length - this.offset
    let end = this.head + 1
    while (end < this.frames.length && size + this.frames[end]!.length <= BATCH_BYTES) size += this.frames[end++]!.length
    if (end === this.head + 1) return first.subarray(this.offset)
    scratch.set(first.subarray(this.offset), 0)
    for (let i = this.head + 1, at = first.length - this.offset; i < end; at += this.frames[i++]!.length) {
      scratch.set(this.frames[i]!, at)
    }
    return scratch.subarray(0, size)
  }

  private advance(written: number): number {
    this.bytes -= written
    let completed = 0
    let left = written
    while (left > 0) {
      const remaining = this.frames[this.head]!.length - this.offset
      if (left < remaining) {
        this.offset += left
        break
      }
      left -= remaining
      this.frames[this.head++] = undefined as never // let the sent frame be collected now
      this.offset = 0
      completed++
    }
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head)
      this.urgentEnd = Math.max(0, this.urgentEnd - this.head)
      this.head = 0
    }
    return completed
  }
}

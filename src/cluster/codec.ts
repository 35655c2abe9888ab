// Cluster frames: a 4-byte big-endian body length, then one plain msgpack value. The length
// prefix lets the decoder wait for a whole frame without re-parsing, and makes the size cap
// checkable before the body is buffered.
import { Packr, RESERVE_START_SPACE, RESET_BUFFER_MODE, Unpackr } from 'msgpackr'

export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024

const HEADER_BYTES = 4
// Plain msgpack both ways (msgpackr's defaults add its own "records" extension).
const packr = new Packr({ useRecords: false, mapsAsObjects: true })
// Not `trusted`: msgpackr then forgets any record definitions a peer sends after each value, so
// one connection cannot change how another's bytes decode.
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true })

export class FrameError extends Error {
  constructor(
    readonly code: 'frame_too_large' | 'bad_msgpack',
    message: string,
  ) {
    super(message)
    this.name = 'FrameError'
  }
}

export function encodeFrame(message: unknown): Uint8Array {
  // msgpackr writes after 4 reserved bytes into its own reusable buffer; the copy is the only
  // allocation, so a queued frame never pins msgpackr's shared buffer.
  const packed = packr.pack(message, RESERVE_START_SPACE | HEADER_BYTES | RESET_BUFFER_MODE)
  const frame = new Uint8Array(packed)
  // byte by byte: a DataView per frame would double the cost of encoding a small message
  const length = frame.length - HEADER_BYTES
  frame[0] = length >>> 24
  frame[1] = length >>> 16
  frame[2] = length >>> 8
  frame[3] = length
  return frame
}

/** What `FrameDecoder.next` returns when no whole frame is buffered (msgpack can decode to undefined). */
export const NO_FRAME: unique symbol = Symbol('no frame')

export class FrameDecoder {
  // Unconsumed input: `chunks[0]` starting at `offset`, then the rest of `chunks` whole.
  private chunks: Uint8Array[] = []
  private offset = 0
  private buffered = 0
  /** Body length of the frame being assembled, or -1 while its header is incomplete. */
  private bodyLength = -1
  private failure: FrameError | null = null

  /** May be raised later: a connection is held to small frames until it has authenticated. */
  constructor(public maxFrameBytes: number) {}

  /** Buffers `chunk` and returns every frame now complete. */
  push(chunk: Uint8Array): unknown[] {
    this.append(chunk)
    const values: unknown[] = []
    for (let value = this.next(); value !== NO_FRAME; value = this.next()) values.push(value)
    return values
  }

  /** Buffers `chunk` without decoding; `next` then takes frames one at a time. */
  append(chunk: Uint8Array): void {
    if (this.failure) throw this.failure
    if (chunk.length > 0) {
      this.chunks.push(chunk)
      this.buffered += chunk.length
    }
  }

  /**
   * The next complete frame, or NO_FRAME. One at a time, so a caller may change `maxFrameBytes`
   * between frames (a connection allowed bigger frames once it authenticated).
   */
  next(): unknown {
    if (this.failure) throw this.failure
    if (this.bodyLength < 0) {
      if (this.buffered < HEADER_BYTES) return NO_FRAME
      const header = this.take(HEADER_BYTES)
      this.bodyLength = ((header[0]! << 24) | (header[1]! << 16) | (header[2]! << 8) | header[3]!) >>> 0
    }
    // Checked on every call, not only when the header arrives: the limit may have changed.
    if (this.bodyLength > this.maxFrameBytes) {
      this.fail('frame_too_large', `frame of ${this.bodyLength} bytes exceeds the limit of ${this.maxFrameBytes}`)
    }
    if (this.buffered < this.bodyLength) return NO_FRAME
    const body = this.take(this.bodyLength)
    this.bodyLength = -1
    try {
      return unpackr.unpack(body)
    } catch (error) {
      this.fail('bad_msgpack', `frame body is not one valid msgpack value: ${error instanceof Error ? error.message : String(error)}`.slice(0, 200))
    }
  }

  private fail(code: FrameError['code'], message: string): never {
    this.chunks = []
    this.buffered = 0
    this.failure = new FrameError(code, message)
    throw this.failure
  }

  /** Removes `n` buffered bytes; copies only when they span chunks, so each byte is copied at most once. */
  private take(n: number): Uint8Array {
    this.buffered -= n
    const head = this.chunks[0]
    if (head && head.length - this.offset >= n) {
      const bytes = head.subarray(this.offset, this.offset + n)
      this.offset += n
      if (this.offset === head.length) this.dropHead()
      return bytes
    }
    const bytes = new Uint8Array(n)
    let filled = 0
    let index = 0
    while (filled < n) {
      const chunk = this.chunks[index]!
      const count = Math.min(n - filled, chunk.length - this.offset)
      bytes.set(chunk.subarray(this.offset, this.offset + count), filled)
      filled += count
      this.offset += count
      if (this.offset === chunk.length) {
        index++
        this.offset = 0
      }
    }
    // One splice per frame, not one shift per chunk: a frame split into many tiny chunks stays linear.
    this.chunks.splice(0, index)
    return bytes
  }

  private dropHead() {
    this.chunks.shift()
    this.offset = 0
  }
}

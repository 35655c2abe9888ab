import { describe, expect, test } from 'bun:test'
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder, FrameError } from '../../src/cluster/codec'

const chat = { type: 'chat', username: 'ada', message: 'héllo ✓', nodeAddress: 'bun://S@127.0.0.1:2551', timestamp: 1_700_000_000_000 }

/** A frame with an arbitrary body, for bytes encodeFrame would never produce. */
function rawFrame(body: number[] | Uint8Array, declaredLength = body.length): Uint8Array {
  const frame = new Uint8Array(4 + body.length)
  new DataView(frame.buffer).setUint32(0, declaredLength)
  frame.set(body, 4)
  return frame
}

function frameError(fn: () => unknown): FrameError {
  try {
    fn()
  } catch (error) {
    if (error instanceof FrameError) return error
    throw error
  }
  throw new Error('expected a FrameError')
}

describe('codec', () => {
  test('round-trips plain objects, with a big-endian length prefix', () => {
    const frame = encodeFrame(chat)
    expect(new DataView(frame.buffer, frame.byteOffset).getUint32(0)).toBe(frame.length - 4)
    expect(new FrameDecoder(DEFAULT_MAX_FRAME_BYTES).push(frame)).toEqual([chat])
  })

  test('frames own their bytes: encoding again does not change an earlier frame', () => {
    const first = encodeFrame(chat)
    const copy = first.slice()
    encodeFrame({ type: 'presence_leave', username: 'zed' })
    expect(first).toEqual(copy)
    expect(first.byteOffset).toBe(0)
    expect(first.buffer.byteLength).toBe(first.length)
  })

  test('decodes plain msgpack: maps become plain objects, no msgpackr records', () => {
    const frame = encodeFrame({ nested: { a: 1 }, list: [{ b: 2 }, { b: 3 }] })
    const [value] = new FrameDecoder(1024).push(frame) as [{ nested: object; list: object[] }]
    expect(value).toEqual({ nested: { a: 1 }, list: [{ b: 2 }, { b: 3 }] })
    expect(Object.getPrototypeOf(value.nested)).toBe(Object.prototype)
    // a msgpack map header, not a msgpackr record (0x40-0x7f or a 0x72 extension)
    const first = frame[4]!
    expect((first & 0xf0) === 0x80 || first === 0xde || first === 0xdf).toBe(true)
  })

  test('a frame split at every byte offset decodes once', () => {
    const frame = encodeFrame(chat)
    for (let cut = 0; cut <= frame.length; cut++) {
      const decoder = new FrameDecoder(1024)
      const values = [...decoder.push(frame.subarray(0, cut)), ...decoder.push(frame.subarray(cut))]
      expect(values).toEqual([chat])
    }
  })

  test('a frame fed one byte at a time decodes once, at the last byte', () => {
    const frame = encodeFrame(chat)
    const decoder = new FrameDecoder(1024)
    for (let i = 0; i < frame.length - 1; i++) expect(decoder.push(frame.subarray(i, i + 1))).toEqual([])
    expect(decoder.push(frame.subarray(frame.length - 1))).toEqual([chat])
  })

  test('several frames in one chunk, with a partial one carried over', () => {
    const messages = [1, 2, 3, 4].map((n) => ({ type: 'presence_leave', username: `user${n}` }))
    const bytes = Buffer.concat(messages.map(encodeFrame))
    const decoder = new FrameDecoder(1024)
    const cut = bytes.length - 5
    expect(decoder.push(bytes.subarray(0, cut))).toEqual(messages.slice(0, 3))
    expect(decoder.push(bytes.subarray(cut))).toEqual(messages.slice(3))
    expect(decoder.push(new Uint8Array(0))).toEqual([])
  })

  test('a 4 MB frame in 64 KB chunks decodes fast', () => {
    const message = { type: 'chat', username: 'big', message: 'x'.repeat(4 * 1024 * 1024), nodeAddress: 'a', timestamp: 1 }
    const frame = encodeFrame(message)
    // Measured against decoding the same frame in one piece in the same run, so a machine busy
    // with other work does not fail it: re-parsing on every chunk (64 chunks) took ~1.4 s, ~30x that.
    const whole = performance.now()
    const inOnePiece = new FrameDecoder(8 * 1024 * 1024).push(frame)
    const once = performance.now() - whole
    expect(inOnePiece).toEqual([message])
    const decoder = new FrameDecoder(8 * 1024 * 1024)
    const started = performance.now()
    const values: unknown[] = []
    for (let at = 0; at < frame.length; at += 64 * 1024) values.push(...decoder.push(frame.subarray(at, at + 64 * 1024)))
    const elapsed = performance.now() - started
    expect(values).toEqual([message])
    expect(elapsed).toBeLessThan(6 * once + 100)
  })

  test('a declared length over the limit is rejected as soon as the header arrives', () => {
    const decoder = new FrameDecoder(1000)
    const error = frameError(() => decoder.push(rawFrame([], 1001).subarray(0, 4)))
    expect(error.code).toBe('frame_too_large')
    expect(error.message).toContain('1001')
    // the decoder stays failed: the connection is to be closed
    expect(frameError(() => decoder.push(new Uint8Array([0x90]))).code).toBe('frame_too_large')
  })

  test('a frame of exactly the limit is accepted', () => {
    const body = encodeFrame('y'.repeat(100)).subarray(4)
    expect(new FrameDecoder(body.length).push(rawFrame(body))).toEqual(['y'.repeat(100)])
  })

  test('a garbage body is rejected', () => {
    for (const body of [[], [0xd9], [0xdc, 0xff, 0xff], [0xd4, 0x72, 0x41]]) {
      expect(frameError(() => new FrameDecoder(1024).push(rawFrame(body))).code).toBe('bad_msgpack')
    }
  })

  test('trailing bytes after the value are rejected', () => {
    const body = [...encodeFrame({ a: 1 }).subarray(4), 0x01]
    const error = frameError(() => new FrameDecoder(1024).push(rawFrame(body)))
    expect(error.code).toBe('bad_msgpack')
  })

  test('values before a bad frame in the same chunk are not returned; the decoder throws', () => {
    const bytes = Buffer.concat([encodeFrame({ a: 1 }), rawFrame([0xc4])])
    expect(frameError(() => new FrameDecoder(1024).push(bytes)).code).toBe('bad_msgpack')
  })
})

// The simulator's checks can fail: each test plants one fault in the real nodes (a line published
// twice, a resume that skips a line, an ack with the wrong id, a dedup that forgets, one node's
// line that differs, a false `complete: false`) and expects the simulator to name it within a
// few seeds. Run in-process (the patches live in this thread), one seed after another.
import { afterEach, expect, setDefaultTimeout, test } from 'bun:test'
import { ChatRoom } from '../../../src/chat/room'
import { Transcript } from '../../../src/transcript/transcript'
import { SimulationFailure } from '../simulator'
import { runWholeSeed } from './world'

// biome-ignore lint: reaching into private methods is the point here
type Patchable = Record<string, (...args: any[]) => any>
const restores: Array<() => void> = []

function patch(prototype: object, method: string, replace: (original: (...args: any[]) => any) => (this: any, ...args: any[]) => any): void {
  const target = prototype as Patchable
  const original = target[method]!
  target[method] = replace(original)
  restores.push(() => void (target[method] = original))
}

afterEach(() => {
  while (restores.length > 0) restores.pop()!()
})

async function firstFailure(seeds = 40): Promise<SimulationFailure | null> {
  for (let seed = 0; seed < seeds; seed++) {
    try {
      await runWholeSeed(seed)
    } catch (error) {
      if (error instanceof SimulationFailure) return error
      throw error
    }
  }
  return null
}

// Each runs whole seeds until one fails: seconds on a busy 2-core machine.
setDefaultTimeout(60_000)

let calls = 0
const now = (every: number) => ++calls % every === 0

test('a line published twice to a node\'s users is caught', async () => {
  patch(ChatRoom.prototype, 'publishLine', (original) =>
    function (this: unknown, line: unknown) {
      original.call(this, line)
      if (now(50)) original.call(this, line)
    },
  )
  expect((await firstFailure())?.invariant).toBe('Client: once and in order')
})

test('a resume that skips the first line after `since` is caught', async () => {
  patch(ChatRoom.prototype, 'historyAfter', (original) =>
    function (this: unknown, since: number) {
      const history = original.call(this, since) as { lines: unknown[] }
      return { ...history, lines: history.lines.slice(1) }
    },
  )
  expect((await firstFailure())?.invariant).toBe('Client: no gap')
})

test('an ack naming the wrong id is caught', async () => {
  patch(ChatRoom.prototype, 'ack', (original) =>
    function (this: unknown, entry: unknown, id: number) {
      original.call(this, entry, now(20) ? id + 1 : id)
    },
  )
  expect((await firstFailure())?.invariant).toMatch(/^Chat: (acked means in the transcript at that id|one id per clientMsgId)$/)
})

test('a transcript that forgets a clientMsgId (no dedup) is caught', async () => {
  patch(Transcript.prototype, 'idOfKey', () => () => undefined)
  patch(Transcript.prototype, 'remember', () => () => {})
  expect((await firstFailure(80))?.invariant).toMatch(/^Chat: (exactly once in the transcript|one id per clientMsgId|acked means in the transcript at that id)$/)
})

test('one node holding another line at an id is caught as it applies it', async () => {
  patch(Transcript.prototype, 'push', (original) =>
    function (this: { epoch: string }, line: { type: string; message?: string }) {
      // Only on node 1's transcripts: the others keep the real line.
      const altered = line.type === 'chat' && (this as unknown as { mark?: boolean }).mark ? { ...line, message: `${line.message}!` } : line
      original.call(this, altered)
    },
  )
  patch(Transcript.prototype, 'apply', (original) =>
    function (this: { mark?: boolean; epoch: string }, index: number, entry: unknown) {
      this.mark ??= now(3)
      original.call(this, index, entry)
    },
  )
  expect((await firstFailure())?.invariant).toMatch(/^(One transcript: same line at the same id|Chat: nothing invented)$/)
})

test('a `complete: false` said while the node holds every line is caught', async () => {
  patch(ChatRoom.prototype, 'historyAfter', (original) =>
    function (this: unknown, since: number) {
      return { ...(original.call(this, since) as object), complete: false }
    },
  )
  expect((await firstFailure())?.invariant).toBe('Client: complete:false only when lines are lacking')
})

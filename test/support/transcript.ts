// The transcript as the tests see it: acknowledged sends, the lines a client received (its history
// frames and live lines, in arrival order), and a node's whole held transcript via /api/messages.
//
//   const ack = await sendAcked(alice, 'hello')          // { clientMsgId, id }
//   const lines = receivedLines(bob)                       // [{ id, type, message, username }, ...]
//   expect(checkStream(lines).duplicates).toEqual([])
//   const held = await fetchTranscript(node)               // every line the node holds, oldest first
import type { NodeHandle } from './cluster'
import type { ChatClient, Frame } from './ws-client'

export interface LineSeen {
  id: number
  type: 'chat' | 'system'
  message: string
  username: string
  /** Arrived in a history frame (true) or live (false). */
  history: boolean
}

let sent = 0

/** A clientMsgId unique in this test process. */
export function newClientMsgId(prefix = 't'): string {
  return `${prefix}-${process.pid}-${++sent}-${Math.random().toString(36).slice(2, 8)}`
}

/** Sends a typed chat with a clientMsgId (without waiting). */
export function sendTyped(client: ChatClient, message: string, clientMsgId = newClientMsgId()): string {
  client.send(JSON.stringify({ type: 'chat', message, clientMsgId }))
  return clientMsgId
}

/** Sends and resolves with the ack (rejects on a refusal frame meant for it or at the timeout). */
export async function sendAcked(client: ChatClient, message: string, timeoutMs = 10_000, clientMsgId = newClientMsgId()): Promise<{ clientMsgId: string; id: number }> {
  sendTyped(client, message, clientMsgId)
  const ack = await client.next((f) => f.type === 'ack' && f.clientMsgId === clientMsgId, timeoutMs)
  return { clientMsgId, id: ack.id }
}

function lineOf(f: Frame, history: boolean): LineSeen | null {
  if ((f.type !== 'chat' && f.type !== 'system') || typeof f.id !== 'number') return null
  return { id: f.id, type: f.type, message: String(f.message), username: String(f.username ?? ''), history }
}

/** Every line a client received, in arrival order: the messages of its history frames and its live lines. */
export function receivedLines(client: ChatClient): LineSeen[] {
  const out: LineSeen[] = []
  for (const f of client.frames) {
    if (f.type === 'history' && Array.isArray(f.messages)) {
      for (const m of f.messages) {
        const line = lineOf(m, true)
        if (line) out.push(line)
      }
    } else {
      const line = lineOf(f, false)
      if (line) out.push(line)
    }
  }
  return out
}

/** What is wrong with a stream of lines: ids seen twice, ids going backwards. */
export function checkStream(lines: LineSeen[]): { duplicates: number[]; backwards: number[] } {
  const seen = new Set<number>()
  const duplicates: number[] = []
  const backwards: number[] = []
  let last = 0
  for (const { id } of lines) {
    if (seen.has(id)) duplicates.push(id)
    else if (id < last) backwards.push(id)
    seen.add(id)
    last = Math.max(last, id)
  }
  return { duplicates, backwards }
}

/** `id → text` of the lines, for comparing two users' views of the transcript. */
export function idMap(lines: LineSeen[]): Map<number, string> {
  return new Map(lines.map((l) => [l.id, `${l.type}:${l.username}:${l.message}`]))
}

/** Every line `node` holds, oldest first, paging /api/messages back to the start. */
export async function fetchTranscript(node: NodeHandle, pageLimit = 500): Promise<{ epoch: string; lines: LineSeen[]; complete: boolean }> {
  const pages: LineSeen[][] = []
  let before: number | undefined
  let epoch = ''
  let complete = true
  for (let i = 0; i < 1000; i++) {
    const query = before === undefined ? `limit=${pageLimit}` : `before=${before}&limit=${pageLimit}`
    const response = await node.fetch(`/api/messages?${query}`)
    if (!response.ok) throw new Error(`GET /api/messages?${query} at ${node.name}: HTTP ${response.status}`)
    const page = (await response.json()) as { epoch: string; messages: Frame[]; complete: boolean }
    if (epoch === '') epoch = page.epoch
    else if (page.epoch !== epoch) throw new Error(`${node.name}: epoch changed while paging (${epoch} → ${page.epoch})`)
    const lines = page.messages.map((m) => lineOf(m, true)).filter((l): l is LineSeen => l !== null)
    pages.unshift(lines)
    if (lines.length < pageLimit) {
      complete = page.complete
      break
    }
    before = lines[0]!.id
  }
  return { epoch, lines: pages.flat(), complete }
}

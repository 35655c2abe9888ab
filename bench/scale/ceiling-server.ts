// The one-process Bun ceiling: a bare Bun.serve whose sockets subscribe to one topic and whose
// every text frame is published, as the chat frame our node sends, to all of them (the sender
// included). No presence, no validation beyond a username, no cluster: what Bun alone can push
// on this machine, the reference bench/scale.ts measures the others against.
//
//   bun run bench/scale/ceiling-server.ts --port 3001
//
// `ws://127.0.0.1:PORT/ws/chat?username=NAME` answers with a welcome frame, as our node does.
// Prints `ready PORT` once it listens; exits at once on SIGTERM/SIGINT.
import { parseArgs } from 'node:util'
import { answerMemoryRequests } from '../memory/stats'

const { values } = parseArgs({ args: Bun.argv.slice(2), options: { port: { type: 'string' } }, strict: true })
const port = Number(values.port)
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: ceiling-server.ts --port N')
  process.exit(2)
}
const nodeAddress = `bun-ceiling@127.0.0.1:${port}`
const TOPIC = 'chat'

const server = Bun.serve<{ username: string }>({
  hostname: '127.0.0.1',
  port,
  fetch(request, srv) {
    const username = new URL(request.url).searchParams.get('username') ?? ''
    if (!username) return new Response('username required', { status: 400 })
    if (srv.upgrade(request, { data: { username } })) return undefined
    return new Response('expected a WebSocket upgrade', { status: 426 })
  },
  websocket: {
    maxPayloadLength: 64 * 1024,
    backpressureLimit: 4 * 1024 * 1024,
    closeOnBackpressureLimit: true,
    open(ws) {
      ws.subscribe(TOPIC)
      ws.send(JSON.stringify({ type: 'welcome', username: ws.data.username, nodeAddress }))
    },
    message(ws, message) {
      if (typeof message !== 'string' || message.trim() === '') return
      server.publish(TOPIC, JSON.stringify({ type: 'chat', username: ws.data.username, message, nodeAddress, timestamp: Date.now() }))
    },
  },
})
answerMemoryRequests()
console.log(`ready ${server.port}`)
process.on('SIGTERM', () => process.exit(0))
process.on('SIGINT', () => process.exit(0))

// The comparison baseline: a minimal Socket.IO chat node, clustered through Redis pub/sub with
// @socket.io/redis-adapter, doing what our node does for a chat message: every user of every
// node, the sender included, receives {type, username, message, nodeAddress, timestamp}.
//
//   bun run bench/socketio-baseline/server.ts --port 3001 --redis redis://127.0.0.1:6390 [--name n1]
//
// The client connects with `auth: { username }` (or `?username=`) and emits `chat` with a string.
// Messages that are not strings, blank, or longer than 2,000 characters are ignored, as ours
// refuses them. It prints `ready <port>` once it listens and its Redis clients are connected,
// and exits (explicitly: a Socket.IO process otherwise lingers seconds after closing) on
// SIGTERM/SIGINT or when its Redis connection is lost.
import { createServer } from 'node:http'
import { parseArgs } from 'node:util'
import { createAdapter } from '@socket.io/redis-adapter'
import { createClient } from 'redis'
import { Server } from 'socket.io'

const MAX_MESSAGE_LENGTH = 2000

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    name: { type: 'string' },
  },
  strict: true,
})
const port = Number(values.port)
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: server.ts --port N [--host H] [--redis redis://H:P] [--name NAME]')
  process.exit(2)
}
const nodeAddress = `socket.io://${values.name ?? 'node'}@${values.host}:${port}`

const exit = (code: number) => {
  // No graceful close: the benchmark is done with this node, and a clean close waits on timers.
  process.exit(code)
}

const pub = createClient({ url: values.redis })
const sub = pub.duplicate()
for (const client of [pub, sub]) {
  client.on('error', (error: Error) => {
    console.error(`[${nodeAddress}] redis: ${error.message}`)
    exit(1)
  })
}
await Promise.all([pub.connect(), sub.connect()])

const http = createServer((_req, res) => {
  res.writeHead(404).end()
})
const io = new Server(http, {
  adapter: createAdapter(pub, sub),
  // Like our node: plain WebSocket, no long-polling fallback, no per-message compression.
  transports: ['websocket'],
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
})

io.on('connection', (socket) => {
  const auth = socket.handshake.auth as { username?: unknown }
  const username = String(auth.username ?? socket.handshake.query.username ?? '').trim()
  if (!username) {
    socket.disconnect(true)
    return
  }
  socket.on('chat', (message: unknown) => {
    if (typeof message !== 'string' || message.length > MAX_MESSAGE_LENGTH || !message.trim()) return
    io.emit('chat', { type: 'chat', username, message, nodeAddress, timestamp: Date.now() })
  })
})

http.listen(port, values.host, () => console.log(`ready ${port}`))
process.on('SIGTERM', () => exit(0))
process.on('SIGINT', () => exit(0))

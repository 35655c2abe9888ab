// Command line entry: parse the configuration, start the cluster node and the HTTP server,
// and leave the cluster cleanly on SIGINT/SIGTERM.
import { parseConfig } from './config'
import { ChatRoom } from './chat/room'
import { CloseCode } from './chat/protocol'
import { ClusterNode } from './cluster/node'
import { createApp, Sockets } from './http/app'

const parsed = parseConfig(process.argv.slice(2), process.env)
if (!parsed.ok) {
  if ('help' in parsed) {
    console.log(parsed.help)
    process.exit(0)
  }
  console.error(`error: ${parsed.error}`)
  process.exit(2)
}
const config = parsed.config
const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`)

const sockets = new Sockets()
let publish: (json: string) => void = () => {}
let room: ChatRoom | undefined
const node = new ClusterNode(
  config,
  {
    onView: (view, events) =>
      room?.setMembers(node.peerAddresses(), events.some((e) => e.type === 'up' && e.id === view.selfId)),
    onChat: (peer, message) => room?.onPeerMessage(peer, message),
    onPeerConnected: (address) => room?.sendSnapshot(address),
  },
  log,
)
room = new ChatRoom({
  selfAddress: node.address,
  lang: config.lang,
  maxMessageLength: config.maxMessageLength,
  now: Date.now,
  publish: (json) => publish(json),
  broadcast: (message) => node.broadcast(message),
  sendTo: (address, message) => node.send([address], message),
  disconnect: (username, code, reason) => sockets.close(username, code, reason),
})

try {
  await node.start()
} catch (error) {
  console.error(`error: cannot listen on cluster port ${config.host}:${config.clusterPort}: ${(error as Error).message}`)
  process.exit(1)
}
const app = createApp({ room, selfAddress: node.address, clusterView: () => node.view(), transportStats: () => node.transportStats, log }, sockets)
try {
  app.listen({ hostname: config.httpHost, port: config.httpPort, development: false })
} catch (error) {
  console.error(`error: cannot listen on HTTP port ${config.httpHost}:${config.httpPort}: ${(error as Error).message}`)
  await node.stop()
  process.exit(1)
}
publish = (json) => void app.server?.publish('chat', json)
log(`HTTP and WebSocket on http://${config.host}:${config.httpPort} (bound to ${config.httpHost})`)

let stopping = false
async function shutdown(signal: string) {
  if (stopping) return
  stopping = true
  log(`${signal}: leaving the cluster`)
  // Refuse new connections first, so pages reconnect to a node that stays, not to this one.
  void app.server?.stop(false)
  sockets.closeAll(CloseCode.goingAway, 'server shutting down')
  const left = await node.leave(5000)
  if (!left) log('leave was not confirmed within 5 s; exiting anyway')
  await app.stop(true)
  await node.stop()
  log('stopped')
  process.exit(0)
}
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('SIGTERM', () => void shutdown('SIGTERM'))

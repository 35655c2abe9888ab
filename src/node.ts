// The composition root: builds one whole node from its configuration and an `io` record that
// holds every outside dependency. Wiring goes one way: the cluster shell first, then the chat
// room that sends through it, then the gateway and HTTP app that feed the room; `start` connects
// the cluster's reports to the room. Nothing here decides policy.
import { DEFAULTS, type Config } from './config'
import type { Compaction } from './cluster/membership'
import { TICK_MS } from './cluster/timing'
import { validateTranscriptEntry, validateTranscriptSnapshot } from './transcript/entries'
import { Outbox } from './transcript/outbox'
import { Transcript } from './transcript/transcript'
import { ChatGateway } from './chat/gateway'
import { anonymous, type Identify } from './chat/identity'
import { validateChatMessage, type ChatMessage } from './chat/messages'
import { ChatRoom } from './chat/room'
import { Sockets, type Fanout } from './chat/sockets'
import { formatAddress, urlHost } from './cluster/address'
import { ClusterNode } from './cluster/node'
import { createApp, TopicFanout } from './http/app'
import type { NodeIo } from './io'
import type { MembershipView } from './cluster/membership'
import { createMetrics } from './metrics'
import { DEFAULT_LOAD, LagMonitor } from './load'
import { err, ok, type Result } from './result'

/** Everything of a node but HTTP: what the whole-node simulator runs. */
export interface ChatNode {
  readonly address: string
  readonly cluster: ClusterNode<ChatMessage>
  readonly room: ChatRoom
  /** The replicated chat transcript this node applies (read by the whole-node simulator's checks). */
  readonly transcript: Transcript
  readonly gateway: ChatGateway
  readonly sockets: Sockets
  /** Event-loop lag; sheds client work while the node is behind. */
  readonly load: LagMonitor
  start(): Promise<void>
  /** Leaves the cluster (up to `timeoutMs`); true when the removal was confirmed. */
  leave(timeoutMs: number): Promise<boolean>
  stop(): Promise<void>
}

export type ChatNodeConfig = Pick<Config, 'systemName' | 'host' | 'clusterPort' | 'httpPort' | 'seeds' | 'timing' | 'lang' | 'maxMessageLength' | 'rateLimit' | 'rateBurst'> &
  Partial<Pick<Config, 'maxFanout' | 'historyOnJoin' | 'historySize' | 'maxPending'>> & {
    compaction?: Compaction
    /** Room size from which joins and leaves are gathered into shared lines (presence-lines.ts); the simulator sets it small. */
    gatherFrom?: number
  }

export function createChatNode(config: ChatNodeConfig, io: NodeIo, fanout: Fanout): ChatNode {
  const address = formatAddress({ systemName: config.systemName, host: config.host, port: config.clusterPort })
  const transcript = new Transcript(config.historySize ?? DEFAULTS.historySize)
  // Proposals lost with a failed leader are proposed again after an election timeout without progress.
  const outbox = new Outbox({ maxPending: config.maxPending ?? DEFAULTS.maxPending, retryMs: config.timing.electionTicksMin * TICK_MS })
  const cluster = new ClusterNode<ChatMessage>(
    { systemName: config.systemName, address, httpUrl: `http://${urlHost(config.host)}:${config.httpPort}`, seeds: config.seeds, timing: config.timing, compaction: config.compaction },
    io,
    validateChatMessage,
    { machine: transcript, validateEntry: validateTranscriptEntry, validateSnapshot: validateTranscriptSnapshot },
  )
  const sockets = new Sockets()
  const room = new ChatRoom({
    selfAddress: address,
    lang: config.lang,
    maxMessageLength: config.maxMessageLength,
    now: io.clock.now,
    publish: (json) => fanout.publish(json),
    broadcast: (message) => cluster.broadcast(message),
    sendTo: (to, message) => cluster.send(to, message),
    disconnect: (username, code, reason) => sockets.close(username, code, reason),
    fanoutPerSecond: config.maxFanout,
    fanoutShare: () => load.fanoutShare,
    sendToUser: (username, json) => sockets.send(username, json),
    transcript,
    outbox,
    propose: (entries) => cluster.propose(entries),
    selfId: () => cluster.selfId,
    leaderId: () => cluster.leaderId,
    takesProposals: () => cluster.takesProposals,
    historyOnJoin: config.historyOnJoin ?? DEFAULTS.historyOnJoin,
    after: io.clock.after,
    gatherFrom: config.gatherFrom,
  })
  const load = new LagMonitor(io.clock, DEFAULT_LOAD, io.cpuMs)
  let stopLoad = () => {}
  const gateway = new ChatGateway({
    room,
    sockets,
    selfAddress: address,
    now: io.clock.now,
    rateLimit: { perSecond: config.rateLimit, burst: config.rateBurst },
    load,
  })
  return {
    address,
    cluster,
    room,
    transcript,
    gateway,
    sockets,
    load,
    start: () => {
      stopLoad = load.start()
      return cluster.start({
        onMembers: (peers, selfUp) => room.setMembers(peers, selfUp),
        onMessage: (peer, message) => room.onPeerMessage(peer, message),
        onPeerConnected: (to) => room.sendSnapshot(to),
        checkProposal: (peer, from, entries) => room.checkProposal(peer, from, entries),
        afterStep: () => room.sync(),
      })
    },
    leave: (timeoutMs) => cluster.leave(timeoutMs),
    stop: () => {
      stopLoad()
      return cluster.stop()
    },
  }
}

export interface Node {
  readonly address: string
  /** Starts the cluster node, then serves HTTP. Throws a StartError naming the port that failed. */
  start(): Promise<void>
  /** Refuses new users, tells connected ones to go elsewhere, leaves the cluster, stops. True when the leave was confirmed. */
  shutdown(leaveTimeoutMs: number): Promise<boolean>
  stop(): Promise<void>
}

export class StartError extends Error {
  constructor(readonly what: 'cluster' | 'http', message: string) {
    super(message)
  }
}

/** `identify`: how a socket's user is named; `anonymous` (the `username` parameter) unless tokens are required. */
export function createNode(config: Config, io: NodeIo, identify: Identify = anonymous): Node {
  const fanout = new TopicFanout()
  const chat = createChatNode(config, io, fanout)
  let draining = false
  const metrics = createMetrics({
    gateway: chat.gateway,
    room: chat.room,
    view: () => chat.cluster.view(),
    cluster: chat.cluster,
    transport: () => chat.cluster.transportStats,
    sent: () => ({ frames: fanout.stats.frames + chat.gateway.stats.framesOut, bytes: fanout.stats.bytes + chat.gateway.stats.bytesOut }),
  })
  const app = createApp({
    room: chat.room,
    gateway: chat.gateway,
    selfAddress: chat.address,
    roles: config.roles,
    clusterView: () => chat.cluster.view(),
    transportStats: () => chat.cluster.transportStats,
    readiness: () => readiness(chat.cluster.view(), draining),
    metrics,
    log: io.log,
    identify,
    allowedOrigins: config.allowedOrigins,
    connectionCaps: { perIp: config.maxConnectionsPerIp, total: config.maxConnections, connectsPerIpPerSecond: config.connectRate, overloaded: () => chat.load.overloaded() || !chat.gateway.admitsJoin() },
  })
  return {
    address: chat.address,
    async start() {
      try {
        await chat.start()
      } catch (error) {
        throw new StartError('cluster', `cannot listen on cluster port ${config.host}:${config.clusterPort}: ${(error as Error).message}`)
      }
      try {
        app.listen({ hostname: config.httpHost, port: config.httpPort, development: false })
      } catch (error) {
        await chat.stop()
        throw new StartError('http', `cannot listen on HTTP port ${config.httpHost}:${config.httpPort}: ${(error as Error).message}`)
      }
      fanout.attach(app.server, () => chat.gateway.sessionCount)
      io.log(`HTTP and WebSocket on http://${urlHost(config.host)}:${config.httpPort} (bound to ${config.httpHost})`)
    },
    async shutdown(leaveTimeoutMs) {
      draining = true
      // Refuse new connections first, so pages reconnect to a node that stays, not to this one;
      // then send every user to the members that stay.
      void app.server?.stop(false)
      const others = chat.cluster
        .view()
        .members.filter((m) => m.address !== chat.address && m.status === 'Up' && m.reachable)
        .map((m) => ({ nodeAddress: m.address, httpUrl: m.httpUrl }))
      const users = chat.gateway.sessionCount
      // Users move once the other members have their leaves (the links acknowledged everything), or after 300 ms.
      await chat.gateway.drain(others, () => until(io.clock, () => chat.cluster.queuedBytes() === 0, DRAIN_DELIVERY_MS))
      io.log(`draining: ${users} users sent to ${others.length} other members`, { event: 'drain', users, members: others.length })
      const left = await chat.leave(leaveTimeoutMs)
      await app.stop(true)
      await chat.stop()
      return left
    },
    async stop() {
      await app.stop(true)
      await chat.stop()
    },
  }
}

/** How long a drain waits for the other members to acknowledge its users' leaves before moving them anyway. */
const DRAIN_DELIVERY_MS = 300

/** Resolves once `done()` holds (checked every 5 ms, the links' acknowledgement interval) or after `ms`. */
function until(clock: NodeIo['clock'], done: () => boolean, ms: number): Promise<void> {
  const deadline = clock.now() + ms
  return new Promise((resolve) => {
    const check = () => (done() || clock.now() >= deadline ? resolve() : clock.after(5, check))
    check()
  })
}

/** Ready for traffic: Up in a cluster that has a leader, and not shutting down. */
export function readiness(view: MembershipView, draining: boolean): Result<true> {
  if (draining) return err('draining: this node is shutting down')
  if (view.status !== 'Up') return err(`this node is ${view.status}`)
  if (!view.leaderId) return err('the cluster has no leader')
  return ok(true)
}

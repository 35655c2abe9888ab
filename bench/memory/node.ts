// One node for bench/memory.ts, built from the source tree at MEM_TREE (default: this one) as
// src/index.ts builds it, with the command-line flags given, and two differences: new sockets are
// never refused (a baseline tree from before 2026-11-28 spreads N joins over N²/50,000 s with its
// join budget; this measures memory, not storms) and it answers the benchmark's memory requests
// over IPC (stats.ts). Quiet: warnings only.
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { answerMemoryRequests } from './stats'

const tree = process.env.MEM_TREE || resolve(import.meta.dir, '../..')
const { parseConfig } = await import(join(tree, 'src/config.ts'))
const { createNode } = await import(join(tree, 'src/node.ts'))
const { ChatGateway } = await import(join(tree, 'src/chat/gateway.ts'))
const { tcpTransport } = await import(join(tree, 'src/cluster/tcp/tcp-transport.ts'))
const { realClock } = await import(join(tree, 'src/io.ts'))
const { createLogger } = await import(join(tree, 'src/log.ts'))

ChatGateway.prototype.admitsJoin = () => true

const readFile = (path: string) => {
  try {
    return { ok: true, value: readFileSync(path, 'utf8') }
  } catch (error) {
    return { ok: false, error: String(error) }
  }
}
const parsed = parseConfig(Bun.argv.slice(2), {}, readFile)
if (!parsed.ok || 'help' in parsed.value) {
  console.error(parsed.ok ? 'no --help here' : parsed.error)
  process.exit(2)
}
const config = parsed.value.config
const node = createNode(config, {
  transport: tcpTransport({ secrets: config.clusterSecrets, tls: config.clusterTls, linkTimeoutMs: config.linkTimeoutMs }),
  clock: realClock,
  random: Math.random,
  newIncarnation: () => crypto.randomUUID().slice(0, 8),
  log: createLogger({ format: 'text', level: 'warn', node: 'mem' }),
  cpuMs: () => {
    const { user, system } = process.cpuUsage()
    return (user + system) / 1000
  },
})
await node.start()
answerMemoryRequests()
console.log('ready')
process.on('SIGTERM', () => process.exit(0))

// Command line entry: parse the configuration, start one node with the real outside world, and
// leave the cluster cleanly on SIGINT/SIGTERM. Exit codes: 0 done, 1 cannot start, 2 bad config.
import { readFileSync } from 'node:fs'
import { parseConfig, type Config, type ReadFile } from './config'
import { err, ok } from './result'
import { anonymous, tokenIdentity, tokenKey, type Identify } from './chat/identity'
import { tcpTransport } from './cluster/tcp/tcp-transport'
import { formatAddress } from './cluster/address'
import { realClock, type NodeIo } from './io'
import { createLogger } from './log'
import { createNode } from './node'

const LEAVE_TIMEOUT_MS = 5000

const readFile: ReadFile = (path) => {
  try {
    return ok(readFileSync(path, 'utf8'))
  } catch (error) {
    return err(`cannot read ${path}: ${(error as Error).message}`)
  }
}

const parsed = parseConfig(process.argv.slice(2), process.env, readFile)
if (!parsed.ok) {
  console.error(`error: ${parsed.error}`)
  process.exit(2)
}
if ('help' in parsed.value) {
  console.log(parsed.value.help)
  process.exit(0)
}
const config = parsed.value.config
const log = createLogger({
  format: config.logFormat,
  level: config.logLevel,
  node: formatAddress({ systemName: config.systemName, host: config.host, port: config.clusterPort }),
})
const io: NodeIo = {
  transport: tcpTransport({ secrets: config.clusterSecrets, tls: config.clusterTls, linkTimeoutMs: config.linkTimeoutMs }),
  clock: realClock,
  random: Math.random,
  newIncarnation: () => crypto.randomUUID().slice(0, 8),
  log,
  cpuMs: () => {
    const { user, system } = process.cpuUsage()
    return (user + system) / 1000
  },
}

const security = [
  config.clusterSecrets.length ? `shared secret${config.clusterSecrets.length > 1 ? ' (and the previous one, rotating)' : ''}` : null,
  config.clusterTls ? 'mutual TLS' : null,
].filter(Boolean)
log(`cluster port: ${security.length ? security.join(' + ') : 'no authentication (loopback or --insecure-cluster)'}`)


/** Tokens required when a secret or a public key is configured; a key that cannot be read is a config error. */
async function identifyFor(config: Config): Promise<Identify> {
  let source: { secret: string } | { publicKeyPem: string }
  if (config.authJwtSecret !== null) source = { secret: config.authJwtSecret }
  else if (config.authJwtPublicKey !== null) {
    try {
      source = { publicKeyPem: readFileSync(config.authJwtPublicKey, 'utf8') }
    } catch (error) {
      console.error(`error: --auth-jwt-public-key: cannot read ${config.authJwtPublicKey}: ${(error as Error).message}`)
      process.exit(2)
    }
  } else return anonymous
  const key = await tokenKey(source)
  if (!key.ok) {
    console.error(`error: --auth-jwt-public-key: ${key.error}`)
    process.exit(2)
  }
  log(`users must present a token signed with ${key.value.algorithms.join('/')} (?token=)`)
  return tokenIdentity(key.value, io.clock.now)
}

const node = createNode(config, io, await identifyFor(config))
try {
  await node.start()
} catch (error) {
  console.error(`error: ${(error as Error).message}`)
  process.exit(1)
}

let stopping = false
async function shutdown(signal: string) {
  if (stopping) return
  stopping = true
  log(`${signal}: leaving the cluster`, { event: 'shutdown', signal })
  const left = await node.shutdown(LEAVE_TIMEOUT_MS)
  if (!left) log('leave was not confirmed (no leader answered in time); exiting anyway', { level: 'warn', event: 'leave_unconfirmed' })
  log('stopped', { event: 'stopped' })
  process.exit(0)
}
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('SIGTERM', () => void shutdown('SIGTERM'))

// Command line and environment: every flag has an environment twin; the flag wins.
// Parsing is pure (argv and env in, a config or an error out) so it is tested without a process.
// Everything is checked here, once: a config that parses is one the node can run with.
import { err, ok, type Result } from './result'
import { formatAddress } from './cluster/address'
import { DEFAULT_TIMING_MS, timingFromMs, type Timing } from './cluster/timing'

export type Lang = 'en' | 'ko'

export interface Config {
  host: string
  httpHost: string
  clusterPort: number
  httpPort: number
  /** Seed addresses, `bun://<system>@host:port`; the first one may found the cluster. */
  seeds: string[]
  systemName: string
  lang: Lang
  heartbeatMs: number
  electionTimeoutMs: number
  unreachableAfterMs: number
  downAfterMs: number
  bootstrapTimeoutMs: number
  maxMessageLength: number
  /** HS256 secret for user tokens (`?token=`); null: no tokens with a secret. */
  authJwtSecret: string | null
  /** Path of a PEM public key (RS256 or ES256) for user tokens; read at start-up by the shell. */
  authJwtPublicKey: string | null
  /** Origins (`scheme://host[:port]`) allowed to open the chat socket; null: any. */
  allowedOrigins: string[] | null
  /** Chat messages per second per connection (token bucket refill); 0: no limit. */
  rateLimit: number
  /** Token bucket size: messages a connection may send at once before the rate applies. */
  rateBurst: number
  maxConnectionsPerIp: number
  maxConnections: number
  /** The timeouts above in the core's ticks, converted and checked at parse time. */
  timing: Timing
}

interface FlagSpec {
  key: Exclude<keyof Config, 'timing'>
  env: string
  kind: 'string' | 'port' | 'ms' | 'seeds' | 'lang' | 'count' | 'count0' | 'name' | 'secret' | 'path' | 'origins'
  help: string
}

const FLAGS: Record<string, FlagSpec> = {
  '--host': { key: 'host', env: 'CLUSTER_HOST', kind: 'string', help: 'address other nodes reach this node at (default 127.0.0.1)' },
  '--http-host': { key: 'httpHost', env: 'HTTP_HOST', kind: 'string', help: 'interface the HTTP server binds (default 0.0.0.0)' },
  '--cluster-port': { key: 'clusterPort', env: 'CLUSTER_PORT', kind: 'port', help: 'cluster (TCP) port (default 2551)' },
  '--http-port': { key: 'httpPort', env: 'HTTP_PORT', kind: 'port', help: 'HTTP and WebSocket port (default 8081)' },
  '--seeds': { key: 'seeds', env: 'SEED_NODES', kind: 'seeds', help: 'host:port,host:port of seed nodes (default 127.0.0.1:2551)' },
  '--system-name': { key: 'systemName', env: 'SYSTEM_NAME', kind: 'name', help: 'cluster name; nodes with another name are refused (default WebSocketClusterSystem)' },
  '--lang': { key: 'lang', env: 'CHAT_LANG', kind: 'lang', help: 'language of system messages: en or ko (default en)' },
  '--heartbeat-ms': { key: 'heartbeatMs', env: 'HEARTBEAT_MS', kind: 'ms', help: 'leader heartbeat interval (default 100)' },
  '--election-timeout-ms': { key: 'electionTimeoutMs', env: 'ELECTION_TIMEOUT_MS', kind: 'ms', help: 'minimum election timeout; randomized up to twice this (default 500)' },
  '--unreachable-after-ms': { key: 'unreachableAfterMs', env: 'UNREACHABLE_AFTER_MS', kind: 'ms', help: 'silence before a member is shown unreachable (default 1000)' },
  '--down-after-ms': { key: 'downAfterMs', env: 'DOWN_AFTER_MS', kind: 'ms', help: 'silence before a member is removed (default 3000)' },
  '--bootstrap-timeout-ms': { key: 'bootstrapTimeoutMs', env: 'BOOTSTRAP_TIMEOUT_MS', kind: 'ms', help: 'how long the first seed waits for other seeds before founding a cluster (default 1500)' },
  '--max-message-length': { key: 'maxMessageLength', env: 'MAX_MESSAGE_LENGTH', kind: 'count', help: 'longest chat message in characters (default 2000)' },
  '--auth-jwt-secret': { key: 'authJwtSecret', env: 'AUTH_JWT_SECRET', kind: 'secret', help: 'require ?token=<JWT> signed with this HS256 secret (at least 32 characters)' },
  '--auth-jwt-public-key': { key: 'authJwtPublicKey', env: 'AUTH_JWT_PUBLIC_KEY', kind: 'path', help: 'require ?token=<JWT> signed by this PEM public key (RS256 or ES256)' },
  '--allowed-origins': { key: 'allowedOrigins', env: 'ALLOWED_ORIGINS', kind: 'origins', help: 'comma list of origins allowed to open the chat socket (default any)' },
  '--rate-limit': { key: 'rateLimit', env: 'RATE_LIMIT', kind: 'count0', help: 'chat messages per second per connection, 0 for none (default 20)' },
  '--rate-burst': { key: 'rateBurst', env: 'RATE_BURST', kind: 'count', help: 'messages a connection may send at once (default 40)' },
  '--max-connections-per-ip': { key: 'maxConnectionsPerIp', env: 'MAX_CONNECTIONS_PER_IP', kind: 'count', help: 'chat sockets per client address (default 200)' },
  '--max-connections': { key: 'maxConnections', env: 'MAX_CONNECTIONS', kind: 'count', help: 'chat sockets on this node (default 10000)' },
}

export const DEFAULTS: Omit<Config, 'seeds' | 'timing'> & { seeds: string } = {
  host: '127.0.0.1',
  httpHost: '0.0.0.0',
  clusterPort: 2551,
  httpPort: 8081,
  seeds: '127.0.0.1:2551',
  systemName: 'WebSocketClusterSystem',
  lang: 'en',
  ...DEFAULT_TIMING_MS,
  maxMessageLength: 2000,
  authJwtSecret: null,
  authJwtPublicKey: null,
  allowedOrigins: null,
  rateLimit: 20,
  rateBurst: 40,
  maxConnectionsPerIp: 200,
  maxConnections: 10_000,
}

/** A config to run with, or the help text when it was asked for; an error says what is wrong. */
export type ParseResult = Result<{ config: Config } | { help: string }>

export function usage(): string {
  const lines = Object.entries(FLAGS).map(([flag, s]) => `  ${flag.padEnd(24)} ${s.env.padEnd(22)} ${s.help}`)
  return [
    'Usage: websocket-cluster [flags]',
    '',
    `  ${'flag'.padEnd(24)} ${'environment'.padEnd(22)} meaning`,
    ...lines,
    `  ${'--help'.padEnd(24)} ${''.padEnd(22)} print this help`,
  ].join('\n')
}

export function parseConfig(argv: string[], env: Record<string, string | undefined>): ParseResult {
  const raw = new Map<string, { value: string; source: string }>()
  for (const [flag, spec] of Object.entries(FLAGS)) {
    const value = env[spec.env]
    if (value !== undefined && value !== '') raw.set(flag, { value, source: `environment variable ${spec.env}` })
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--help' || arg === '-h') return ok({ help: usage() })
    const eq = arg.indexOf('=')
    const flag = eq > 0 ? arg.slice(0, eq) : arg
    if (!FLAGS[flag]) return err(`unknown flag ${JSON.stringify(arg)} (see --help)`)
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i]
    if (value === undefined) return err(`${flag} needs a value`)
    raw.set(flag, { value, source: flag })
  }

  const out: Record<string, unknown> = { ...DEFAULTS }
  for (const [flag, spec] of Object.entries(FLAGS)) {
    const given = raw.get(flag)
    if (!given && spec.kind !== 'seeds') continue
    const value = given?.value ?? DEFAULTS.seeds
    const parsed = parseValue(spec.kind, value.trim())
    if (!parsed.ok) return err(`${given?.source ?? flag}: ${parsed.error} (got ${JSON.stringify(value)})`)
    out[spec.key] = parsed.value
  }
  const config = out as unknown as Omit<Config, 'seeds' | 'timing'> & { seeds: Array<{ host: string; port: number }> }
  const seeds = config.seeds.map((s) => formatAddress({ systemName: config.systemName, host: s.host, port: s.port }))
  if (config.clusterPort === config.httpPort) return err(`cluster port and HTTP port must differ (both ${config.clusterPort})`)
  if (config.maxMessageLength > 16_000) return err('--max-message-length must be at most 16000')
  if (config.authJwtSecret !== null && config.authJwtPublicKey !== null) return err('give --auth-jwt-secret or --auth-jwt-public-key, not both')
  const timing = timingFromMs(config)
  if (!timing.ok) return timing
  return ok({ config: { ...config, seeds, timing: timing.value } })
}

function parseValue(kind: FlagSpec['kind'], value: string): Result<unknown> {
  switch (kind) {
    case 'string':
      return value.length > 0 && !/\s/.test(value) ? ok(value) : err('expected a host name or address')
    case 'name':
      return /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(value) ? ok(value) : err('expected letters, digits, _ or - (at most 64)')
    case 'port': {
      const port = parsePort(value)
      return port === null ? err('expected a port from 1 to 65535') : ok(port)
    }
    case 'ms':
    case 'count': {
      const n = /^\d+$/.test(value) ? Number(value) : NaN
      return Number.isSafeInteger(n) && n > 0 ? ok(n) : err('expected a positive whole number')
    }
    case 'count0': {
      const n = /^\d+$/.test(value) ? Number(value) : NaN
      return Number.isSafeInteger(n) ? ok(n) : err('expected a whole number (0 for none)')
    }
    case 'secret':
      // HS256 is only as strong as its secret; a short one can be brute-forced offline from one token.
      return value.length >= 32 ? ok(value) : err('expected a secret of at least 32 characters')
    case 'path':
      return value.length > 0 ? ok(value) : err('expected a file path')
    case 'origins': {
      const origins = []
      for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
        const origin = parseOrigin(part)
        if (origin === null) return err(`malformed origin ${JSON.stringify(part)}, expected scheme://host[:port]`)
        origins.push(origin)
      }
      return origins.length ? ok(origins) : err('expected at least one origin')
    }
    case 'lang':
      return value === 'en' || value === 'ko' ? ok(value) : err('expected en or ko')
    case 'seeds': {
      const seeds = []
      for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
        const m = /^([^\s:/@]+|\[[0-9a-fA-F:]+\]):(\d+)$/.exec(part)
        const port = m ? parsePort(m[2]!) : null
        if (!m || port === null) return err(`malformed seed ${JSON.stringify(part)}, expected host:port`)
        seeds.push({ host: m[1]!, port })
      }
      return seeds.length ? ok(seeds) : err('expected at least one host:port')
    }
  }
}

/** `scheme://host[:port]` in the form browsers send in `Origin` (lower case, default port left out). */
function parseOrigin(value: string): string | null {
  if (!/^https?:\/\/[^/?#\s]+\/?$/i.test(value)) return null
  try {
    return new URL(value).origin
  } catch {
    return null
  }
}

function parsePort(value: string): number | null {
  const n = /^\d+$/.test(value) ? Number(value) : NaN
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : null
}

// Command line and environment: every flag has an environment twin; the flag wins.
// Parsing is pure (argv, env and a file reader in, a config or an error out) so it is tested
// without a process. Everything is checked here, once: a config that parses is one the node can
// run with, including the files it names (secrets, certificates) and whether it is safe to expose.
import { err, ok, type Result } from './result'
import { formatAddress } from './cluster/address'
import type { LogLevel } from './io'
import { LOG_LEVELS } from './log'
import type { TlsFiles } from './cluster/tcp/tls'
import { DEFAULT_TIMING_MS, timingFromMs, type Timing } from './cluster/timing'

/** Reads a whole text file; the command line passes a real one, tests a map. */
export type ReadFile = (path: string) => Result<string>
const noFiles: ReadFile = (path) => err(`cannot read ${path}: no file reader given`)

/** Shorter secrets could be guessed offline from a recorded handshake. */
export const SECRET_MIN_LENGTH = 16

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
  /** A cluster link silent this long is dropped and redialled (default three heartbeats). */
  linkTimeoutMs: number
  maxMessageLength: number
  logFormat: 'text' | 'json'
  logLevel: LogLevel
  /** Free-form roles this node advertises in /api/cluster-info, as Pekko's cluster roles. */
  roles: string[]
  /** Run a cluster port reachable beyond loopback without a secret or TLS (refused otherwise). */
  insecureCluster: boolean
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
  /** New chat sockets a second per client address (a bucket of 10 s worth); 0: no limit. */
  connectRate: number
  /** Chat deliveries to local users a second this node takes on (src/chat/fanout-budget.ts); 0: no limit. */
  maxFanout: number
  /** Transcript lines a new connection receives in its history frame; 0: none. */
  historyOnJoin: number
  /** Transcript lines this node keeps in memory for history, resumes and /api/messages. */
  historySize: number
  /** Unsent lines (no leader reachable) this node holds before it refuses more. */
  maxPending: number
  /** The timeouts above in the core's ticks, converted and checked at parse time. */
  timing: Timing
  /** Cluster secrets, current first, then the previous one during a rotation; empty: none. */
  clusterSecrets: string[]
  /** Mutual TLS on the cluster port: the PEM contents, read at parse time. */
  clusterTls: TlsFiles | null
}

/** Flags read into these and turned into `clusterSecrets` / `clusterTls`. */
interface RawSecurity {
  clusterSecret: string
  clusterSecretFile: string
  clusterSecretPrevious: string
  clusterTlsCert: string
  clusterTlsKey: string
  clusterTlsCa: string
}

interface FlagSpec {
  key: Exclude<keyof Config, 'timing' | 'clusterSecrets' | 'clusterTls'> | keyof RawSecurity
  env: string
  kind: 'string' | 'port' | 'ms' | 'seeds' | 'choice' | 'count' | 'count0' | 'name' | 'names' | 'secret' | 'path' | 'bool' | 'origins'
  /** The accepted values of a `choice`. */
  choices?: readonly string[]
  /** The shortest a `secret` may be. */
  minLength?: number
  help: string
}

const FLAGS: Record<string, FlagSpec> = {
  '--host': { key: 'host', env: 'CLUSTER_HOST', kind: 'string', help: 'address other nodes reach this node at (default 127.0.0.1)' },
  '--http-host': { key: 'httpHost', env: 'HTTP_HOST', kind: 'string', help: 'interface the HTTP server binds (default 0.0.0.0)' },
  '--cluster-port': { key: 'clusterPort', env: 'CLUSTER_PORT', kind: 'port', help: 'cluster (TCP) port (default 2551)' },
  '--http-port': { key: 'httpPort', env: 'HTTP_PORT', kind: 'port', help: 'HTTP and WebSocket port (default 8081)' },
  '--seeds': { key: 'seeds', env: 'SEED_NODES', kind: 'seeds', help: 'host:port,host:port of seed nodes (default 127.0.0.1:2551)' },
  '--system-name': { key: 'systemName', env: 'SYSTEM_NAME', kind: 'name', help: 'cluster name; nodes with another name are refused (default WebSocketClusterSystem)' },
  '--lang': { key: 'lang', env: 'CHAT_LANG', kind: 'choice', choices: ['en', 'ko'], help: 'language of system messages: en or ko (default en)' },
  '--heartbeat-ms': { key: 'heartbeatMs', env: 'HEARTBEAT_MS', kind: 'ms', help: 'leader heartbeat interval (default 100)' },
  '--election-timeout-ms': { key: 'electionTimeoutMs', env: 'ELECTION_TIMEOUT_MS', kind: 'ms', help: 'minimum election timeout; randomized up to twice this (default 500)' },
  '--unreachable-after-ms': { key: 'unreachableAfterMs', env: 'UNREACHABLE_AFTER_MS', kind: 'ms', help: 'silence before a member is shown unreachable (default 1000)' },
  '--down-after-ms': { key: 'downAfterMs', env: 'DOWN_AFTER_MS', kind: 'ms', help: 'silence before a member is removed (default 3000)' },
  '--link-timeout-ms': { key: 'linkTimeoutMs', env: 'LINK_TIMEOUT_MS', kind: 'ms', help: 'a cluster link silent this long is dropped and redialled; under --unreachable-after-ms (default 3 heartbeats)' },
  '--bootstrap-timeout-ms': { key: 'bootstrapTimeoutMs', env: 'BOOTSTRAP_TIMEOUT_MS', kind: 'ms', help: 'how long the first seed waits for other seeds before founding a cluster (default 1500)' },
  '--max-message-length': { key: 'maxMessageLength', env: 'MAX_MESSAGE_LENGTH', kind: 'count', help: 'longest chat message in characters (default 2000)' },
  '--log-format': { key: 'logFormat', env: 'LOG_FORMAT', kind: 'choice', choices: ['text', 'json'], help: 'text lines, or JSON lines with time, level, node, event and fields (default text)' },
  '--log-level': { key: 'logLevel', env: 'LOG_LEVEL', kind: 'choice', choices: LOG_LEVELS, help: 'debug, info, warn or error (default info)' },
  '--roles': { key: 'roles', env: 'CLUSTER_ROLES', kind: 'names', help: 'comma list of roles shown in /api/cluster-info (default none)' },
  '--cluster-secret': { key: 'clusterSecret', env: 'CLUSTER_SECRET', kind: 'secret', minLength: SECRET_MIN_LENGTH, help: `shared secret every node proves it knows (at least ${SECRET_MIN_LENGTH} characters; prefer the variable or a file: arguments are visible to other local users)` },
  '--cluster-secret-file': { key: 'clusterSecretFile', env: 'CLUSTER_SECRET_FILE', kind: 'path', help: 'file holding the shared secret (trimmed)' },
  '--cluster-secret-previous': { key: 'clusterSecretPrevious', env: 'CLUSTER_SECRET_PREVIOUS', kind: 'secret', minLength: SECRET_MIN_LENGTH, help: 'the secret being replaced, also accepted during a rotation' },
  '--cluster-tls-cert': { key: 'clusterTlsCert', env: 'CLUSTER_TLS_CERT', kind: 'path', help: 'PEM certificate of this node for mutual TLS on the cluster port' },
  '--cluster-tls-key': { key: 'clusterTlsKey', env: 'CLUSTER_TLS_KEY', kind: 'path', help: 'PEM private key of this node' },
  '--cluster-tls-ca': { key: 'clusterTlsCa', env: 'CLUSTER_TLS_CA', kind: 'path', help: "PEM certificate of the CA that signs every node's certificate" },
  '--insecure-cluster': { key: 'insecureCluster', env: 'INSECURE_CLUSTER', kind: 'bool', help: 'allow a non-loopback --host with neither secret nor TLS (no value)' },
  '--auth-jwt-secret': { key: 'authJwtSecret', env: 'AUTH_JWT_SECRET', kind: 'secret', minLength: 32, help: 'require ?token=<JWT> signed with this HS256 secret (at least 32 characters)' },
  '--auth-jwt-public-key': { key: 'authJwtPublicKey', env: 'AUTH_JWT_PUBLIC_KEY', kind: 'path', help: 'require ?token=<JWT> signed by this PEM public key (RS256 or ES256)' },
  '--allowed-origins': { key: 'allowedOrigins', env: 'ALLOWED_ORIGINS', kind: 'origins', help: 'comma list of origins allowed to open the chat socket (default any)' },
  '--rate-limit': { key: 'rateLimit', env: 'RATE_LIMIT', kind: 'count0', help: 'chat messages per second per connection, 0 for none (default 20)' },
  '--rate-burst': { key: 'rateBurst', env: 'RATE_BURST', kind: 'count', help: 'messages a connection may send at once (default 40)' },
  '--max-connections-per-ip': { key: 'maxConnectionsPerIp', env: 'MAX_CONNECTIONS_PER_IP', kind: 'count', help: 'chat sockets per client address (default 200)' },
  '--max-fanout': { key: 'maxFanout', env: 'MAX_FANOUT', kind: 'count0', help: 'chat deliveries to local users a second this node takes on; 0 for no limit (default 100000)' },
  '--connect-rate': { key: 'connectRate', env: 'CONNECT_RATE', kind: 'count0', help: 'new chat sockets a second per client address, 10 s worth at once; 0 for none (default 50)' },
  '--max-connections': { key: 'maxConnections', env: 'MAX_CONNECTIONS', kind: 'count', help: 'chat sockets on this node (default 10000)' },
  '--history-on-join': { key: 'historyOnJoin', env: 'HISTORY_ON_JOIN', kind: 'count0', help: 'transcript lines a new connection receives; 0 for none (default 50)' },
  '--history-size': { key: 'historySize', env: 'HISTORY_SIZE', kind: 'count', help: 'transcript lines kept in memory for history and resume (default 10000)' },
  '--max-pending': { key: 'maxPending', env: 'MAX_PENDING', kind: 'count', help: 'lines held while no leader is reachable before sends are refused (default 10000)' },
}

export const DEFAULTS: Omit<Config, 'seeds' | 'timing' | 'clusterSecrets' | 'clusterTls'> & { seeds: string } = {
  host: '127.0.0.1',
  httpHost: '0.0.0.0',
  clusterPort: 2551,
  httpPort: 8081,
  seeds: '127.0.0.1:2551',
  systemName: 'WebSocketClusterSystem',
  lang: 'en',
  ...DEFAULT_TIMING_MS,
  // 0: three heartbeats, whatever --heartbeat-ms says (resolved in parseConfig).
  linkTimeoutMs: 0,
  maxMessageLength: 2000,
  logFormat: 'text',
  logLevel: 'info',
  roles: [],
  insecureCluster: false,
  authJwtSecret: null,
  authJwtPublicKey: null,
  allowedOrigins: null,
  rateLimit: 20,
  rateBurst: 40,
  maxConnectionsPerIp: 200,
  maxConnections: 10_000,
  historyOnJoin: 50,
  historySize: 10_000,
  maxPending: 10_000,
  connectRate: 50,
  maxFanout: 100_000,
}

/** A config to run with, or the help text when it was asked for; an error says what is wrong. */
export type ParseResult = Result<{ config: Config } | { help: string }>

export function usage(): string {
  const lines = Object.entries(FLAGS).map(([flag, s]) => `  ${flag.padEnd(26)} ${s.env.padEnd(24)} ${s.help}`)
  return [
    'Usage: websocket-cluster [flags]',
    '',
    `  ${'flag'.padEnd(26)} ${'environment'.padEnd(24)} meaning`,
    ...lines,
    `  ${'--help'.padEnd(26)} ${''.padEnd(24)} print this help`,
  ].join('\n')
}

export function parseConfig(argv: string[], env: Record<string, string | undefined>, readFile: ReadFile = noFiles): ParseResult {
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
    const value = eq > 0 ? arg.slice(eq + 1) : FLAGS[flag].kind === 'bool' ? 'true' : argv[++i]
    if (value === undefined) return err(`${flag} needs a value`)
    raw.set(flag, { value, source: flag })
  }

  const out: Record<string, unknown> = { ...DEFAULTS }
  for (const [flag, spec] of Object.entries(FLAGS)) {
    const given = raw.get(flag)
    if (!given && spec.kind !== 'seeds') continue
    const value = given?.value ?? DEFAULTS.seeds
    const parsed = parseValue(spec, value.trim())
    // A secret's value is never echoed in an error message.
    if (!parsed.ok) return err(`${given?.source ?? flag}: ${parsed.error}${spec.kind === 'secret' ? '' : ` (got ${JSON.stringify(value)})`}`)
    out[spec.key] = parsed.value
  }
  const config = out as unknown as Omit<Config, 'seeds' | 'timing' | 'clusterSecrets' | 'clusterTls'> & Partial<RawSecurity> & { seeds: Array<{ host: string; port: number }> }
  const seeds = config.seeds.map((s) => formatAddress({ systemName: config.systemName, host: s.host, port: s.port }))
  if (config.clusterPort === config.httpPort) return err(`cluster port and HTTP port must differ (both ${config.clusterPort})`)
  if (config.maxMessageLength > 16_000) return err('--max-message-length must be at most 16000')
  if (config.authJwtSecret !== null && config.authJwtPublicKey !== null) return err('give --auth-jwt-secret or --auth-jwt-public-key, not both')
  const timing = timingFromMs(config)
  if (!timing.ok) return timing
  // A link must be redialled well before the leader would call its peer unreachable.
  config.linkTimeoutMs ||= 3 * config.heartbeatMs
  if (config.linkTimeoutMs >= config.unreachableAfterMs) return err(`--link-timeout-ms (${config.linkTimeoutMs}) must be under --unreachable-after-ms (${config.unreachableAfterMs})`)
  if (config.linkTimeoutMs < 30) return err(`--link-timeout-ms (${config.linkTimeoutMs}) must be at least 30`)
  const secrets = clusterSecrets(config, readFile)
  if (!secrets.ok) return secrets
  const tls = clusterTls(config, readFile)
  if (!tls.ok) return tls
  // Like Redis's protected mode: a cluster port others can reach must not trust whoever connects.
  if (!isLoopback(config.host) && secrets.value.length === 0 && !tls.value && !config.insecureCluster) {
    return err(
      `--host ${config.host} is not a loopback address, so other machines can reach the cluster port, ` +
        'but no cluster secret or TLS is configured: anyone who connects could join the cluster. ' +
        'Set --cluster-secret-file, CLUSTER_SECRET or --cluster-tls-*, or pass --insecure-cluster on a network you trust.',
    )
  }
  const { clusterSecret, clusterSecretFile, clusterSecretPrevious, clusterTlsCert, clusterTlsKey, clusterTlsCa, ...rest } = config
  return ok({ config: { ...rest, seeds, timing: timing.value, clusterSecrets: secrets.value, clusterTls: tls.value } })
}

/** 127.0.0.0/8, ::1 and localhost: only this machine can reach a port bound there. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '')
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)
}

function clusterSecrets(c: Partial<RawSecurity>, readFile: ReadFile): Result<string[]> {
  if (c.clusterSecret !== undefined && c.clusterSecretFile !== undefined) return err('give --cluster-secret or --cluster-secret-file, not both')
  let current = c.clusterSecret
  if (c.clusterSecretFile !== undefined) {
    const read = readFile(c.clusterSecretFile)
    if (!read.ok) return err(`--cluster-secret-file: ${read.error}`)
    current = read.value.trim()
    if (current.length < SECRET_MIN_LENGTH) return err(`--cluster-secret-file: the secret in ${c.clusterSecretFile} is shorter than ${SECRET_MIN_LENGTH} characters`)
  }
  if (current === undefined) {
    return c.clusterSecretPrevious === undefined ? ok([]) : err('--cluster-secret-previous needs a current secret too')
  }
  return ok(c.clusterSecretPrevious === undefined || c.clusterSecretPrevious === current ? [current] : [current, c.clusterSecretPrevious])
}

function clusterTls(c: Partial<RawSecurity>, readFile: ReadFile): Result<TlsFiles | null> {
  const paths = { cert: c.clusterTlsCert, key: c.clusterTlsKey, ca: c.clusterTlsCa }
  const given = Object.values(paths).filter((p) => p !== undefined).length
  if (given === 0) return ok(null)
  if (given < 3) return err('--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together')
  const files: Partial<TlsFiles> = {}
  for (const [name, path] of Object.entries(paths) as Array<[keyof TlsFiles, string]>) {
    const read = readFile(path)
    if (!read.ok) return err(`--cluster-tls-${name}: ${read.error}`)
    if (!read.value.includes('-----BEGIN ')) return err(`--cluster-tls-${name}: ${path} is not a PEM file`)
    files[name] = read.value
  }
  return ok(files as TlsFiles)
}

function parseValue({ kind, choices, minLength }: FlagSpec, value: string): Result<unknown> {
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
    case 'choice':
      return choices!.includes(value) ? ok(value) : err(`expected ${choices!.slice(0, -1).join(', ')} or ${choices!.at(-1)}`)
    case 'names': {
      const names = value.split(',').map((s) => s.trim()).filter(Boolean)
      return names.every((n) => /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(n)) ? ok(names) : err('expected a comma list of names (letters, digits, _ . -)')
    }
    case 'secret':
      // A short secret can be brute-forced offline from one recorded handshake or one token.
      return value.length >= minLength! ? ok(value) : err(`expected a secret of at least ${minLength} characters`)
    case 'path':
      return value.length > 0 ? ok(value) : err('expected a file path')
    case 'bool':
      return /^(1|true|yes)$/i.test(value) ? ok(true) : /^(0|false|no)$/i.test(value) ? ok(false) : err('expected true or false')
    case 'count0': {
      const n = /^\d+$/.test(value) ? Number(value) : NaN
      return Number.isSafeInteger(n) ? ok(n) : err('expected a whole number (0 for none)')
    }
    case 'origins': {
      const origins = []
      for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
        const origin = parseOrigin(part)
        if (origin === null) return err(`malformed origin ${JSON.stringify(part)}, expected scheme://host[:port]`)
        origins.push(origin)
      }
      return origins.length ? ok(origins) : err('expected at least one origin')
    }
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

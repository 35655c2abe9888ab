// Command line and environment: every flag has an environment twin; the flag wins.
// Parsing is pure (argv and env in, a config or an error out) so it is tested without a process.

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
}

interface FlagSpec {
  key: keyof Config
  env: string
  kind: 'string' | 'port' | 'ms' | 'seeds' | 'lang' | 'count' | 'name'
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
}

export const DEFAULTS: Omit<Config, 'seeds'> & { seeds: string } = {
  host: '127.0.0.1',
  httpHost: '0.0.0.0',
  clusterPort: 2551,
  httpPort: 8081,
  seeds: '127.0.0.1:2551',
  systemName: 'WebSocketClusterSystem',
  lang: 'en',
  heartbeatMs: 100,
  electionTimeoutMs: 500,
  unreachableAfterMs: 1000,
  downAfterMs: 3000,
  bootstrapTimeoutMs: 1500,
  maxMessageLength: 2000,
}

export type ParseResult = { ok: true; config: Config } | { ok: false; error: string } | { ok: false; help: string }

export const nodeAddress = (systemName: string, host: string, port: number) =>
  `bun://${systemName}@${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`

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
    if (arg === '--help' || arg === '-h') return { ok: false, help: usage() }
    const eq = arg.indexOf('=')
    const flag = eq > 0 ? arg.slice(0, eq) : arg
    if (!FLAGS[flag]) return { ok: false, error: `unknown flag ${JSON.stringify(arg)} (see --help)` }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i]
    if (value === undefined) return { ok: false, error: `${flag} needs a value` }
    raw.set(flag, { value, source: flag })
  }

  const out: Record<string, unknown> = { ...DEFAULTS }
  for (const [flag, spec] of Object.entries(FLAGS)) {
    const given = raw.get(flag)
    if (!given && spec.kind !== 'seeds') continue
    const value = given?.value ?? DEFAULTS.seeds
    const parsed = parseValue(spec.kind, value.trim())
    if (typeof parsed === 'object' && parsed !== null && 'error' in parsed) {
      return { ok: false, error: `${given?.source ?? flag}: ${parsed.error} (got ${JSON.stringify(value)})` }
    }
    out[spec.key] = parsed
  }
  const config = out as unknown as Omit<Config, 'seeds'> & { seeds: Array<{ host: string; port: number }> }
  const seeds = config.seeds.map((s) => nodeAddress(config.systemName, s.host, s.port))
  const result: Config = { ...config, seeds }
  const problem = checkRelations(result)
  return problem ? { ok: false, error: problem } : { ok: true, config: result }
}

function parseValue(kind: FlagSpec['kind'], value: string): unknown {
  switch (kind) {
    case 'string':
      return value.length > 0 && !/\s/.test(value) ? value : { error: 'expected a host name or address' }
    case 'name':
      return /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(value) ? value : { error: 'expected letters, digits, _ or - (at most 64)' }
    case 'port':
      return parsePort(value) ?? { error: 'expected a port from 1 to 65535' }
    case 'ms':
    case 'count': {
      const n = /^\d+$/.test(value) ? Number(value) : NaN
      return Number.isSafeInteger(n) && n > 0 ? n : { error: 'expected a positive whole number' }
    }
    case 'lang':
      return value === 'en' || value === 'ko' ? value : { error: 'expected en or ko' }
    case 'seeds': {
      const seeds = []
      for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
        const m = /^([^\s:/@]+|\[[0-9a-fA-F:]+\]):(\d+)$/.exec(part)
        const port = m ? parsePort(m[2]!) : null
        if (!m || port === null) return { error: `malformed seed ${JSON.stringify(part)}, expected host:port` }
        seeds.push({ host: m[1]!, port })
      }
      return seeds.length ? seeds : { error: 'expected at least one host:port' }
    }
  }
}

function parsePort(value: string): number | null {
  const n = /^\d+$/.test(value) ? Number(value) : NaN
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : null
}

/** Relations between settings, checked before anything is bound. */
function checkRelations(c: Config): string | null {
  if (c.clusterPort === c.httpPort) return `cluster port and HTTP port must differ (both ${c.clusterPort})`
  if (c.electionTimeoutMs < c.heartbeatMs * 3) return `--election-timeout-ms (${c.electionTimeoutMs}) must be at least 3x --heartbeat-ms (${c.heartbeatMs})`
  if (c.unreachableAfterMs <= c.heartbeatMs) return `--unreachable-after-ms (${c.unreachableAfterMs}) must exceed --heartbeat-ms (${c.heartbeatMs})`
  if (c.downAfterMs <= c.unreachableAfterMs) return `--down-after-ms (${c.downAfterMs}) must exceed --unreachable-after-ms (${c.unreachableAfterMs})`
  if (c.downAfterMs <= c.electionTimeoutMs * 2) return `--down-after-ms (${c.downAfterMs}) must exceed the longest election timeout (${c.electionTimeoutMs * 2})`
  if (c.maxMessageLength > 16_000) return `--max-message-length must be at most 16000`
  return null
}

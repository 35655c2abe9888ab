import { describe, expect, test } from 'bun:test'
import { parseConfig } from '../src/config'

const ok = (argv: string[], env: Record<string, string> = {}) => {
  const r = parseConfig(argv, env)
  if (!r.ok) throw new Error(r.error)
  if (!('config' in r.value)) throw new Error('help')
  return r.value.config
}
const error = (argv: string[], env: Record<string, string> = {}) => {
  const r = parseConfig(argv, env)
  if (r.ok) throw new Error(`expected an error for ${argv.join(' ')}`)
  return r.error
}

describe('parseConfig', () => {
  test('defaults match the documented ones', () => {
    const c = ok([])
    expect(c).toMatchObject({ host: '127.0.0.1', clusterPort: 2551, httpPort: 8081, systemName: 'WebSocketClusterSystem', lang: 'en' })
    expect(c.seeds).toEqual(['bun://WebSocketClusterSystem@127.0.0.1:2551'])
    expect(c.maxMessageLength).toBe(2000)
    expect(c.heartbeatMs).toBe(100)
    expect(c.timing).toMatchObject({ heartbeatTicks: 10, electionTicksMin: 50, downTicks: 300, bootstrapTicks: 150 })
  })

  test('flags in both spellings, and the system name applies to seed addresses', () => {
    const c = ok(['--cluster-port', '2552', '--http-port=8082', '--seeds', '127.0.0.1:2551, 10.0.0.2:2552', '--system-name', 'Chat', '--lang', 'ko'])
    expect(c.clusterPort).toBe(2552)
    expect(c.httpPort).toBe(8082)
    expect(c.lang).toBe('ko')
    expect(c.seeds).toEqual(['bun://Chat@127.0.0.1:2551', 'bun://Chat@10.0.0.2:2552'])
  })

  test('environment twins apply, and flags win over them', () => {
    const env = { CLUSTER_PORT: '3000', HTTP_PORT: '3001', SEED_NODES: 'a:1', CHAT_LANG: 'ko', CLUSTER_HOST: '10.1.1.1' }
    expect(ok([], env)).toMatchObject({ clusterPort: 3000, httpPort: 3001, lang: 'ko', host: '10.1.1.1', seeds: ['bun://WebSocketClusterSystem@a:1'] })
    expect(ok(['--cluster-port', '4000'], env).clusterPort).toBe(4000)
  })

  test('bad values are refused with a message naming the flag', () => {
    expect(error(['--cluster-port', '70000'])).toContain('--cluster-port')
    expect(error(['--http-port', 'abc'])).toContain('port')
    expect(error(['--bogus'])).toContain('unknown flag')
    expect(error(['--seeds', 'nocolon'])).toContain('malformed seed')
    expect(error(['--seeds', 'host:0'])).toContain('malformed seed')
    expect(error(['--lang', 'fr'])).toContain('en or ko')
    expect(error(['--cluster-port'])).toContain('needs a value')
    expect(error([], { HTTP_PORT: '-1' })).toContain('HTTP_PORT')
    expect(error(['--cluster-port', '9000', '--http-port', '9000'])).toContain('must differ')
    expect(error(['--system-name', 'bad name'])).toContain('--system-name')
  })

  test('timeouts are validated together', () => {
    expect(error(['--heartbeat-ms', '400'])).toContain('--election-timeout-ms')
    expect(error(['--down-after-ms', '900'])).toContain('--down-after-ms')
    expect(ok(['--heartbeat-ms', '50', '--election-timeout-ms', '300', '--unreachable-after-ms', '500', '--down-after-ms', '1500'])).toMatchObject({ electionTimeoutMs: 300 })
    // Checked in ticks, the unit the core runs on: these pass a check in milliseconds but not in ticks.
    expect(error(['--heartbeat-ms', '5', '--election-timeout-ms', '15'])).toContain('--election-timeout-ms')
  })

  test('--help returns the usage text', () => {
    const r = parseConfig(['--help'], {})
    expect(r.ok && 'help' in r.value && r.value.help).toContain('--cluster-port')
  })
})

describe('operations flags', () => {
  test('log format, log level and roles', () => {
    expect(ok([])).toMatchObject({ logFormat: 'text', logLevel: 'info', roles: [] })
    expect(ok(['--log-format', 'json', '--log-level', 'warn', '--roles', 'chat, edge'])).toMatchObject({ logFormat: 'json', logLevel: 'warn', roles: ['chat', 'edge'] })
    expect(ok([], { LOG_FORMAT: 'json', CLUSTER_ROLES: 'a' })).toMatchObject({ logFormat: 'json', roles: ['a'] })
    expect(error(['--log-format', 'xml'])).toContain('expected text or json')
    expect(error(['--log-level', 'loud'])).toContain('expected debug, info, warn or error')
    expect(error(['--roles', 'a b'])).toContain('--roles')
  })
})

// The Dockerfile read as instructions (no Docker daemon here): it builds with the Bun we test
// with and the command `make build` uses, and runs the binary alone, as a non-root user.
import { describe, expect, test } from 'bun:test'
import { DEFAULTS } from '../../src/config'
import { dockerfile, envPairs, text, unknownEnv, type Instruction } from './files'

const all = dockerfile()
const lastStage = Math.max(...all.map((i) => i.stage))
const build = all.filter((i) => i.stage === 0)
const runtime = all.filter((i) => i.stage === lastStage)
const one = (list: Instruction[], keyword: string) => list.filter((i) => i.keyword === keyword)
const runtimeEnv = Object.assign({}, ...one(runtime, 'ENV').map((i) => envPairs(i.args))) as Record<string, string>

/** `bun build ...` without its `--outfile X`, as tokens. */
function buildCommand(line: string): string[] {
  const tokens = line.slice(line.indexOf('bun build')).split(/\s+/)
  const at = tokens.indexOf('--outfile')
  expect(at).toBeGreaterThan(0)
  return [...tokens.slice(0, at), ...tokens.slice(at + 2)]
}

describe('build stage', () => {
  test('uses an official Bun image at the version the project is tested with', () => {
    const arg = all.find((i) => i.keyword === 'ARG' && i.args.startsWith('BUN_VERSION='))
    expect(arg?.stage).toBe(-1)
    expect(arg!.args).toBe(`BUN_VERSION=${Bun.version}`)
    expect(build[0]!.args).toBe('oven/bun:${BUN_VERSION} AS build')
  })

  test('installs from the frozen lockfile and compiles with the command `make build` uses', () => {
    const runs = one(build, 'RUN').map((i) => i.args)
    expect(runs.some((r) => r.startsWith('bun install --frozen-lockfile'))).toBe(true)
    const compile = runs.find((r) => r.includes('bun build'))!
    const makeLine = text('Makefile').split('\n').find((l) => /^\tbun build --compile/.test(l))!
    expect(buildCommand(compile)).toEqual(buildCommand(makeLine.trim()))
  })

  test('.dockerignore keeps installs and history out but lets in everything the build copies', () => {
    const ignored = text('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'))
    for (const name of ['node_modules', '.git', 'dist']) expect(ignored).toContain(name)
    const copied = one(build, 'COPY').flatMap((i) => i.args.split(' ').slice(0, -1))
    expect(copied).toEqual(expect.arrayContaining(['package.json', 'bun.lock', 'src', 'public']))
    for (const source of copied) {
      const hit = ignored.find((p) => new Bun.Glob(p.replace(/\/$/, '')).match(source))
      expect(hit === undefined ? source : `${source} ignored by ${hit}`).toBe(source)
    }
  })
})

describe('runtime stage', () => {
  test('holds only the binary, copied from the build stage, and runs it', () => {
    const copies = one(runtime, 'COPY')
    expect(copies.length).toBe(1)
    const [from, source, target] = copies[0]!.args.split(' ')
    expect(from).toBe('--from=build')
    expect(one(build, 'RUN').some((r) => r.args.endsWith(`--outfile ${source}`))).toBe(true)
    expect(JSON.parse(one(runtime, 'ENTRYPOINT')[0]!.args)).toEqual([target])
  })

  test('runs as a numeric non-root user, set after the last RUN', () => {
    const users = one(runtime, 'USER')
    expect(users.length).toBe(1)
    const [uid, gid] = users[0]!.args.split(':')
    expect(uid).toMatch(/^\d+$/) // Kubernetes' runAsNonRoot can only verify a numeric user
    expect(Number(uid)).toBeGreaterThan(0)
    expect(Number(gid)).toBeGreaterThan(0)
    expect(runtime.indexOf(users[0]!)).toBeGreaterThan(runtime.findLastIndex((i) => i.keyword === 'RUN'))
  })

  test('exposes the ports it is configured with, and sets only variables the binary reads', () => {
    expect(unknownEnv(Object.keys(runtimeEnv))).toEqual([])
    const clusterPort = runtimeEnv.CLUSTER_PORT ?? String(DEFAULTS.clusterPort)
    const httpPort = runtimeEnv.HTTP_PORT ?? String(DEFAULTS.httpPort)
    expect(one(runtime, 'EXPOSE').flatMap((i) => i.args.split(' ')).sort()).toEqual([clusterPort, httpPort].sort())
  })

  test('checks health on /readyz of the configured HTTP port, with a timeout', () => {
    const check = one(runtime, 'HEALTHCHECK')
    expect(check.length).toBe(1)
    expect(check[0]!.args).toMatch(/--timeout=\d+s/)
    expect(check[0]!.args).toContain('/readyz')
    expect(check[0]!.args).toContain('process.env.HTTP_PORT')
    expect(one(runtime, 'STOPSIGNAL')[0]?.args).toBe('SIGTERM')
  })
})

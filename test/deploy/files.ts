// Reads the deployment files for the tests beside it: YAML through Bun.YAML, the Dockerfile as
// a list of instructions, and the environment variables the binary understands, taken from its
// --help table (usage() in src/config.ts, rendered from the same table the flags are parsed by).
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { usage } from '../../src/config'

export const ROOT = resolve(import.meta.dir, '../..')

/** The drain on SIGTERM is planned at about 15 s (issue 11); grace periods must cover it. */
export const DRAIN_SECONDS = 15

/** Variables the files may set that src/config.ts does not define, each with the reason. */
export const OTHER_ENV: Record<string, string> = {
  CLUSTER_SECRET: 'shared cluster secret, defined on branch peers (ignored by a binary without it)',
  CLUSTER_SECRET_FILE: 'file holding the shared cluster secret, defined on branch peers',
  POD_NAME: 'Kubernetes downward API, only expanded into CLUSTER_HOST',
  BUN_CONFIG_DNS_TIME_TO_LIVE_SECONDS: "the Bun runtime's DNS cache lifetime",
}

export function text(path: string): string {
  return readFileSync(resolve(ROOT, path), 'utf8')
}

/** Every document in a YAML file (a file may hold several, separated by ---). */
export function yamlDocs(path: string): any[] {
  const parsed = Bun.YAML.parse(text(path))
  return (Array.isArray(parsed) && /^---/m.test(text(path)) ? parsed : [parsed]).filter((d) => d != null)
}

/** The environment variables the binary reads, from its --help table. */
export function binaryEnv(): Set<string> {
  const names = [...usage().matchAll(/^\s+--[a-z-]+\s+([A-Z][A-Z0-9_]+)\s/gm)].map((m) => m[1]!)
  if (names.length < 10) throw new Error(`could not read the variables from usage():\n${usage()}`)
  return new Set(names)
}

export function unknownEnv(names: Iterable<string>): string[] {
  const known = binaryEnv()
  return [...names].filter((name) => !known.has(name) && !(name in OTHER_ENV))
}

export interface Instruction {
  keyword: string
  args: string
  /** 0 for the first FROM's stage, -1 before any FROM (global ARGs). */
  stage: number
}

/** The Dockerfile's instructions: comments dropped, continuation lines joined. */
export function dockerfile(path = 'Dockerfile'): Instruction[] {
  const lines = text(path)
    .split('\n')
    .filter((line) => !line.trim().startsWith('#'))
  const joined = lines.join('\n').replace(/\\\n/g, ' ')
  let stage = -1
  const out: Instruction[] = []
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*\S)\s*$/.exec(line)
    if (!m) continue
    const keyword = m[1]!.toUpperCase()
    if (keyword === 'FROM') stage++
    out.push({ keyword, args: m[2]!.replace(/\s+/g, ' '), stage })
  }
  return out
}

/** `KEY=value KEY2=value2` of an ENV instruction (no quoting is used in ours). */
export function envPairs(args: string): Record<string, string> {
  return Object.fromEntries(args.split(' ').map((pair) => pair.split('=') as [string, string]))
}

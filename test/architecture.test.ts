// The house rules that keep the layers one-directional, checked on the source itself:
// cluster knows neither chat nor HTTP, chat does not know HTTP, and the pure cores touch no
// clock, timer, randomness or Bun API (that is what lets the simulators run them).
import { describe, expect, test } from 'bun:test'
import { Glob } from 'bun'
import { resolve } from 'node:path'

const SRC = resolve(import.meta.dir, '../src')

async function sources(pattern: string): Promise<Array<{ path: string; text: string }>> {
  const files: Array<{ path: string; text: string }> = []
  for await (const path of new Glob(pattern).scan(SRC)) files.push({ path, text: await Bun.file(resolve(SRC, path)).text() })
  return files
}

const imports = (text: string) => [...text.matchAll(/^import[^'"]*['"]([^'"]+)['"]/gm)].map((m) => m[1]!)

describe('layers', () => {
  test.each([
    ['cluster/**/*.ts', /(^|\/)(chat|http)\//, 'src/cluster imports nothing from chat or http'],
    ['chat/**/*.ts', /(^|\/)http\//, 'src/chat imports nothing from http'],
  ])('%s', async (pattern, forbidden) => {
    const offenders = (await sources(pattern)).flatMap(({ path, text }) => imports(text).filter((i) => forbidden.test(i)).map((i) => `${path} imports ${i}`))
    expect(offenders).toEqual([])
  })

  test.each(['cluster/membership.ts', 'chat/presence.ts', 'cluster/timing.ts', 'cluster/events.ts'])('%s is pure: no Bun API, clock, timer or Math.random', async (path) => {
    const text = await Bun.file(resolve(SRC, path)).text()
    const code = text.replace(/\/\/.*$/gm, '').replace(/\/\*[\s\S]*?\*\//g, '')
    expect(imports(text).filter((i) => !i.startsWith('.'))).toEqual([])
    expect(code).not.toMatch(/\bBun\.|Date\.now|new Date|setTimeout|setInterval|Math\.random|performance\.now|crypto\./)
  })
})

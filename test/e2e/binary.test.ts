// The single self-contained binary: built with `bun build --compile`, run from an empty
// directory, it must serve the page and its bundled assets. Also the CLI's exit codes.
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ENTRY, REPO_ROOT, startNode, stopAll, waitFor } from '../support/cluster'

let dir = ''
let binary = ''

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'wsc-binary-'))
  binary = join(dir, 'websocket-cluster')
  const build = Bun.spawnSync(['bun', 'build', '--compile', '--minify', ENTRY, '--outfile', binary], { cwd: REPO_ROOT, stderr: 'pipe', stdout: 'pipe' })
  if (build.exitCode !== 0) throw new Error(`build failed: ${build.stderr.toString()}`)
}, 120_000)

afterAll(async () => {
  await stopAll()
  rmSync(dir, { recursive: true, force: true })
}, 30_000)

test('the compiled binary serves the chat page and its assets from an empty directory', async () => {
  const empty = mkdtempSync(join(dir, 'run-'))
  console.log(`binary size: ${(statSync(binary).size / 1024 / 1024).toFixed(1)} MiB`)
  const node = await startNode({ command: [binary], cwd: empty })
  const page = await node.fetch('/')
  expect(page.status).toBe(200)
  expect(page.headers.get('content-type')).toContain('text/html')
  const html = await page.text()
  expect(html).toContain('data-testid="messages"')
  const assets = [...html.matchAll(/(?:src|href)="(\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]!)
  expect(assets.length).toBeGreaterThanOrEqual(2)
  for (const asset of assets) {
    const response = await node.fetch(asset)
    expect(response.status).toBe(200)
    expect((await response.text()).length).toBeGreaterThan(100)
  }
  await waitFor(async () => (await node.info()).status === 'Up', { message: 'the binary never came Up' })
})

test('a bad flag exits with status 2 and a clear message before binding anything', () => {
  for (const args of [['--cluster-port', '99999'], ['--nope'], ['--seeds', 'bad']]) {
    const run = Bun.spawnSync([binary, ...args], { stderr: 'pipe', stdout: 'pipe' })
    expect(run.exitCode).toBe(2)
    expect(run.stderr.toString()).toStartWith('error: ')
  }
  const help = Bun.spawnSync([binary, '--help'], { stdout: 'pipe' })
  expect(help.exitCode).toBe(0)
  expect(help.stdout.toString()).toContain('--seeds')
})

// The binary as the image runs it (no Docker daemon here, so the image layout is rebuilt by
// hand): compiled with the Dockerfile's own command, alone in a directory on PATH, started with
// the StatefulSet's command from an empty, read-only working directory, as a non-root user when
// this test runs as root, configured like the image (its ENV, a secret file), with seeds given
// as DNS names (localhost:PORT) rather than IPs. Three nodes started together must form one
// cluster, and the image's HEALTHCHECK command must tell a ready node from an unready one.
import { afterAll, beforeAll, expect, test } from 'bun:test'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, startNode, stopAll, waitForConvergence, type NodeHandle } from '../support/cluster'
import { ROOT, dockerfile, envPairs, yamlDocs } from './files'

const NOBODY = 65534
const asRoot = process.getuid?.() === 0
const setpriv = Bun.which('setpriv')
/** Prefix that drops root the way the image's USER does (setpriv execs, so the pid is kept). */
const asUser = asRoot && setpriv ? [setpriv, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'] : []

/** Whether this source tree has the lead's health endpoints yet (issue 11). */
const sourceHas = (path: string) =>
  [...new Bun.Glob('src/**/*.ts').scanSync(ROOT)].some((file) => readFileSync(join(ROOT, file), 'utf8').includes(`'${path}'`))
const hasHealthz = sourceHas('/healthz')
const hasReadyz = sourceHas('/readyz')

const instructions = dockerfile()
const imageEnv = Object.assign({}, ...instructions.filter((i) => i.keyword === 'ENV' && i.stage > 0).map((i) => envPairs(i.args)))
const healthcheck = instructions.find((i) => i.keyword === 'HEALTHCHECK')!.args.replace(/^.*?\bCMD /, '')
const sts = yamlDocs('deploy/kubernetes/statefulset.yaml')[0]
const podCommand: string[] = sts.spec.template.spec.containers[0].command

let dir = ''
let bin = ''
let work = ''
let env: Record<string, string> = {}
let nodes: NodeHandle[] = []

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'wsc-image-'))
  bin = join(dir, 'bin')
  work = join(dir, 'work') // like the image's /app: empty, owned by root
  mkdirSync(bin)
  mkdirSync(work)
  for (const d of [dir, bin, work]) chmodSync(d, 0o755)

  const compile = instructions.find((i) => i.keyword === 'RUN' && i.args.includes('bun build'))!.args
  const argv = compile.replace(/--outfile \S+/, `--outfile ${join(bin, 'websocket-cluster')}`).split(' ')
  const build = Bun.spawn(argv, { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' })
  if ((await build.exited) !== 0) throw new Error(`${argv.join(' ')} failed:\n${await new Response(build.stderr).text()}`)

  const secret = join(dir, 'cluster-secret')
  writeFileSync(secret, `${crypto.randomUUID()}\n`, { mode: 0o400 })
  if (asUser.length) chownSync(secret, NOBODY, NOBODY)
  env = { ...imageEnv, PATH: `${bin}:/usr/bin:/bin`, HOME: '/nonexistent', CLUSTER_HOST: 'localhost', CLUSTER_SECRET_FILE: secret }

  const ports = await Promise.all(Array.from({ length: 6 }, () => freePort()))
  const seeds = [0, 1, 2].map((i) => `localhost:${ports[i]}`)
  // All three at once, as podManagementPolicy: Parallel starts them.
  nodes = await Promise.all(
    [0, 1, 2].map((i) =>
      startNode({
        name: `image${i}`,
        command: [...asUser, ...podCommand],
        cwd: work,
        env,
        clusterPort: ports[i],
        httpPort: ports[i + 3],
        seeds,
        args: ['--host', 'localhost'], // after the harness's --host 127.0.0.1: the last one wins
      }),
    ),
  )
}, 120_000)

afterAll(async () => {
  await stopAll()
  rmSync(dir, { recursive: true, force: true })
}, 30_000)

test('three nodes seeded by DNS name form one cluster with a leader', async () => {
  const leader = await waitForConvergence(nodes, { timeoutMs: 20_000 })
  for (const node of nodes) {
    const info = await node.info()
    expect(info.members.map((m: any) => m.status)).toEqual(['Up', 'Up', 'Up'])
    expect(info.selfAddress).toMatch(/@localhost:\d+$/)
    expect(info.leader).toBe(leader)
  }
})

test('the node itself runs (the pod command execs it) and not as root', () => {
  for (const node of nodes) {
    expect(readlinkSync(`/proc/${node.proc.pid}/exe`)).toBe(join(bin, 'websocket-cluster'))
    const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${node.proc.pid}/status`, 'utf8'))![1])
    if (asRoot && !setpriv) console.warn('running as root without setpriv: the non-root check is skipped')
    else expect(uid).not.toBe(0)
  }
})

async function runHealthcheck(command: string, httpPort: number): Promise<number> {
  const proc = Bun.spawn([...asUser, '/bin/sh', '-c', command], { cwd: work, env: { ...env, HTTP_PORT: String(httpPort) }, stdout: 'pipe', stderr: 'pipe' })
  return proc.exited
}

test("the image's HEALTHCHECK command answers 0 for 200, 1 otherwise", async () => {
  const node = nodes[0]!
  // The mechanism (BUN_BE_BUN in the compiled binary), on an endpoint that exists today.
  expect(await runHealthcheck(healthcheck.replace('/readyz', '/api/cluster-info'), node.httpPort)).toBe(0)
  expect(await runHealthcheck(healthcheck.replace('/readyz', '/no-such-path'), node.httpPort)).toBe(1)
  expect(await runHealthcheck(healthcheck, await freePort())).toBe(1) // nothing listening
  // The command as written: 0 once /readyz exists (the node is Up with a leader), 404 until then.
  if (!hasReadyz) console.warn('no /readyz in src yet: expecting the HEALTHCHECK to fail (404) until it lands')
  expect(await runHealthcheck(healthcheck, node.httpPort)).toBe(hasReadyz ? 0 : 1)
})

if (!hasHealthz) console.warn('no /healthz in src yet (issue 11, the lead\'s part): its check is skipped')
test.skipIf(!hasHealthz)('GET /healthz answers 200 on every node', async () => {
  for (const node of nodes) expect((await node.fetch('/healthz')).status).toBe(200)
})

test('SIGTERM reaches the node, which leaves and exits 0; the other two carry on', async () => {
  const [a, b, c] = nodes as [NodeHandle, NodeHandle, NodeHandle]
  await c.stop(20_000)
  expect(await c.exited).toBe(0)
  await waitForConvergence([a, b], { timeoutMs: 10_000 })
})

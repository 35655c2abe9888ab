// Child processes a benchmark starts besides our nodes (Socket.IO nodes, redis-server, the
// one-process Bun ceiling, load-generator workers): started with a readiness line, tracked by
// pid, stopped at the end. Shared by bench/compare.ts and bench/scale.ts.
import { join } from 'node:path'
import { REPO_ROOT } from '../test/support/cluster'
import { isRunning, killQuietly, shell, sleep } from './cluster-chat'

export const SOCKETIO_SERVER_SCRIPT = join(REPO_ROOT, 'bench/socketio-baseline/server.ts')

export interface Child {
  name: string
  pid: number
  proc: Bun.Subprocess<'ignore', 'pipe', 'pipe'>
}

/** Every child running, by pid. */
export const children = new Map<number, Child>()
/** Pids of every child started, checked after the final stop. */
export const startedChildren = new Set<number>()

/**
 * Starts `command` and resolves once a line of its output contains `readyText`; rejects (and
 * kills it) if it exits first or takes longer than `timeoutMs`.
 */
export async function spawnChild(name: string, command: string[], readyText: string, timeoutMs = 10_000): Promise<Child> {
  const proc = Bun.spawn(command, { cwd: REPO_ROOT, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' })
  let output = ''
  const child: Child = { name, pid: proc.pid, proc }
  children.set(proc.pid, child)
  startedChildren.add(proc.pid)
  let ready!: () => void
  const isReady = new Promise<void>((resolve) => (ready = resolve))
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder()
    for await (const chunk of stream) {
      output = (output + decoder.decode(chunk, { stream: true })).slice(-64 * 1024)
      if (output.includes(readyText)) ready()
      if (process.env.CLUSTER_LOGS === '1') process.stdout.write(`[${name}] ${decoder.decode(chunk)}`)
    }
  }
  void pump(proc.stdout).catch(() => {})
  void pump(proc.stderr).catch(() => {})
  const outcome = await Promise.race([
    isReady.then(() => 'ready' as const),
    proc.exited.then((code) => `exited with ${code}`),
    sleep(timeoutMs).then(() => `not ready within ${timeoutMs} ms`),
  ])
  if (outcome !== 'ready') {
    await stopChild(child)
    throw new Error(`${name} (${command.join(' ')}): ${outcome}\n${output.trim()}`)
  }
  return child
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once it is gone. */
export async function stopChild(child: Child, graceMs = 3000): Promise<void> {
  killQuietly(child.pid, 'SIGTERM')
  const gone = await Promise.race([child.proc.exited.then(() => true), sleep(graceMs).then(() => false)])
  if (!gone) {
    killQuietly(child.pid)
    await Promise.race([child.proc.exited, sleep(1000)])
  }
  children.delete(child.pid)
}

/** Started children whose command line still names one of `scripts`, killed with SIGKILL; their pids. */
export function childrenStillRunning(scripts: string[]): number[] {
  const left = [...startedChildren].filter((pid) => scripts.some((script) => isRunning(pid, script)))
  for (const pid of left) killQuietly(pid)
  return left
}

/** The command that runs one Socket.IO node under the chosen runtime. */
export function socketIoCommand(runtime: string, buildDir: string): string[] {
  if (runtime === 'bun') return ['bun', 'run', SOCKETIO_SERVER_SCRIPT]
  // Node 20 does not run TypeScript: bundle the server (and its packages) into one .mjs first.
  const out = join(buildDir, 'socketio-server.mjs')
  const build = Bun.spawnSync(['bun', 'build', SOCKETIO_SERVER_SCRIPT, '--target', 'node', '--outfile', out], { cwd: REPO_ROOT, stderr: 'pipe', stdout: 'pipe' })
  if (!build.success) throw new Error(`bun build of the Socket.IO server failed:\n${build.stderr.toString()}`)
  return ['node', out]
}

/** redis-server on PATH, else `scripts/deps.sh --bench` installs it; null (and why) if it cannot. */
export function findRedis(): string | null {
  const which = () => shell('command -v redis-server')
  if (which()) return which()
  console.log('redis-server is missing: running scripts/deps.sh --bench to install it')
  const deps = Bun.spawnSync(['bash', join(REPO_ROOT, 'scripts/deps.sh'), '--bench'], { stdout: 'inherit', stderr: 'inherit' })
  return deps.success && which() ? which() : null
}

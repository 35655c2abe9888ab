// End-to-end harness: spawns real server processes (`bun run src/index.ts ...`) on free
// loopback ports, collects their output, waits for them to answer, and tears everything down.
//
//   const nodes = await startCluster(3);
//   ...
//   afterAll(() => stopAll());
//
// Set CLUSTER_LOGS=1 to stream every node's output live (prefixed with the node's name), and
// CLUSTER_NODE_COMMAND="dist/websocket-cluster" to run the nodes from another command.

import { resolve } from 'node:path'
import { waitFor as waitUntil } from './wait'

/** The plain boolean wait of ./wait, re-exported so tests need one import. */
export { waitUntil }

export const REPO_ROOT = resolve(import.meta.dir, '../..')
export const ENTRY = resolve(REPO_ROOT, 'src/index.ts')
export const DEFAULT_SYSTEM_NAME = 'WebSocketClusterSystem'
export const HOST = '127.0.0.1'

const START_TIMEOUT_MS = 20_000
const STOP_GRACE_MS = 10_000
const HTTP_TIMEOUT_MS = 2_000
const LOG_CHARS_MAX = 4 * 1024 * 1024

// ---------------------------------------------------------------- waitFor

export interface WaitOptions {
  timeoutMs?: number
  intervalMs?: number
  message?: string
}

/**
 * Polls `fn` until it returns a truthy value and resolves with that value. An exception
 * counts as "not yet". At the deadline it rejects with `message` plus the last value or error.
 * Built on the plain boolean `waitFor` of ./wait, which it extends with a result and details.
 */
export async function waitFor<T>(fn: () => T | Promise<T>, options: WaitOptions = {}): Promise<NonNullable<T>> {
  const { timeoutMs = 15_000, intervalMs = 50, message = 'condition not met' } = options
  let result: NonNullable<T> | undefined
  let last: { value?: unknown; error?: unknown } = {}
  const deadline = performance.now() + timeoutMs
  const attempt = async (): Promise<boolean> => {
    try {
      const value = await fn()
      if (value) {
        result = value as NonNullable<T>
        return true
      }
      last = { value }
    } catch (error) {
      last = { error }
    }
    // ./wait polls every few ms; space out attempts as asked, without overshooting the deadline.
    await Bun.sleep(Math.max(0, Math.min(intervalMs, deadline - performance.now())))
    return false
  }
  try {
    await waitUntil(attempt, timeoutMs, message)
  } catch {
    const detail =
      'error' in last && last.error !== undefined
        ? `last error: ${last.error instanceof Error ? last.error.message : String(last.error)}`
        : `last value: ${describe(last.value)}`
    throw new Error(`${message} (after ${timeoutMs} ms; ${detail})`)
  }
  return result as NonNullable<T>
}

function describe(value: unknown): string {
  try {
    const text = JSON.stringify(value)
    if (text === undefined) return String(value)
    return text.length > 2000 ? `${text.slice(0, 2000)}…` : text
  } catch {
    return String(value)
  }
}

// ---------------------------------------------------------------- ports

const handedOutPorts = new Set<number>()

/** A port that was free a moment ago on 127.0.0.1 (never the same one twice per process). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const listener = Bun.listen({ hostname: HOST, port: 0, socket: { data() {} } })
    const port = listener.port
    listener.stop(true)
    if (!handedOutPorts.has(port)) {
      handedOutPorts.add(port)
      return port
    }
  }
  throw new Error('freePort: no fresh port after 50 attempts')
}

// ---------------------------------------------------------------- nodes

export interface StartNodeOptions {
  clusterPort?: number
  httpPort?: number
  /** Seed nodes as `host:port`. Default: this node's own cluster port. */
  seeds?: string[]
  /** Extra CLI arguments, appended after the ones the harness passes. */
  args?: string[]
  env?: Record<string, string>
  cwd?: string
  /**
   * Default: CLUSTER_NODE_COMMAND from the environment split on spaces (e.g. a compiled
   * binary), else ['bun', 'run', <abs path to src/index.ts>].
   */
  command?: string[]
  /** How long to wait for GET /api/cluster-info to answer. */
  startTimeoutMs?: number
  /** Label used in log prefixes; default `node:<httpPort>`. */
  name?: string
  /** The address the node listens on and is reached at (default 127.0.0.1; a netns lab's address). */
  host?: string
  /** Argv put before the command, e.g. `ip netns exec <ns>` (see ./netns.ts). */
  prefix?: string[]
}

export interface NodeHandle {
  name: string
  clusterPort: number
  httpPort: number
  httpUrl: string
  /** `bun://<system>@127.0.0.1:<clusterPort>`, as the node reports itself. */
  address: string
  proc: Bun.Subprocess<'ignore', 'pipe', 'pipe'>
  /** Everything the node printed so far (stdout and stderr, interleaved by arrival). */
  logs(): string
  kill(signal?: NodeJS.Signals | number): void
  /** Exit code (or 128+signal style code from Bun) once the process is gone. */
  exited: Promise<number>
  /** SIGTERM (graceful leave), wait; SIGKILL after `graceMs` (default 10 s). */
  stop(graceMs?: number): Promise<void>
  /** GET /api/cluster-info as JSON. */
  info(): Promise<any>
  /** GET /api/users as JSON. */
  users(): Promise<any>
  /** GET any path on the node's HTTP port. */
  fetch(path: string, init?: RequestInit): Promise<Response>
}

const liveNodes = new Set<NodeHandle>()

/** All nodes started and not yet stopped. */
export function runningNodes(): NodeHandle[] {
  return [...liveNodes]
}

function systemNameFrom(args: string[]): string {
  const i = args.indexOf('--system-name')
  const value = i >= 0 ? args[i + 1] : undefined
  return value ?? DEFAULT_SYSTEM_NAME
}

async function getJson(url: string): Promise<any> {
  const response = await fetch(url, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) })
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`)
  return response.json()
}

function collect(
  stream: ReadableStream<Uint8Array>,
  label: string,
  append: (text: string) => void,
  echo: boolean,
): Promise<void> {
  return (async () => {
    const decoder = new TextDecoder()
    let pending = ''
    try {
      for await (const chunk of stream) {
        const text = decoder.decode(chunk, { stream: true })
        append(text)
        if (echo) {
          pending += text
          const lines = pending.split('\n')
          pending = lines.pop() ?? ''
          for (const line of lines) process.stderr.write(`[${label}] ${line}\n`)
        }
      }
    } catch {
      // Stream torn down with the process: nothing more to read.
    }
    const rest = decoder.decode()
    if (rest) append(rest)
    if (echo && (pending || rest)) process.stderr.write(`[${label}] ${pending}${rest}\n`)
  })()
}

/** Prefix every line of `text` with `[label] ` (for printing a node's logs in a failure). */
export function prefixLines(label: string, text: string): string {
  return text
    .split('\n')
    .filter((line, i, all) => line.length > 0 || i < all.length - 1)
    .map((line) => `[${label}] ${line}`)
    .join('\n')
}

function defaultCommand(): string[] {
  const fromEnv = process.env.CLUSTER_NODE_COMMAND?.trim()
  return fromEnv ? fromEnv.split(/\s+/) : ['bun', 'run', ENTRY]
}

export async function startNode(options: StartNodeOptions = {}): Promise<NodeHandle> {
  const host = options.host ?? HOST
  const clusterPort = options.clusterPort ?? (await freePort())
  const httpPort = options.httpPort ?? (await freePort())
  const seeds = options.seeds ?? [`${host}:${clusterPort}`]
  const extraArgs = options.args ?? []
  const name = options.name ?? `node:${httpPort}`
  const command = [...(options.prefix ?? []), ...(options.command ?? defaultCommand())]
  const argv = [
    ...command,
    '--host',
    host,
    '--cluster-port',
    String(clusterPort),
    '--http-port',
    String(httpPort),
    '--seeds',
    seeds.join(','),
    ...extraArgs,
  ]
  const echo = process.env.CLUSTER_LOGS === '1'

  let log = ''
  const append = (text: string): void => {
    log += text
    if (log.length > LOG_CHARS_MAX) log = log.slice(log.length - LOG_CHARS_MAX)
  }

  const proc = Bun.spawn(argv, {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const drained = Promise.all([collect(proc.stdout, name, append, echo), collect(proc.stderr, name, append, echo)])
  // Resolve `exited` only after the output is drained, so logs() is complete by then.
  const exited = proc.exited.then(async (code) => {
    await Promise.race([drained, Bun.sleep(1000)])
    return code
  })
  let isExited = false
  void exited.then(() => {
    isExited = true
  })

  const httpUrl = `http://${host}:${httpPort}`
  const handle: NodeHandle = {
    name,
    clusterPort,
    httpPort,
    httpUrl,
    address: `bun://${systemNameFrom(extraArgs)}@${host}:${clusterPort}`,
    proc,
    logs: () => log,
    kill(signal: NodeJS.Signals | number = 'SIGKILL') {
      if (!isExited) proc.kill(signal)
    },
    exited,
    async stop(graceMs = STOP_GRACE_MS) {
      try {
        if (!isExited) {
          proc.kill('SIGTERM')
          const graceful = await Promise.race([exited.then(() => true), Bun.sleep(graceMs).then(() => false)])
          if (!graceful) {
            proc.kill('SIGKILL')
            await exited
          }
        }
      } finally {
        liveNodes.delete(handle)
      }
    },
    info: () => getJson(`${httpUrl}/api/cluster-info`),
    users: () => getJson(`${httpUrl}/api/users`),
    fetch: (path, init) => fetch(`${httpUrl}${path}`, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS), ...init }),
  }
  liveNodes.add(handle)

  const timeoutMs = options.startTimeoutMs ?? START_TIMEOUT_MS
  let failure: string | null = null
  try {
    const answer = await waitFor(
      async () => {
        if (isExited) return { exited: true as const }
        const info = await handle.info().catch(() => null)
        return info ? { exited: false as const, info } : null
      },
      { timeoutMs, intervalMs: 100, message: `${name} did not answer GET /api/cluster-info` },
    )
    if (answer.exited) failure = `process exited early with code ${await exited}`
    else if (typeof answer.info.selfAddress === 'string') handle.address = answer.info.selfAddress
  } catch (error) {
    failure = error instanceof Error ? error.message : String(error)
  }
  if (failure !== null) {
    await handle.stop(2000)
    const exitCode = proc.exitCode ?? proc.signalCode
    throw new Error(
      `startNode failed: ${failure}\ncommand: ${argv.join(' ')}\nexit: ${exitCode}\n` +
        `--- ${name} output ---\n${prefixLines(name, log) || `[${name}] (no output)`}`,
    )
  }
  return handle
}

// ---------------------------------------------------------------- clusters

export interface StartClusterOptions extends Omit<StartNodeOptions, 'clusterPort' | 'httpPort' | 'seeds' | 'name'> {
  /** How long to wait for all nodes to agree (n Up members, one leader). */
  convergeTimeoutMs?: number
  /** Per-node extra args, by index (appended after `args`). */
  nodeArgs?: (index: number) => string[]
}

/**
 * Starts `n` nodes on fresh ports, every node seeded with all nodes' cluster ports. Node 1
 * starts first, the others after it in parallel. Resolves when every node reports `n` members
 * `Up` and the same leader.
 */
export async function startCluster(n: number, options: StartClusterOptions = {}): Promise<NodeHandle[]> {
  if (!Number.isInteger(n) || n < 1) throw new Error(`startCluster: n must be a positive integer, got ${n}`)
  const { convergeTimeoutMs = 30_000, nodeArgs, ...nodeOptions } = options
  const clusterPorts: number[] = []
  const httpPorts: number[] = []
  for (let i = 0; i < n; i++) {
    clusterPorts.push(await freePort())
    httpPorts.push(await freePort())
  }
  const seeds = clusterPorts.map((port) => `${HOST}:${port}`)
  const optionsFor = (i: number): StartNodeOptions => ({
    ...nodeOptions,
    clusterPort: clusterPorts[i],
    httpPort: httpPorts[i],
    seeds,
    name: `node${i + 1}:${httpPorts[i]}`,
    args: [...(nodeOptions.args ?? []), ...(nodeArgs?.(i) ?? [])],
  })

  const nodes: NodeHandle[] = []
  try {
    nodes.push(await startNode(optionsFor(0)))
    const rest = await Promise.allSettled(Array.from({ length: n - 1 }, (_, k) => startNode(optionsFor(k + 1))))
    for (const result of rest) if (result.status === 'fulfilled') nodes.push(result.value)
    const failed = rest.find((result): result is PromiseRejectedResult => result.status === 'rejected')
    if (failed) throw failed.reason
    await waitForConvergence(nodes, { timeoutMs: convergeTimeoutMs })
  } catch (error) {
    await Promise.all(nodes.map((node) => node.stop(2000)))
    throw error
  }
  return nodes
}

export interface ClusterView {
  node: string
  leader: string | null
  members: { address: string; status: string; reachable: boolean }[]
}

/**
 * Waits until every node in `nodes` sees exactly the addresses of `nodes` as `Up` and
 * reachable members, and all agree on one non-null leader. Resolves with that leader.
 * On timeout the error shows each node's view and the tail of its logs.
 */
export async function waitForConvergence(
  nodes: NodeHandle[],
  options: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<string> {
  const expected = nodes.map((node) => node.address).sort()
  let views: (ClusterView | string)[] = []
  try {
    return await waitFor(
      async () => {
        views = await Promise.all(
          nodes.map(async (node) => {
            try {
              const info = await node.info()
              return {
                node: node.address,
                leader: info.leader ?? null,
                members: (info.members ?? []).map((m: any) => ({
                  address: m.address,
                  status: m.status,
                  reachable: m.reachable,
                })),
              } satisfies ClusterView
            } catch (error) {
              return `${node.address}: ${String(error)}`
            }
          }),
        )
        const leaders = new Set<string | null>()
        for (const view of views) {
          if (typeof view === 'string') return null
          const up = view.members
            .filter((m) => m.status === 'Up' && m.reachable !== false)
            .map((m) => m.address)
            .sort()
          if (up.length !== view.members.length) return null
          if (JSON.stringify(up) !== JSON.stringify(expected)) return null
          leaders.add(view.leader)
        }
        const [leader] = [...leaders]
        return leaders.size === 1 && leader ? leader : null
      },
      {
        timeoutMs: options.timeoutMs ?? 30_000,
        intervalMs: options.intervalMs ?? 100,
        message: `cluster of ${nodes.length} did not converge`,
      },
    )
  } catch (error) {
    const tails = nodes
      .map((node) => `--- ${node.name} (last lines) ---\n${prefixLines(node.name, tail(node.logs(), 40))}`)
      .join('\n')
    throw new Error(`${(error as Error).message}\nviews: ${describe(views)}\n${tails}`)
  }
}

function tail(text: string, lines: number): string {
  return text
    .split('\n')
    .slice(-lines - 1)
    .join('\n')
}

/** Stops every node this process started: SIGTERM in parallel, SIGKILL after `graceMs`. */
export async function stopAll(graceMs = STOP_GRACE_MS): Promise<void> {
  const nodes = [...liveNodes]
  await Promise.all(nodes.map((node) => node.stop(graceMs)))
}

// If the test process dies without afterAll, do not leave servers behind.
process.on('exit', () => {
  for (const node of liveNodes) {
    try {
      node.proc.kill('SIGKILL')
    } catch {
      // Already gone.
    }
  }
})

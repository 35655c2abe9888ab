// `make cluster`: three local nodes with their logs prefixed [node1]..[node3]. Ctrl-C reaches
// every node (same process group), each leaves the cluster, and this script exits when all have.
const nodes = [1, 2, 3].map((i) => ({ name: `node${i}`, clusterPort: 2550 + i, httpPort: 8080 + i }))
const seeds = nodes.map((n) => `127.0.0.1:${n.clusterPort}`).join(',')
const entry = new URL('../src/index.ts', import.meta.url).pathname

async function pipe(stream: ReadableStream<Uint8Array>, prefix: string, out: NodeJS.WriteStream) {
  let pending = ''
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (pending + chunk).split('\n')
    pending = lines.pop() ?? ''
    for (const line of lines) out.write(`${prefix} ${line}\n`)
  }
  if (pending) out.write(`${prefix} ${pending}\n`)
}

const procs = nodes.map((n, index) => {
  const proc = Bun.spawn(
    ['bun', 'run', entry, '--cluster-port', String(n.clusterPort), '--http-port', String(n.httpPort), '--seeds', seeds, ...process.argv.slice(2)],
    { stdout: 'pipe', stderr: 'pipe', env: { ...process.env } },
  )
  void pipe(proc.stdout, `[${n.name}]`, process.stdout)
  void pipe(proc.stderr, `[${n.name}]`, process.stderr)
  if (index === 0) console.log(`chat: ${nodes.map((x) => `http://localhost:${x.httpPort}`).join('  ')}  (Ctrl-C stops all three)`)
  return proc
})

let stopping = false
const stop = (signal: NodeJS.Signals) => {
  if (stopping) return
  stopping = true
  for (const p of procs) p.kill(signal)
  // A node that has not left within 10 s is killed so Ctrl-C always returns the terminal.
  setTimeout(() => procs.forEach((p) => p.kill('SIGKILL')), 10_000).unref()
}
process.on('SIGINT', () => stop('SIGINT'))
process.on('SIGTERM', () => stop('SIGTERM'))

const codes = await Promise.all(procs.map((p) => p.exited))
process.exit(stopping ? 0 : Math.max(...codes))

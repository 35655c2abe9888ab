// A load process for bench/overload.ts: `bun run bench/load-client.ts <httpUrl> <clients> <perSecond|flood> <seconds> <tag>`.
export {}
// Each client connects and sends chat as fast as it can (`flood`) or at `perSecond`; the process
// exits by itself when the time is up (one JS thread saturates near one core, so load needs several).
const [url = "", clientsArg, rateArg, secondsArg, tag] = process.argv.slice(2)
const clients = Number(clientsArg)
const seconds = Number(secondsArg)
const flood = rateArg === 'flood'
const perSecond = flood ? 0 : Number(rateArg)
const end = performance.now() + seconds * 1000
let sent = 0
const sockets: WebSocket[] = []
await Promise.all(
  Array.from({ length: clients }, (_, i) => new Promise<void>((resolve) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/ws/chat?username=${tag}${i}`)
    ws.onopen = () => resolve()
    ws.onerror = () => resolve()
    sockets.push(ws)
  })),
)
if (flood) {
  const pump = () => {
    if (performance.now() > end) return finish()
    for (const ws of sockets) {
      if (ws.readyState !== WebSocket.OPEN) continue
      for (let k = 0; k < 500 && ws.bufferedAmount < 1 << 20; k++) ws.send(`flood ${sent++}`), k
    }
    setImmediate(pump)
  }
  pump()
} else {
  const timer = setInterval(() => {
    if (performance.now() > end) return clearInterval(timer), finish()
    for (const ws of sockets) if (ws.readyState === WebSocket.OPEN) ws.send(`load ${sent++}`)
  }, 1000 / perSecond)
}
function finish() {
  for (const ws of sockets) ws.close()
  console.log(JSON.stringify({ sent }))
  setTimeout(() => process.exit(0), 200)
}

// A load process for bench/overload.ts: `bun run bench/load-client.ts <httpUrl> <clients> <perSecond|flood|reflood> <seconds> <tag>`.
export {}
// Each client connects and sends chat as fast as it can (`flood`), as fast as it can and
// reconnecting at once whenever it is closed (`reflood`: what an attacker does after a 4429), or
// at `perSecond`; the process exits by itself when the time is up (one JS thread saturates near
// one core, so load needs several).
const [url = "", clientsArg, rateArg, secondsArg, tag] = process.argv.slice(2)
const clients = Number(clientsArg)
const seconds = Number(secondsArg)
const reflood = rateArg === 'reflood'
const flood = rateArg === 'flood' || reflood
let reconnects = 0
/** Connections refused (a node sheds new sockets while behind) and tried again after a pause, as the page does. */
let retries = 0
const perSecond = flood ? 0 : Number(rateArg)
const end = performance.now() + seconds * 1000
let sent = 0
const sockets: WebSocket[] = []
// At a rate, each client speaks as soon as it is in, as real ones do (a node that sheds new sockets
// lets them in over seconds); a flood starts once every client is in.
let timer: ReturnType<typeof setInterval> | undefined
if (!flood) {
  timer = setInterval(() => {
    if (performance.now() > end) return clearInterval(timer), finish()
    for (const ws of sockets) if (ws.readyState === WebSocket.OPEN) ws.send(`load ${sent++}`)
  }, 1000 / perSecond)
}
const allIn = Promise.all(
  Array.from({ length: clients }, (_, i) => new Promise<void>((resolve) => {
    const open = (): WebSocket => {
      const ws = new WebSocket(`${url.replace('http', 'ws')}/ws/chat?username=${tag}${i}`)
      let opened = false
      ws.onopen = () => ((opened = true), resolve())
      ws.onclose = () => {
        if (performance.now() > end) return resolve()
        if (reflood) {
          reconnects++
          sockets[i] = open()
        } else if (!opened) {
          retries++
          setTimeout(() => (sockets[i] = open()), 200 + Math.random() * 500)
        }
      }
      return ws
    }
    sockets[i] = open()
  })),
)
if (flood) {
  await allIn
  const pump = () => {
    if (performance.now() > end) return finish()
    for (const ws of sockets) {
      if (ws.readyState !== WebSocket.OPEN) continue
      for (let k = 0; k < 500 && ws.bufferedAmount < 1 << 20; k++) ws.send(`flood ${sent++}`), k
    }
    setImmediate(pump)
  }
  pump()
}
let finished = false
function finish() {
  if (finished) return
  finished = true
  const open = sockets.filter((ws) => ws.readyState === WebSocket.OPEN).length
  for (const ws of sockets) ws.close()
  console.log(JSON.stringify({ sent, reconnects, retries, open }))
  setTimeout(() => process.exit(0), 200)
}

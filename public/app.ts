/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// Browser client for the cluster chat. No framework, no imports from src/: it speaks the
// wire contract only (JSON text frames on /ws/chat, JSON from /api/cluster-info).
// Every piece of user or server text is rendered with textContent, never innerHTML.

const MESSAGE_CHARS_MAX = 2000
const USERNAME_CHARS_MAX = 32
const USERNAME_PATTERN = /^[\p{L}\p{M}\p{N} _.\-]+$/u
const MESSAGES_KEPT_MAX = 500
const RECONNECT_DELAY_MS_MIN = 500
const RECONNECT_DELAY_MS_MAX = 10_000
const CLUSTER_POLL_MS = 2000
const CLUSTER_FETCH_TIMEOUT_MS = 1500
const STICK_TO_BOTTOM_PX = 80
const STORAGE_KEY = 'cluster-chat.username'

// Close codes the server uses to refuse a connection: no reconnect after these.
const CLOSE_INVALID_USERNAME = 4400
const CLOSE_USERNAME_TAKEN = 4409
const CLOSE_UNAUTHORIZED = 4401
const CLOSE_FLOODING = 4429
const CLOSE_UNSUPPORTED_DATA = 1003
const CLOSE_MESSAGE_TOO_BIG = 1009
// The node is going away: move to another member at once, without an error.
const CLOSE_GOING_AWAY = 1001
const CLOSE_SERVICE_RESTART = 1012
/** After a move, the old node's leave may not have reached the new one yet: retry a taken name this long. */
const MOVE_NAME_RETRY_MS = 10_000
/** Chat rate per node in the cluster panel: messages seen over this window. */
const RATE_WINDOW_MS = 10_000

type ConnectionState = 'connecting' | 'online' | 'offline'

interface ChatFrame {
  type: 'chat'
  username: string
  message: string
  nodeAddress: string
  timestamp: number
}
interface SystemFrame {
  type: 'system'
  message: string
  timestamp: number
  event?: string
  username?: string
}
interface UserEntry {
  username: string
  nodeAddress: string
  connectedAt?: number
}
interface UsersFrame {
  type: 'users'
  users: UserEntry[]
}
/**
 * Changes to the user list since the last such frame (the full list comes once, in `users`, on
 * connect): apply the leaves, then the joins. A frame may repeat what `users` already holds.
 */
interface PresenceFrame {
  type: 'presence'
  joins: UserEntry[]
  leaves: UserEntry[]
}
interface WelcomeFrame {
  type: 'welcome'
  username: string
  nodeAddress: string
}
/** The last frame we sent was refused (too long, bad characters, over the rate limit). */
interface ErrorFrame {
  type: 'error'
  code: string
  message: string
}
/** The node drains (restart): the other members to reconnect to, just before a 1012 close. */
interface MovingFrame {
  type: 'moving'
  reason: string
  members: Array<{ nodeAddress: string; httpUrl: string }>
}
type ServerFrame = ChatFrame | SystemFrame | UsersFrame | PresenceFrame | WelcomeFrame | ErrorFrame | MovingFrame

/**
 * A signed token given in this page's own URL (`/?token=…`), for servers that require one: the
 * page connects with it instead of asking for a name, and the server takes the name from it.
 */
const pageToken = new URLSearchParams(location.search).get('token')

interface ClusterMember {
  address: string
  status: string
  reachable: boolean
  incarnation?: string
  httpUrl?: string
  leader?: boolean
}
interface ClusterInfo {
  selfAddress: string
  leader: string | null
  term?: number
  status?: string
  members: ClusterMember[]
}

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id)
  if (!el) throw new Error(`missing element #${id}`)
  return el as T
}

const ui = {
  joinView: byId<HTMLElement>('join-view'),
  joinForm: byId<HTMLFormElement>('join-form'),
  nameInput: byId<HTMLInputElement>('name-input'),
  joinButton: byId<HTMLButtonElement>('join-button'),
  chatView: byId<HTMLElement>('chat-view'),
  messages: byId<HTMLOListElement>('messages'),
  composer: byId<HTMLFormElement>('composer'),
  messageInput: byId<HTMLTextAreaElement>('message-input'),
  sendButton: byId<HTMLButtonElement>('send-button'),
  counter: byId<HTMLElement>('message-counter'),
  users: byId<HTMLUListElement>('users'),
  usersCount: byId<HTMLElement>('users-count'),
  members: byId<HTMLUListElement>('cluster-members'),
  clusterTerm: byId<HTMLElement>('cluster-term'),
  clusterNote: byId<HTMLElement>('cluster-note'),
  status: byId<HTMLElement>('connection-status'),
  error: byId<HTMLElement>('error'),
  me: byId<HTMLElement>('me'),
  leaveButton: byId<HTMLButtonElement>('leave-button'),
}

const state = {
  username: '',
  nodeAddress: '',
  socket: null as WebSocket | null,
  connection: 'offline' as ConnectionState,
  reconnectAttempt: 0,
  reconnectTimer: 0 as ReturnType<typeof setTimeout> | 0,
  clusterTimer: 0 as ReturnType<typeof setTimeout> | 0,
  clusterController: null as AbortController | null,
  users: new Map<string, UserEntry>(),
  usersRenderPending: false,
  /** The node this page talks to (its origin at first; another member after a move). */
  base: location.origin,
  /** Where to try next when the connection goes: other members, then this page's own origin. */
  candidates: [] as string[],
  /** Other members' URLs, from the last cluster info. */
  members: [] as string[],
  movedAt: 0,
  lastCluster: null as ClusterInfo | null,
  /** Arrival times of chat messages, by the node they came from (the panel's rates). */
  chatTimes: new Map<string, number[]>(),
}

// ---------------------------------------------------------------- helpers

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  opts: { className?: string; testid?: string; text?: string; title?: string } = {},
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag)
  if (opts.className) node.className = opts.className
  if (opts.testid) node.dataset.testid = opts.testid
  if (opts.text !== undefined) node.textContent = opts.text
  if (opts.title) node.title = opts.title
  return node
}

/** `bun://System@127.0.0.1:2551` -> `127.0.0.1:2551` (the part after the last `@`). */
function nodeLabel(address: string | undefined | null): string {
  if (!address) return '?'
  const at = address.lastIndexOf('@')
  if (at >= 0) return address.slice(at + 1)
  return address.replace(/^[a-z]+:\/\//i, '')
}

function pad2(n: number): string {
  return String(n).padStart(2, '0')
}

function formatTime(timestamp: number): { short: string; full: string } {
  const date = new Date(Number.isFinite(timestamp) ? timestamp : Date.now())
  return {
    short: `${pad2(date.getHours())}:${pad2(date.getMinutes())}`,
    full: date.toLocaleString(),
  }
}

function validateUsername(raw: string): string | null {
  const name = raw.trim()
  if (name.length === 0) return 'Please enter a name.'
  if ([...name].length > USERNAME_CHARS_MAX) return `A name has at most ${USERNAME_CHARS_MAX} characters.`
  if (!USERNAME_PATTERN.test(name)) return 'Use letters, digits, space, "_", "-" or "." only.'
  return null
}

function showError(text: string): void {
  ui.error.textContent = text
  ui.error.hidden = text.length === 0
}

function setConnection(next: ConnectionState, detail?: string): void {
  state.connection = next
  ui.status.dataset.state = next
  ui.status.textContent = detail ? `${next} (${detail})` : next
  updateSendButton()
}

function updateSendButton(): void {
  const length = ui.messageInput.value.length
  ui.counter.textContent = `${length}/${MESSAGE_CHARS_MAX}`
  ui.counter.classList.toggle('near-limit', length > MESSAGE_CHARS_MAX * 0.9)
  ui.sendButton.disabled = state.connection !== 'online' || ui.messageInput.value.trim().length === 0
}

function rememberName(name: string): void {
  try {
    localStorage.setItem(STORAGE_KEY, name)
  } catch {
    // Storage may be unavailable (private mode, disabled): remembering is only a convenience.
  }
}

function recalledName(): string {
  try {
    return localStorage.getItem(STORAGE_KEY) ?? ''
  } catch {
    return ''
  }
}

// ---------------------------------------------------------------- views

function showJoin(): void {
  ui.chatView.hidden = true
  ui.joinView.hidden = false
  ui.leaveButton.hidden = true
  ui.me.hidden = true
  ui.joinButton.disabled = false
  stopClusterPolling()
  ui.nameInput.focus()
  ui.nameInput.select()
}

function showChat(): void {
  ui.joinView.hidden = true
  ui.chatView.hidden = false
  ui.leaveButton.hidden = false
  ui.me.hidden = false
  ui.me.textContent = state.username
  startClusterPolling()
  ui.messageInput.focus()
}

// ---------------------------------------------------------------- messages

function isNearBottom(): boolean {
  const list = ui.messages
  return list.scrollHeight - list.scrollTop - list.clientHeight < STICK_TO_BOTTOM_PX
}

function appendRow(row: HTMLElement, forceScroll: boolean): void {
  const stick = forceScroll || isNearBottom()
  ui.messages.appendChild(row)
  while (ui.messages.childElementCount > MESSAGES_KEPT_MAX) ui.messages.firstElementChild?.remove()
  if (stick) ui.messages.scrollTop = ui.messages.scrollHeight
}

function renderChat(frame: ChatFrame): void {
  const own = frame.username === state.username
  const time = formatTime(frame.timestamp)
  const row = el('li', { className: own ? 'message own' : 'message', testid: 'message' })
  row.dataset.username = frame.username

  const meta = el('div', { className: 'message-meta' })
  meta.append(
    el('span', { className: 'message-user', testid: 'message-user', text: frame.username }),
    el('time', { className: 'message-time', testid: 'message-time', text: time.short, title: time.full }),
    el('span', {
      className: 'message-node',
      testid: 'message-node',
      text: nodeLabel(frame.nodeAddress),
      title: frame.nodeAddress,
    }),
  )
  const body = el('div', { className: 'message-text', testid: 'message-text', text: frame.message })
  row.append(meta, body)
  appendRow(row, own)
}

function renderSystem(text: string, timestamp: number, event?: string): void {
  const time = formatTime(timestamp)
  const row = el('li', { className: 'system-message', testid: 'system-message' })
  if (event) row.dataset.event = event
  row.append(
    el('span', { className: 'system-text', text }),
    el('time', { className: 'message-time', text: time.short, title: time.full }),
  )
  appendRow(row, false)
}

/** Many changes in a burst (a node with many users joins) are drawn once per frame. */
function scheduleUsersRender(): void {
  if (state.usersRenderPending) return
  state.usersRenderPending = true
  requestAnimationFrame(() => {
    state.usersRenderPending = false
    renderUsers([...state.users.values()])
  })
}

function renderUsers(users: UserEntry[]): void {
  const sorted = [...users].sort((a, b) => a.username.localeCompare(b.username))
  const items = sorted.map((user) => {
    const item = el('li', { className: 'user', testid: 'user' })
    item.dataset.username = user.username
    const name = el('span', { className: 'user-name', testid: 'user-name', text: user.username })
    if (user.username === state.username) {
      item.classList.add('self')
      name.append(el('span', { className: 'badge', text: 'you' }))
    }
    item.append(
      name,
      el('span', {
        className: 'user-node',
        testid: 'user-node',
        text: nodeLabel(user.nodeAddress),
        title: user.nodeAddress,
      }),
    )
    return item
  })
  ui.users.replaceChildren(...items)
  ui.usersCount.textContent = String(users.length)
  if (state.lastCluster) renderCluster(state.lastCluster)
}

// ---------------------------------------------------------------- socket

function socketUrl(username: string): string {
  const url = new URL('/ws/chat', state.base)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  url.search = pageToken ? `token=${encodeURIComponent(pageToken)}` : `username=${encodeURIComponent(username)}`
  return url.toString()
}

/** Goes on to the next place to connect to: the members the node named, then our own origin. */
function moveOn(): boolean {
  const next = state.candidates.shift()
  if (next === undefined) return false
  state.base = next
  state.movedAt = Date.now()
  connect()
  return true
}

function shuffled<T>(items: T[]): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

function parseFrame(data: unknown): ServerFrame | null {
  if (typeof data !== 'string') return null
  try {
    const value: unknown = JSON.parse(data)
    if (value && typeof value === 'object' && typeof (value as { type?: unknown }).type === 'string') {
      return value as ServerFrame
    }
  } catch {
    // Not JSON: ignored like an unknown frame type.
  }
  return null
}

function handleFrame(frame: ServerFrame): void {
  switch (frame.type) {
    case 'chat':
      if (typeof frame.message === 'string' && typeof frame.username === 'string') {
        renderChat(frame)
        noteChat(frame.nodeAddress)
      }
      return
    case 'moving':
      // Where to go when the node closes the socket in a moment; our own origin last (behind a
      // load balancer the members' own URLs may not be reachable from here).
      if (Array.isArray(frame.members)) {
        const urls = frame.members.map((m) => m.httpUrl).filter((u): u is string => typeof u === 'string' && /^https?:\/\//.test(u))
        state.candidates = [...shuffled(urls), location.origin]
      }
      return
    case 'system':
      if (typeof frame.message === 'string') renderSystem(frame.message, frame.timestamp, frame.event)
      return
    case 'users':
      if (!Array.isArray(frame.users)) return
      state.users = new Map(frame.users.map((u) => [u.username, u]))
      scheduleUsersRender()
      return
    case 'presence':
      if (!Array.isArray(frame.joins) || !Array.isArray(frame.leaves)) return
      for (const user of frame.leaves) {
        if (typeof user?.username === 'string' && state.users.get(user.username)?.nodeAddress === user.nodeAddress) state.users.delete(user.username)
      }
      for (const user of frame.joins) if (typeof user?.username === 'string') state.users.set(user.username, user)
      scheduleUsersRender()
      return
    case 'error':
      if (typeof frame.message === 'string') showError(frame.message)
      return
    case 'welcome':
      // The server's spelling of the name (normalised, or taken from the token) marks our own messages.
      if (typeof frame.username === 'string') state.username = frame.username
      state.nodeAddress = frame.nodeAddress
      ui.me.textContent = `${state.username} @ ${nodeLabel(frame.nodeAddress)}`
      return
    default:
      // Unknown frame types are ignored by contract.
      return
  }
}

function connect(): void {
  clearReconnect()
  setConnection('connecting')
  let socket: WebSocket
  try {
    socket = new WebSocket(socketUrl(state.username))
  } catch (error) {
    showError(`Cannot connect: ${String(error)}`)
    scheduleReconnect()
    return
  }
  state.socket = socket

  socket.addEventListener('open', () => {
    if (state.socket !== socket) return
    state.reconnectAttempt = 0
    state.candidates = []
    showError('')
    setConnection('online')
    startClusterPolling()
  })
  socket.addEventListener('message', (event) => {
    if (state.socket !== socket) return
    const frame = parseFrame(event.data)
    if (frame) handleFrame(frame)
  })
  socket.addEventListener('close', (event) => {
    if (state.socket !== socket) return
    state.socket = null
    handleClose(event.code, event.reason)
  })
}

function handleClose(code: number, reason: string): void {
  // The node drains or goes away: straight to another member, no error shown.
  if (code === CLOSE_SERVICE_RESTART || code === CLOSE_GOING_AWAY) {
    if (state.candidates.length === 0) state.candidates = [...shuffled(state.members), location.origin]
    setConnection('connecting', 'moving to another node')
    if (moveOn()) return
  }
  // Just moved, and the new node has not yet heard that we left the old one.
  if (code === CLOSE_USERNAME_TAKEN && Date.now() - state.movedAt < MOVE_NAME_RETRY_MS) {
    state.reconnectTimer = setTimeout(connect, 200)
    return
  }
  // Reconnecting would be refused the same way (or would flood again): stop and say why.
  if (code === CLOSE_UNAUTHORIZED) {
    setConnection('offline')
    showError(`Not signed in: ${reason || 'a valid token is required'}. Open the chat with a fresh link (?token=…).`)
    showJoin()
    return
  }
  if (code === CLOSE_FLOODING) {
    setConnection('offline')
    showError(`Disconnected for sending too fast: ${reason || 'over the rate limit'}. Join again to continue.`)
    showJoin()
    return
  }
  if (code === CLOSE_INVALID_USERNAME || code === CLOSE_USERNAME_TAKEN) {
    setConnection('offline')
    const fallback = code === CLOSE_USERNAME_TAKEN ? 'username taken' : 'invalid username'
    showError(`Cannot join as "${state.username}": ${reason || fallback}.`)
    showJoin()
    return
  }
  if (code === CLOSE_MESSAGE_TOO_BIG) showError('The last message was too long for the server.')
  else if (code === CLOSE_UNSUPPORTED_DATA) showError('The server refused data it does not support.')
  // The node died or cannot be reached: try the other members first, then wait and retry.
  if (state.reconnectAttempt === 0 && state.candidates.length === 0) state.candidates = [...shuffled(state.members), location.origin]
  if (moveOn()) return
  scheduleReconnect()
}

function scheduleReconnect(): void {
  clearReconnect()
  const exponential = RECONNECT_DELAY_MS_MIN * 2 ** Math.min(state.reconnectAttempt, 10)
  const capped = Math.min(RECONNECT_DELAY_MS_MAX, exponential)
  const delay = Math.round(capped / 2 + Math.random() * (capped / 2))
  state.reconnectAttempt += 1
  setConnection('offline', `retrying in ${Math.ceil(delay / 1000)} s`)
  state.reconnectTimer = setTimeout(connect, delay)
}

function clearReconnect(): void {
  if (state.reconnectTimer) clearTimeout(state.reconnectTimer)
  state.reconnectTimer = 0
}

function leave(): void {
  clearReconnect()
  const socket = state.socket
  state.socket = null
  socket?.close(1000, 'leaving')
  setConnection('offline')
  renderUsers([])
  showJoin()
}

function join(rawName: string): void {
  const problem = validateUsername(rawName)
  if (problem) {
    showError(problem)
    ui.nameInput.focus()
    return
  }
  const name = rawName.trim()
  showError('')
  rememberName(name)
  state.username = name
  state.nodeAddress = ''
  state.reconnectAttempt = 0
  ui.messages.replaceChildren()
  renderUsers([])
  showChat()
  connect()
}

function sendMessage(): void {
  const text = ui.messageInput.value
  if (text.trim().length === 0) return
  if (text.length > MESSAGE_CHARS_MAX) {
    showError(`A message has at most ${MESSAGE_CHARS_MAX} characters.`)
    return
  }
  const socket = state.socket
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    showError('Not connected: the message was not sent.')
    return
  }
  socket.send(JSON.stringify({ type: 'chat', message: text }))
  ui.messageInput.value = ''
  autoGrow()
  updateSendButton()
}

// ---------------------------------------------------------------- cluster panel

function noteChat(nodeAddress: string): void {
  const now = Date.now()
  const times = state.chatTimes.get(nodeAddress) ?? []
  times.push(now)
  while (times.length > 0 && times[0]! < now - RATE_WINDOW_MS) times.shift()
  state.chatTimes.set(nodeAddress, times)
}

/** Chat messages per second that came from users of `nodeAddress`, over the last window. */
function chatRate(nodeAddress: string): number {
  const now = Date.now()
  const times = (state.chatTimes.get(nodeAddress) ?? []).filter((t) => t >= now - RATE_WINDOW_MS)
  return times.length / (RATE_WINDOW_MS / 1000)
}

function renderCluster(info: ClusterInfo): void {
  const usersAt = new Map<string, number>()
  for (const user of state.users.values()) usersAt.set(user.nodeAddress, (usersAt.get(user.nodeAddress) ?? 0) + 1)
  const items = [...info.members]
    .sort((a, b) => a.address.localeCompare(b.address))
    .map((member) => {
      const item = el('li', { className: 'member', testid: 'cluster-member' })
      item.dataset.address = member.address
      item.dataset.status = member.status
      item.dataset.reachable = String(member.reachable)
      const isLeader = member.leader === true || member.address === info.leader
      const isSelf = member.address === info.selfAddress
      if (!member.reachable) item.classList.add('unreachable')

      const name = el('span', { className: 'member-name', text: nodeLabel(member.address), title: member.address })
      if (isLeader) {
        item.classList.add('leader')
        name.append(el('span', { className: 'badge leader-badge', testid: 'leader-badge', text: 'leader' }))
      }
      if (isSelf) {
        item.classList.add('self')
        name.append(el('span', { className: 'badge self-badge', testid: 'self-badge', text: 'this node' }))
      }
      const status = el('span', {
        className: `member-status status-${member.status.toLowerCase()}`,
        text: member.reachable ? member.status : `${member.status} · unreachable`,
      })
      // What an operator watches during a failover: which run of the node, its users, its traffic.
      const rate = chatRate(member.address)
      const details = el('span', {
        className: 'member-details',
        testid: 'member-details',
        text: `${member.incarnation ? `#${member.incarnation} · ` : ''}${usersAt.get(member.address) ?? 0} users · ${rate < 10 ? rate.toFixed(1) : Math.round(rate)} msg/s`,
      })
      item.dataset.users = String(usersAt.get(member.address) ?? 0)
      item.append(name, status, details)
      return item
    })
  ui.members.replaceChildren(...items)
  ui.clusterTerm.textContent = typeof info.term === 'number' ? `term ${info.term}` : ''
  ui.clusterNote.textContent = info.leader ? '' : 'No leader right now.'
}

async function pollCluster(): Promise<void> {
  state.clusterController?.abort()
  const controller = new AbortController()
  state.clusterController = controller
  const timeout = setTimeout(() => controller.abort(), CLUSTER_FETCH_TIMEOUT_MS)
  try {
    const response = await fetch(new URL('/api/cluster-info', state.base), { signal: controller.signal, cache: 'no-store' })
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    const info = (await response.json()) as ClusterInfo
    if (!Array.isArray(info.members)) throw new Error('malformed cluster info')
    state.lastCluster = info
    state.members = info.members
      .filter((m) => m.address !== info.selfAddress && m.status === 'Up' && m.reachable && typeof m.httpUrl === 'string')
      .map((m) => m.httpUrl!)
    renderCluster(info)
  } catch (error) {
    if (state.clusterController === controller) {
      ui.clusterNote.textContent = `Cluster info unavailable (${error instanceof Error ? error.message : String(error)}).`
    }
  } finally {
    clearTimeout(timeout)
  }
}

function startClusterPolling(): void {
  stopClusterPolling()
  const loop = async (): Promise<void> => {
    if (!document.hidden) await pollCluster()
    if (ui.chatView.hidden) return
    state.clusterTimer = setTimeout(loop, CLUSTER_POLL_MS)
  }
  void loop()
}

function stopClusterPolling(): void {
  if (state.clusterTimer) clearTimeout(state.clusterTimer)
  state.clusterTimer = 0
  state.clusterController?.abort()
  state.clusterController = null
}

// ---------------------------------------------------------------- wiring

function autoGrow(): void {
  const input = ui.messageInput
  input.style.height = 'auto'
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`
}

ui.joinForm.addEventListener('submit', (event) => {
  event.preventDefault()
  join(ui.nameInput.value)
})

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault()
  sendMessage()
})

ui.messageInput.addEventListener('keydown', (event) => {
  // Enter sends; Shift+Enter inserts a line break. Never send while an IME (Korean,
  // Japanese, ...) is composing: that Enter only commits the composed syllable.
  if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.keyCode === 229) return
  event.preventDefault()
  sendMessage()
})

ui.messageInput.addEventListener('input', () => {
  autoGrow()
  updateSendButton()
})

ui.leaveButton.addEventListener('click', leave)

window.addEventListener('online', () => {
  if (state.username && !state.socket && !ui.chatView.hidden) connect()
})

ui.messageInput.maxLength = MESSAGE_CHARS_MAX
ui.nameInput.maxLength = USERNAME_CHARS_MAX
ui.nameInput.value = recalledName()
setConnection('offline')
if (pageToken) {
  // Signed in by the link: no name to ask for. The welcome frame tells us who we are.
  showChat()
  connect()
} else showJoin()

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
/** Per tab (sessionStorage): the transcript position and the unacknowledged messages, so a reload resumes. */
const SESSION_KEY = 'cluster-chat.session'
/** Older lines asked of /api/messages at a time (the server caps a page at 500). */
const OLDER_PAGE_LINES = 50
/** Scrolled this close to the top: older lines are loaded. */
const LOAD_OLDER_PX = 40
/** Sends the page allows itself, as the server's token bucket does (40 at once, 20 a second): a queue flushed after a reconnect stays under it. */
const SEND_BURST = 30
const SEND_PER_SECOND = 15
/** A message sent and not acknowledged for this long is sent again with the same clientMsgId (doubling, up to the max). */
const RESEND_AFTER_MS_MIN = 5_000
const RESEND_AFTER_MS_MAX = 30_000
/** What the server accepts as a clientMsgId. */
const CLIENT_MSG_ID_CHARS = 24
// What the server refuses in a message (C0/C1 controls but tab and newline, bidi overrides): checked
// before queueing, so a message that can never be taken does not sit pending forever.
const FORBIDDEN_IN_TEXT = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u202A-\u202E]/

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
  /** Place in the cluster-wide transcript: increasing, the same on every node (of one epoch). */
  id: number
  username: string
  message: string
  nodeAddress: string
  timestamp: number
}
interface SystemFrame {
  type: 'system'
  id?: number
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
type LineFrame = ChatFrame | SystemFrame
/**
 * Lines this connection did not get live: the latest ones on a first connect, the ones after
 * `since` on a resume, a page of /api/messages. `complete: false`: some could not be recovered.
 */
interface HistoryFrame {
  type: 'history'
  epoch: string
  messages: LineFrame[]
  complete: boolean
}
/** Our chat with this clientMsgId has its place in the transcript. */
interface AckFrame {
  type: 'ack'
  clientMsgId: string
  id: number
}
type ServerFrame = ChatFrame | SystemFrame | HistoryFrame | AckFrame | UsersFrame | PresenceFrame | WelcomeFrame | ErrorFrame | MovingFrame

/** A message the user sent that has no place in the transcript yet (or whose line has not arrived). */
interface Pending {
  clientMsgId: string
  text: string
  row: HTMLElement | null
  /** The connection it was last sent on (0: not sent on any), when, and how often. */
  sentOn: number
  sentAt: number
  sends: number
  /** Its id, once acknowledged; the row goes when the line itself is shown. */
  ackedId: number | null
}

/** What a tab keeps across a reload. */
interface SavedSession {
  username: string
  epoch: string
  lastId: number
  heard: boolean
  pending: Array<{ clientMsgId: string; text: string }>
}

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
  /** Counts connections, so a pending message knows whether it went out on the current one. */
  connectionNo: 0,
  /** The current connection was admitted (welcome received): sends go out. */
  admitted: false,
  /** The current connection's history frame is still to come, and whether it resumes (`since` sent). */
  awaitingHistory: false,
  resuming: false,
}

/** Where this page is in the transcript. */
const transcript = {
  /** The transcript the ids belong to ('' until a history frame names it). */
  epoch: '',
  /** Highest line id seen (0: none). */
  lastId: 0,
  /** Whether this page has heard the transcript at all (then `since=lastId` resumes, even from 0). */
  heard: false,
  /** Rows shown, by line id: duplicates are dropped, whatever the server sends. */
  rows: new Map<number, HTMLElement>(),
  olderLoading: false,
  /** Nothing older to load (the start, or what the node no longer holds). */
  olderDone: false,
}

/** What the user sent and is not yet in the transcript, oldest first. */
let outbox: Pending[] = []
const send = { tokens: SEND_BURST, refilledAt: 0, timer: 0 as ReturnType<typeof setTimeout> | 0 }

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
  // Offline too: what is typed then is queued and sent on reconnect.
  ui.sendButton.disabled = ui.messageInput.value.trim().length === 0
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
//
// The list holds, in order: the "load earlier" row, transcript lines (chat and system, each with
// its id, in id order), notes between them (dividers, "reconnected: …"), and last the user's
// pending messages. Lines go in by id, so a line that arrives twice or late lands once, in place.

function isNearBottom(): boolean {
  const list = ui.messages
  return list.scrollHeight - list.scrollTop - list.clientHeight < STICK_TO_BOTTOM_PX
}

/** The first pending row: lines and notes go before it, so pending messages stay at the bottom. */
function firstPendingRow(): Element | null {
  return ui.messages.querySelector(':scope > .pending')
}

function scrollToEnd(stick: boolean): void {
  if (stick) ui.messages.scrollTop = ui.messages.scrollHeight
}

/** A note or divider at the end of the transcript shown so far (before pending messages). */
function appendNote(row: HTMLElement): void {
  const stick = isNearBottom()
  ui.messages.insertBefore(row, firstPendingRow())
  scrollToEnd(stick)
}

function noteRow(text: string, testid: string, className = 'note'): HTMLElement {
  const row = el('li', { className, testid })
  row.append(el('span', { className: 'note-text', text }))
  return row
}

function chatRow(frame: ChatFrame): HTMLElement {
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
  row.append(meta, el('div', { className: 'message-text', testid: 'message-text', text: frame.message }))
  return row
}

function systemRow(text: string, timestamp: number, event?: string): HTMLElement {
  const time = formatTime(timestamp)
  const row = el('li', { className: 'system-message', testid: 'system-message' })
  if (event) row.dataset.event = event
  row.append(
    el('span', { className: 'system-text', text }),
    el('time', { className: 'message-time', text: time.short, title: time.full }),
  )
  return row
}

function isLine(frame: unknown): frame is LineFrame {
  if (!frame || typeof frame !== 'object') return false
  const f = frame as { type?: unknown; message?: unknown; username?: unknown }
  if (f.type === 'chat') return typeof f.message === 'string' && typeof f.username === 'string'
  return f.type === 'system' && typeof f.message === 'string'
}

/**
 * Shows one transcript line where its id puts it; false when it is shown already (or has no id
 * and is not shown: a line without an id comes only from an older server, shown at the end).
 * `where`: `end` for live and resumed lines, `top` for older ones (loaded above).
 */
function showLine(frame: LineFrame, opts: { history?: boolean; where?: 'end' | 'top' } = {}): boolean {
  const id = typeof frame.id === 'number' && Number.isFinite(frame.id) ? frame.id : null
  if (id !== null && transcript.rows.has(id)) return false
  const row = frame.type === 'chat' ? chatRow(frame) : systemRow(frame.message, frame.timestamp, frame.event)
  if (opts.history) row.classList.add('from-history')
  if (id === null) {
    appendNote(row)
    return true
  }
  row.dataset.id = String(id)
  transcript.rows.set(id, row)
  const stick = (frame.type === 'chat' && frame.username === state.username) || isNearBottom()
  ui.messages.insertBefore(row, placeFor(id, opts.where ?? 'end'))
  if (id > transcript.lastId) transcript.lastId = id
  transcript.heard = true
  if (frame.type === 'chat') settleLine(id)
  if (opts.where !== 'top') {
    trimOld(stick)
    scrollToEnd(stick)
  }
  return true
}

/** The row a line with `id` goes before. */
function placeFor(id: number, where: 'end' | 'top'): Element | null {
  const children = ui.messages.children
  if (where === 'end') {
    // Lines come in order: the place is nearly always the end; search back from there.
    let before: Element | null = firstPendingRow()
    for (let i = (before ? indexOf(before) : children.length) - 1; i >= 0; i--) {
      const other = children[i] as HTMLElement
      if (other.dataset.id === undefined) continue
      if (Number(other.dataset.id) < id) break
      before = other
    }
    return before
  }
  for (let i = 0; i < children.length; i++) {
    const other = children[i] as HTMLElement
    if (other.dataset.id !== undefined && Number(other.dataset.id) > id) return other
    if (other.classList.contains('pending')) return other
  }
  return firstPendingRow()
}

function indexOf(row: Element): number {
  return Array.prototype.indexOf.call(ui.messages.children, row)
}

/** Keeps at most MESSAGES_KEPT_MAX lines, dropping the oldest, but only while the user reads the end. */
function trimOld(stick: boolean): void {
  if (!stick || transcript.rows.size <= MESSAGES_KEPT_MAX) return
  let first = ui.messages.firstElementChild as HTMLElement | null
  while (first && transcript.rows.size > MESSAGES_KEPT_MAX) {
    const next = first.nextElementSibling as HTMLElement | null
    if (first.dataset.id !== undefined) transcript.rows.delete(Number(first.dataset.id))
    if (first.dataset.testid !== 'load-older' && !first.classList.contains('pending')) first.remove()
    first = next
  }
  // Notes left above the oldest line belong to lines that are gone.
  for (let row = ui.messages.firstElementChild as HTMLElement | null; row && row.dataset.id === undefined && !row.classList.contains('pending'); ) {
    const next = row.nextElementSibling as HTMLElement | null
    if (row.dataset.testid !== 'load-older') row.remove()
    row = next
  }
  transcript.olderDone = false
  renderLoadOlder()
}

/** The ids mean nothing any more (a cluster started anew): lines shown stay, as text only. */
function forgetIds(): void {
  for (const row of transcript.rows.values()) delete row.dataset.id
  transcript.rows.clear()
  transcript.lastId = 0
  // Older lines of the new transcript can still be loaded (above its first line shown).
  transcript.olderDone = false
  renderLoadOlder()
}

/**
 * The history frame of a connection: after a first connect, the latest lines, set apart under
 * "earlier messages"; after a resume, what was missed, with a note of how much. Any later
 * history frame is live: the node itself skipped lines.
 */
function showHistory(frame: HistoryFrame): void {
  const lines = frame.messages.filter(isLine)
  const epoch = typeof frame.epoch === 'string' ? frame.epoch : ''
  const first = state.awaitingHistory
  state.awaitingHistory = false
  const restarted = epoch !== '' && transcript.epoch !== '' && epoch !== transcript.epoch
  if (restarted) {
    forgetIds()
    appendNote(noteRow('the chat was started anew: some older messages could not be recovered', 'lost-note', 'note warn'))
  } else if (frame.complete === false) {
    appendNote(noteRow(first ? 'some older messages could not be recovered' : 'some messages could not be recovered', 'lost-note', 'note warn'))
  }
  if (epoch !== '') transcript.epoch = epoch
  transcript.heard = true
  if (first && state.resuming && !restarted) {
    const fresh = lines.filter((l) => typeof l.id !== 'number' || !transcript.rows.has(l.id))
    // Chat lines are what a user missed; joins and leaves among them are shown, not counted.
    const missed = fresh.filter((l) => l.type === 'chat').length
    appendNote(noteRow(missed === 0 ? 'reconnected: no messages missed' : `reconnected: ${missed} message${missed === 1 ? '' : 's'} you missed`, 'resume-note', 'note resume'))
    for (const line of fresh) showLine(line)
    // A reload: nothing above what was missed yet; show what came before too.
    if (transcript.rows.size < OLDER_PAGE_LINES) void loadOlder()
  } else if (lines.length > 0) {
    if (first) appendNote(noteRow('earlier messages', 'history-divider', 'divider'))
    for (const line of lines) showLine(line, { history: first })
    if (first) appendNote(noteRow('new messages', 'live-divider', 'divider'))
  }
  saveSession()
}

// ---------------------------------------------------------------- older messages

function renderLoadOlder(): void {
  let row = ui.messages.querySelector<HTMLElement>(':scope > [data-testid="load-older"]')
  if (!row) {
    row = el('li', { className: 'load-older', testid: 'load-older' })
    ui.messages.prepend(row)
  }
  if (transcript.olderDone) {
    row.replaceChildren(el('span', { className: 'note-text', testid: 'older-end', text: row.dataset.end ?? 'start of the conversation' }))
    return
  }
  const button = el('button', { className: 'link-button', testid: 'load-older-button', text: transcript.olderLoading ? 'loading…' : 'load earlier messages' })
  button.type = 'button'
  button.disabled = transcript.olderLoading
  button.addEventListener('click', () => void loadOlder())
  row.replaceChildren(button)
}

/** Loads lines older than the oldest shown from /api/messages, above them, keeping the view still. */
async function loadOlder(): Promise<void> {
  if (transcript.olderLoading || transcript.olderDone) return
  const ids = [...transcript.rows.keys()]
  const oldest = ids.length > 0 ? Math.min(...ids) : transcript.lastId + 1
  if (oldest <= 1 && transcript.heard) {
    setOlderDone('start of the conversation')
    return
  }
  transcript.olderLoading = true
  renderLoadOlder()
  try {
    const url = new URL('/api/messages', state.base)
    url.searchParams.set('before', String(oldest))
    url.searchParams.set('limit', String(OLDER_PAGE_LINES))
    const response = await fetch(url, { cache: 'no-store', signal: AbortSignal.timeout(CLUSTER_FETCH_TIMEOUT_MS * 2) })
    if (!response.ok) throw new Error(`HTTP ${response.status}`)
    const page = (await response.json()) as Partial<HistoryFrame>
    if (!Array.isArray(page.messages)) throw new Error('malformed page')
    // Another transcript (the cluster started anew, or another cluster): its ids are not ours.
    if (transcript.epoch !== '' && page.epoch !== transcript.epoch) return
    const list = ui.messages
    const fromBottom = list.scrollHeight - list.scrollTop
    const lines = page.messages.filter(isLine)
    for (const line of lines) showLine(line, { history: true, where: 'top' })
    list.scrollTop = list.scrollHeight - fromBottom
    if (lines.length < OLDER_PAGE_LINES) setOlderDone(page.complete === false ? 'older messages are no longer kept' : 'start of the conversation')
  } catch (error) {
    showError(`Could not load earlier messages (${error instanceof Error ? error.message : String(error)}).`)
  } finally {
    transcript.olderLoading = false
    renderLoadOlder()
  }
}

function setOlderDone(text: string): void {
  transcript.olderDone = true
  const row = ui.messages.querySelector<HTMLElement>(':scope > [data-testid="load-older"]')
  if (row) row.dataset.end = text
  renderLoadOlder()
}

// ---------------------------------------------------------------- sending

function randomId(): string {
  const bytes = new Uint8Array(CLIENT_MSG_ID_CHARS / 2)
  crypto.getRandomValues(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}

function pendingRow(p: Pending): HTMLElement {
  const row = el('li', { className: 'message own pending', testid: 'pending-message' })
  row.dataset.clientMsgId = p.clientMsgId
  const meta = el('div', { className: 'message-meta' })
  meta.append(el('span', { className: 'message-user', text: state.username }), el('span', { className: 'pending-status', testid: 'pending-status' }))
  row.append(meta, el('div', { className: 'message-text', testid: 'message-text', text: p.text }))
  return row
}

function renderPendingStatus(p: Pending): void {
  const status = p.row?.querySelector('.pending-status')
  if (!status) return
  status.textContent = p.ackedId !== null ? 'sent' : p.sentOn === state.connectionNo && state.admitted ? 'sending…' : 'waiting for connection'
}

function queueMessage(text: string, clientMsgId = randomId()): void {
  const p: Pending = { clientMsgId, text, row: null, sentOn: 0, sentAt: 0, sends: 0, ackedId: null }
  p.row = pendingRow(p)
  outbox.push(p)
  ui.messages.appendChild(p.row)
  renderPendingStatus(p)
  ui.messages.scrollTop = ui.messages.scrollHeight
}

/**
 * Sends what is pending and was not sent on this connection (in order, within the page's own
 * rate), and sends again what was sent here but not acknowledged for a while (same clientMsgId:
 * the server takes it once).
 */
function flushOutbox(): void {
  if (send.timer) clearTimeout(send.timer)
  send.timer = 0
  const socket = state.socket
  if (!socket || socket.readyState !== WebSocket.OPEN || !state.admitted) return
  const now = Date.now()
  send.tokens = Math.min(SEND_BURST, send.tokens + ((now - send.refilledAt) / 1000) * SEND_PER_SECOND)
  send.refilledAt = now
  let wakeIn = Infinity
  for (const p of outbox) {
    if (p.ackedId !== null) continue
    const due = p.sentOn !== state.connectionNo ? 0 : p.sentAt + Math.min(RESEND_AFTER_MS_MAX, RESEND_AFTER_MS_MIN * 2 ** Math.max(0, p.sends - 1)) - now
    if (due > 0) {
      wakeIn = Math.min(wakeIn, due)
      continue
    }
    if (send.tokens < 1) {
      wakeIn = Math.min(wakeIn, 1000 / SEND_PER_SECOND)
      break
    }
    send.tokens -= 1
    socket.send(JSON.stringify({ type: 'chat', message: p.text, clientMsgId: p.clientMsgId }))
    p.sends = p.sentOn === state.connectionNo ? p.sends + 1 : 1
    p.sentOn = state.connectionNo
    p.sentAt = now
    renderPendingStatus(p)
  }
  if (wakeIn !== Infinity) send.timer = setTimeout(flushOutbox, Math.max(20, wakeIn))
}

/** Our message has its place: the pending row goes when its line is shown (now, or when it arrives). */
function acknowledge(frame: AckFrame): void {
  const p = outbox.find((x) => x.clientMsgId === frame.clientMsgId)
  if (!p || typeof frame.id !== 'number') return
  p.ackedId = frame.id
  renderPendingStatus(p)
  if (transcript.rows.has(frame.id)) settleLine(frame.id)
  else if (frame.id <= transcript.lastId) {
    // Its line went by before this page could show it (it cannot come again): show it from here.
    showLine({ type: 'chat', id: frame.id, username: state.username, message: p.text, nodeAddress: state.nodeAddress, timestamp: Date.now() })
  }
  saveSession()
}

/** Line `id` is shown: if it is one of ours, its pending row goes. */
function settleLine(id: number): void {
  const i = outbox.findIndex((p) => p.ackedId === id)
  if (i < 0) return
  outbox[i]!.row?.remove()
  outbox.splice(i, 1)
}

// ---------------------------------------------------------------- session (per tab)

function saveSession(): void {
  const saved: SavedSession = {
    username: state.username,
    epoch: transcript.epoch,
    lastId: transcript.lastId,
    heard: transcript.heard,
    pending: outbox.filter((p) => p.ackedId === null).map((p) => ({ clientMsgId: p.clientMsgId, text: p.text })),
  }
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(saved))
  } catch {
    // Storage unavailable: a reload then starts afresh (the server still has the transcript).
  }
}

function savedSession(): SavedSession | null {
  try {
    const value = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null') as SavedSession | null
    if (!value || typeof value.lastId !== 'number' || typeof value.epoch !== 'string' || !Array.isArray(value.pending)) return null
    return value
  } catch {
    return null
  }
}

/** Starts the transcript view afresh for `username`, resuming where this tab left off if it was the same user. */
function restoreSession(username: string): void {
  ui.messages.replaceChildren()
  transcript.rows.clear()
  transcript.olderDone = false
  transcript.olderLoading = false
  for (const p of outbox) p.row?.remove()
  outbox = []
  const saved = savedSession()
  const same = saved !== null && (pageToken !== null || saved.username === username)
  transcript.epoch = same ? saved.epoch : ''
  transcript.lastId = same ? saved.lastId : 0
  transcript.heard = same ? saved.heard === true : false
  renderLoadOlder()
  if (same) for (const p of saved.pending) if (typeof p.text === 'string' && typeof p.clientMsgId === 'string') queueMessage(p.text, p.clientMsgId)
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
  // Resume where this page is: every line after the last one seen, then live, on whichever node.
  if (transcript.heard) {
    url.searchParams.set('since', String(transcript.lastId))
    if (transcript.epoch !== '') url.searchParams.set('epoch', transcript.epoch)
  }
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
      if (isLine(frame) && showLine(frame)) {
        noteChat(frame.nodeAddress)
        saveSession()
      }
      return
    case 'history':
      if (Array.isArray(frame.messages)) showHistory(frame)
      return
    case 'ack':
      if (typeof frame.clientMsgId === 'string') acknowledge(frame)
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
      if (isLine(frame) && showLine(frame)) saveSession()
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
      if (typeof frame.message !== 'string') return
      // Refusals that pass (rate, load, a node cut off for long): the message stays pending and is sent again.
      if (['rate_limited', 'overloaded', 'unavailable'].includes(frame.code) && outbox.some((p) => p.ackedId === null)) showError(`${frame.message} (the page sends it again shortly)`)
      else showError(frame.message)
      return
    case 'welcome':
      // The server's spelling of the name (normalised, or taken from the token) marks our own messages.
      if (typeof frame.username === 'string') state.username = frame.username
      state.nodeAddress = frame.nodeAddress
      ui.me.textContent = `${state.username} @ ${nodeLabel(frame.nodeAddress)}`
      // Admitted (not merely open: a node may accept the socket and close it at once, and that
      // must not reset the backoff): online, and what waits in the outbox goes now (resent with
      // the same ids: taken once).
      state.reconnectAttempt = 0
      state.candidates = []
      showError('')
      setConnection('online')
      state.admitted = true
      for (const p of outbox) renderPendingStatus(p)
      flushOutbox()
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
  state.connectionNo += 1
  state.admitted = false
  state.awaitingHistory = true
  state.resuming = transcript.heard
  for (const p of outbox) renderPendingStatus(p)

  socket.addEventListener('open', () => {
    if (state.socket !== socket) return
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
    state.admitted = false
    for (const p of outbox) renderPendingStatus(p)
    saveSession()
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
  state.admitted = false
  saveSession()
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
  restoreSession(name)
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
  if (FORBIDDEN_IN_TEXT.test(text)) {
    showError('Messages may not contain control characters other than newline and tab.')
    return
  }
  // Shown as pending at once; sent now if connected, else when the page is back (see flushOutbox).
  queueMessage(text)
  saveSession()
  flushOutbox()
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
ui.messages.addEventListener('scroll', () => {
  if (ui.messages.scrollTop < LOAD_OLDER_PX && transcript.rows.size > 0) void loadOlder()
})
if (pageToken) {
  // Signed in by the link: no name to ask for. The welcome frame tells us who we are.
  restoreSession('')
  showChat()
  connect()
} else showJoin()

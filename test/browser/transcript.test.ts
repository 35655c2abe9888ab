// The page and the transcript, in real Chromium against a real 3-node cluster: history on join set
// apart, a reload that resumes (missed messages shown once), acknowledged sends that survive a
// lost ack and a disconnect (queued while offline, sent once), older lines loaded at the top, and
// the page moving to another node when its own is SIGKILLed, missing nothing and doubling nothing.
// Needs /usr/bin/chromium (`make deps`). Screenshots go to test/artifacts/.

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from 'bun:test'
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Page, WebSocketRoute } from 'playwright-core'
import { launchBrowser, type TestBrowser } from '../support/chromium'
import { REPO_ROOT, startCluster, stopAll, waitFor, type NodeHandle } from '../support/cluster'
import { receivedLines, sendAcked } from '../support/transcript'
import { connectUser, type ChatClient } from '../support/ws-client'

setDefaultTimeout(60_000)

const ARTIFACTS = resolve(REPO_ROOT, 'test/artifacts')
const UI_TIMEOUT_MS = 15_000
/** Lines a new connection gets: small, so the older ones are there to load. */
const HISTORY_ON_JOIN = 20

let browser: TestBrowser | undefined
let nodes: NodeHandle[] = []
/** A user outside the browser who talks (acked) and listens. */
let bot: ChatClient

interface Row {
  id: number | null
  kind: 'chat' | 'system'
  user: string
  text: string
  history: boolean
}

/** Transcript rows the page shows, top to bottom (pending messages excluded). */
async function rows(page: Page): Promise<Row[]> {
  return page.locator('[data-testid="messages"] > [data-testid="message"], [data-testid="messages"] > [data-testid="system-message"]').evaluateAll((items) =>
    items.map((item) => ({
      id: item.getAttribute('data-id') === null ? null : Number(item.getAttribute('data-id')),
      kind: item.getAttribute('data-testid') === 'message' ? ('chat' as const) : ('system' as const),
      user: item.querySelector('[data-testid="message-user"]')?.textContent ?? '',
      text: (item.querySelector('[data-testid="message-text"]') ?? item.querySelector('.system-text'))?.textContent ?? '',
      history: item.classList.contains('from-history'),
    })),
  )
}

async function chatTexts(page: Page): Promise<string[]> {
  return (await rows(page)).filter((r) => r.kind === 'chat').map((r) => r.text)
}

async function pendingCount(page: Page): Promise<number> {
  return page.getByTestId('pending-message').count()
}

async function join(page: Page, node: NodeHandle, username: string): Promise<void> {
  await page.goto(node.httpUrl)
  await page.getByTestId('name-input').fill(username)
  await page.getByTestId('join-button').click()
  await page.locator('[data-testid="connection-status"][data-state="online"]').waitFor({ timeout: UI_TIMEOUT_MS })
}

async function type(page: Page, text: string): Promise<void> {
  await page.getByTestId('message-input').fill(text)
  await page.getByTestId('message-input').press('Enter')
}

/** Waits until the page shows every text in `texts` (as chat lines). */
function waitForTexts(page: Page, texts: string[], label: string): Promise<unknown> {
  return waitFor(
    async () => {
      const shown = new Set(await chatTexts(page))
      return texts.every((t) => shown.has(t))
    },
    { timeoutMs: UI_TIMEOUT_MS, message: `${label}: not every expected message was shown` },
  )
}

/** Ids strictly increasing and each once: the page shows the transcript in order, nothing twice. */
function expectOrderedOnce(shown: Row[]): void {
  const ids = shown.map((r) => r.id).filter((id): id is number => id !== null)
  expect(ids.length).toBe(shown.length)
  for (let i = 1; i < ids.length; i++) expect(ids[i]!).toBeGreaterThan(ids[i - 1]!)
}

function count(texts: string[], text: string): number {
  return texts.filter((t) => t === text).length
}

/**
 * The bot sends these (in this order: one connection's messages keep their order) and waits for
 * every ack; ten at a time, as a user types: a socket that sends more than 16 frames in a turn
 * that runs late (a loaded machine) is paused and the rest refused (gateway.ts), and this bot does
 * not send again.
 */
async function botSays(texts: string[]): Promise<void> {
  for (let i = 0; i < texts.length; i += 10) await Promise.all(texts.slice(i, i + 10).map((text) => sendAcked(bot, text)))
}

/** The bot has received `text` from the transcript (a barrier: everything before it is in too). */
function botHeard(text: string): Promise<unknown> {
  return waitFor(() => receivedLines(bot).some((l) => l.message === text), { timeoutMs: UI_TIMEOUT_MS, message: `the bot never received ${JSON.stringify(text)}` })
}

describe('the page and the transcript (3 nodes, Chromium)', () => {
  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true })
    browser = await launchBrowser()
    // A removed node's users free their names sooner: the page's user is back after a kill sooner.
    nodes = await startCluster(3, { args: ['--history-on-join', String(HISTORY_ON_JOIN), '--down-after-ms', '1500', '--rate-limit', '0'] })
    bot = await connectUser(nodes[0]!.httpUrl, 'bot')
  })

  afterAll(async () => {
    await bot?.close()
    await browser?.close()
    await stopAll()
  })

  test('history on join: the last lines, set apart under a divider, in order; older ones load at the top', async () => {
    const early = Array.from({ length: 60 }, (_, i) => `early ${i + 1}`)
    await botSays(early)
    const page = await browser!.newPage()
    try {
      await join(page, nodes[1]!, 'hanna')
      await page.getByTestId('history-divider').waitFor({ timeout: UI_TIMEOUT_MS })
      const joined = await rows(page)
      const fromHistory = joined.filter((r) => r.history)
      expect(fromHistory.length).toBe(HISTORY_ON_JOIN)
      expect(fromHistory.at(-1)!.text).toBe('early 60')
      expectOrderedOnce(joined)
      // The divider is above the history lines, and live lines come below them.
      await type(page, 'live after history')
      await waitForTexts(page, ['live after history'], 'page')
      const order = await page.locator('[data-testid="messages"] > li').evaluateAll((items) => items.map((i) => i.getAttribute('data-testid')))
      expect(order.indexOf('history-divider')).toBeLessThan(order.indexOf('message'))
      await page.screenshot({ path: resolve(ARTIFACTS, 'transcript-history.png') })

      // Scrolled to the top: older lines come from /api/messages, above, until the start.
      const loads: string[] = []
      page.on('request', (r) => r.url().includes('/api/messages') && loads.push(r.url()))
      for (let i = 0; i < 5 && !(await page.getByTestId('older-end').isVisible()); i++) {
        const before = (await rows(page)).length
        await page.getByTestId('messages').evaluate((list) => {
          list.scrollTop = 0
          list.dispatchEvent(new Event('scroll'))
        })
        await waitFor(async () => (await rows(page)).length > before || (await page.getByTestId('older-end').isVisible()), { timeoutMs: UI_TIMEOUT_MS, message: 'scrolling to the top loaded nothing' })
      }
      await page.getByTestId('older-end').waitFor({ timeout: UI_TIMEOUT_MS })
      const all = await rows(page)
      expectOrderedOnce(all)
      const texts = all.filter((r) => r.kind === 'chat').map((r) => r.text)
      for (const text of early) expect(count(texts, text)).toBe(1)
      expect(all[0]!.id).toBe(Math.min(...all.map((r) => r.id!)))
      console.log(`page: ${HISTORY_ON_JOIN} lines on join, ${all.length - joined.length - 1} older lines loaded by scrolling in ${loads.length} requests`)
      await page.screenshot({ path: resolve(ARTIFACTS, 'transcript-older.png') })
    } finally {
      await page.close()
    }
  })

  test('a reload resumes: the messages missed meanwhile are shown once, with a note of how many', async () => {
    const page = await browser!.newPage()
    try {
      await join(page, nodes[2]!, 'rosa')
      await botSays(['before the reload'])
      await waitForTexts(page, ['before the reload'], 'page')
      // Away from the chat (the socket closes), while the bot says three things.
      await page.goto('about:blank')
      const missed = ['missed 1', 'missed 2', 'missed 3']
      await botSays(missed)
      await page.goto(nodes[2]!.httpUrl)
      await waitFor(async () => (await page.getByTestId('name-input').inputValue()) === 'rosa', { timeoutMs: UI_TIMEOUT_MS, message: 'the name was not remembered' })
      const socketUrls: string[] = []
      page.on('websocket', (ws) => socketUrls.push(ws.url()))
      await page.getByTestId('join-button').click()
      await page.getByTestId('resume-note').waitFor({ timeout: UI_TIMEOUT_MS })
      expect(await page.getByTestId('resume-note').textContent()).toBe('reconnected: 3 messages you missed')
      expect(socketUrls[0]).toMatch(/[?&]since=\d+&epoch=/)
      await waitForTexts(page, [...missed, 'before the reload'], 'reloaded page')
      await botSays(['after the reload'])
      await waitForTexts(page, ['after the reload'], 'reloaded page')
      const shown = await rows(page)
      expectOrderedOnce(shown)
      const texts = shown.filter((r) => r.kind === 'chat').map((r) => r.text)
      for (const text of [...missed, 'before the reload', 'after the reload']) expect(count(texts, text)).toBe(1)
      // What came before the reload is shown above, loaded from the node.
      expect(texts.indexOf('before the reload')).toBeLessThan(texts.indexOf('missed 1'))
      await page.screenshot({ path: resolve(ARTIFACTS, 'transcript-resumed.png') })
    } finally {
      await page.close()
    }
  })

  test('a tab whose saved place belongs to a cluster started anew: it says older messages could not be recovered, and sends what it had queued, once', async () => {
    const page = await browser!.newPage()
    try {
      await page.goto(nodes[1]!.httpUrl)
      // As a reload would find it: a place in a transcript these nodes never had, and a message still queued.
      await page.evaluate(() =>
        sessionStorage.setItem('cluster-chat.session', JSON.stringify({ username: 'vera', epoch: 'bun://Gone@10.0.0.9:2551#00000000', lastId: 7, heard: true, pending: [{ clientMsgId: 'vera-saved-1', text: 'queued before the reload' }] })),
      )
      await page.getByTestId('name-input').fill('vera')
      await page.getByTestId('join-button').click()
      await page.getByTestId('lost-note').waitFor({ timeout: UI_TIMEOUT_MS })
      expect(await page.getByTestId('lost-note').textContent()).toBe('the chat was started anew: some older messages could not be recovered')
      expect(await page.getByTestId('resume-note').count()).toBe(0)
      await page.getByTestId('history-divider').waitFor({ timeout: UI_TIMEOUT_MS })
      await waitFor(async () => (await pendingCount(page)) === 0, { timeoutMs: UI_TIMEOUT_MS, message: 'the saved message was never acknowledged' })
      await waitForTexts(page, ['queued before the reload'], 'page')
      await type(page, 'vera barrier')
      await botHeard('vera barrier')
      expect(count(receivedLines(bot).map((l) => l.message), 'queued before the reload')).toBe(1)
      expect(count(await chatTexts(page), 'queued before the reload')).toBe(1)
      expectOrderedOnce(await rows(page))
    } finally {
      await page.close()
    }
  })

  test('a message whose ack was lost, and one typed while disconnected, are each delivered once after the reconnect', async () => {
    const page = await browser!.newPage()
    // Between the page and the node: acks can be dropped, and the connection cut and refused.
    const gate = { down: false, dropAcks: false, routes: [] as Array<{ page: WebSocketRoute; server: WebSocketRoute }> }
    await page.routeWebSocket(
      (url) => url.pathname === '/ws/chat',
      (ws) => {
        if (gate.down) return void ws.close({ code: 1011, reason: 'test: offline' })
        const server = ws.connectToServer()
        server.onMessage((message) => {
          if (gate.dropAcks && typeof message === 'string' && message.includes('"type":"ack"')) return
          ws.send(message)
        })
        gate.routes.push({ page: ws, server })
      },
    )
    try {
      await join(page, nodes[0]!, 'otto')
      gate.dropAcks = true
      await type(page, 'ack lost')
      await botHeard('ack lost')
      expect(await pendingCount(page)).toBe(1)
      // The connection goes, and stays refused for a moment.
      gate.down = true
      for (const r of gate.routes.splice(0)) {
        await r.server.close({ code: 1000 }).catch(() => {})
        await r.page.close({ code: 1011, reason: 'test: cut' }).catch(() => {})
      }
      await waitFor(async () => (await page.getByTestId('connection-status').getAttribute('data-state')) !== 'online', { timeoutMs: UI_TIMEOUT_MS, message: 'the page did not notice the cut' })
      await type(page, 'typed offline')
      expect(await pendingCount(page)).toBe(2)
      expect(await page.getByTestId('pending-status').allTextContents()).toEqual(['waiting for connection', 'waiting for connection'])
      await page.screenshot({ path: resolve(ARTIFACTS, 'transcript-pending.png') })
      gate.dropAcks = false
      gate.down = false
      await page.locator('[data-testid="connection-status"][data-state="online"]').waitFor({ timeout: 20_000 })
      await waitFor(async () => (await pendingCount(page)) === 0, { timeoutMs: UI_TIMEOUT_MS, message: 'the pending messages were never acknowledged' })
      // A barrier through the transcript: anything the resends could have doubled is in before it.
      await type(page, 'otto barrier')
      await botHeard('otto barrier')
      const heard = receivedLines(bot).map((l) => l.message)
      expect(count(heard, 'ack lost')).toBe(1)
      expect(count(heard, 'typed offline')).toBe(1)
      await waitForTexts(page, ['ack lost', 'typed offline', 'otto barrier'], 'page')
      const texts = await chatTexts(page)
      for (const text of ['ack lost', 'typed offline', 'otto barrier']) expect(count(texts, text)).toBe(1)
      expectOrderedOnce(await rows(page))
    } finally {
      await page.close()
    }
  })

  test('SIGKILL of the page’s node: the page moves to another node and shows every message sent meanwhile, none twice; what was typed meanwhile is sent once', async () => {
    const victim = nodes[2]!
    const page = await browser!.newPage()
    try {
      await join(page, victim, 'kim')
      // The page knows the other members (the cluster panel polls every 2 s).
      await waitFor(async () => (await page.getByTestId('cluster-member').count()) === 3, { timeoutMs: UI_TIMEOUT_MS, message: 'cluster panel never showed 3 members' })
      let sending = true
      let n = 0
      const stream = (async () => {
        // About 20 a second: a rate, not a wait for a condition.
        while (sending) {
          await sendAcked(bot, `stream ${++n}`)
          await Bun.sleep(50)
        }
      })()
      await waitForTexts(page, ['stream 3'], 'page before the kill')
      const killedAt = performance.now()
      victim.kill('SIGKILL')
      await waitFor(async () => (await page.getByTestId('connection-status').getAttribute('data-state')) !== 'online', { timeoutMs: UI_TIMEOUT_MS, message: 'the page did not notice its node died' })
      await type(page, 'typed while moving')
      await page.locator('[data-testid="connection-status"][data-state="online"]').waitFor({ timeout: 20_000 })
      const backMs = performance.now() - killedAt
      const movedTo = (await page.locator('#me').textContent()) ?? ''
      expect(movedTo).not.toContain(`:${victim.clusterPort}`)
      await waitFor(async () => (await pendingCount(page)) === 0, { timeoutMs: UI_TIMEOUT_MS, message: 'the message typed while moving was never acknowledged' })
      sending = false
      await stream
      const last = `stream ${n}`
      await waitForTexts(page, [last], 'moved page')
      await page.getByTestId('resume-note').waitFor({ timeout: UI_TIMEOUT_MS })
      const note = (await page.getByTestId('resume-note').textContent()) ?? ''
      const texts = await chatTexts(page)
      const numbers = texts.filter((t) => t.startsWith('stream ')).map((t) => Number(t.slice(7)))
      expect(numbers).toEqual(Array.from({ length: n }, (_, i) => i + 1))
      expect(count(texts, 'typed while moving')).toBe(1)
      await botHeard(last)
      expect(count(receivedLines(bot).map((l) => l.message), 'typed while moving')).toBe(1)
      expectOrderedOnce(await rows(page))
      console.log(`page failover after SIGKILL: back online on another node ${backMs.toFixed(0)} ms after the kill; ${n} messages streamed, all shown once in order ("${note}")`)
      await page.screenshot({ path: resolve(ARTIFACTS, 'transcript-failover.png') })
    } finally {
      await page.close()
    }
  })
})

// The page against a node that requires signed tokens: without one it says why and stops (no
// reconnect loop on 4401); with `?token=` in its own URL it joins under the token's name.
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from 'bun:test'
import { SignJWT } from 'jose'
import type { Page } from 'playwright-core'
import { launchBrowser, type TestBrowser } from '../support/chromium'
import { startNode, stopAll, type NodeHandle } from '../support/cluster'

setDefaultTimeout(60_000)
const UI_TIMEOUT_MS = 15_000
const SECRET = 'a-browser-test-secret-long-enough!!'

let browser: TestBrowser | undefined
let node: NodeHandle
let page: Page

beforeAll(async () => {
  browser = await launchBrowser()
  node = await startNode({ args: ['--auth-jwt-secret', SECRET] })
  page = await browser.newPage()
})

afterAll(async () => {
  await browser?.close()
  await stopAll()
})

test('without a token: 4401, the reason is shown, and the page does not retry', async () => {
  let sockets = 0
  page.on('websocket', () => sockets++)
  await page.goto(node.httpUrl)
  await page.getByTestId('name-input').fill('alice')
  await page.getByTestId('join-button').click()
  await page.getByTestId('error').filter({ hasText: 'Not signed in: token required' }).waitFor({ timeout: UI_TIMEOUT_MS })
  // "offline" alone: no "retrying in N s", so no reconnect is scheduled.
  expect(await page.getByTestId('connection-status').textContent()).toBe('offline')
  expect(await page.getByTestId('name-input').isVisible()).toBe(true)
  expect(sockets).toBe(1)
})

test('with ?token= in the page URL: joins at once under the name in the token', async () => {
  const jwt = await new SignJWT({ name: '김철수', exp: Math.floor(Date.now() / 1000) + 300 }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET))
  await page.goto(`${node.httpUrl}/?token=${jwt}`)
  await page.locator('[data-testid="connection-status"][data-state="online"]').waitFor({ timeout: UI_TIMEOUT_MS })
  await page.getByTestId('message-input').fill('signed in')
  await page.getByTestId('message-input').press('Enter')
  const own = page.locator('[data-testid="message"].own', { hasText: 'signed in' })
  await own.waitFor({ timeout: UI_TIMEOUT_MS })
  expect(await own.getByTestId('message-user').textContent()).toBe('김철수')
  expect((await node.users()).users.map((u: any) => u.username)).toEqual(['김철수'])
})

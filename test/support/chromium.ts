// Headless Chromium for browser tests, driven by playwright-core (which never downloads a
// browser): the Debian package's /usr/bin/chromium, installed by `make deps`.
//
//   const browser = await launchBrowser();
//   const page = await browser.newPage();
//   ...
//   await browser.close();

import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export interface TestBrowser {
  /** One persistent context on a fresh temporary profile (pages share cookies and storage per origin). */
  context: BrowserContext
  userDataDir: string
  newPage(): Promise<Page>
  /** Closes the browser and deletes the temporary profile. Safe to call twice. */
  close(): Promise<void>
}

export interface LaunchOptions {
  viewport?: { width: number; height: number }
  /** Passed to the browser, e.g. 'en-US' or 'ko-KR'. */
  locale?: string
  timeoutMs?: number
}

export async function launchBrowser(options: LaunchOptions = {}): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM_PATH}: run \`make deps\` (it installs the Debian chromium package), ` +
        'or set CHROMIUM_PATH to a Chromium binary.',
    )
  }
  const userDataDir = await mkdtemp(join(tmpdir(), 'chat-chromium-'))
  let context: BrowserContext
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: options.viewport ?? { width: 1100, height: 720 },
      locale: options.locale ?? 'en-US',
      timeout: options.timeoutMs ?? 30_000,
    })
  } catch (error) {
    await rm(userDataDir, { recursive: true, force: true })
    throw error
  }
  let closed = false
  return {
    context,
    userDataDir,
    newPage: () => context.newPage(),
    async close() {
      if (closed) return
      closed = true
      try {
        await context.close()
      } finally {
        await rm(userDataDir, { recursive: true, force: true })
      }
    },
  }
}

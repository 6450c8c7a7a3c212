// What every browser test needs: `wecom-oidc dev` started from the built binary on a free loopback
// port (the issuer read from what it prints), the SPA servers, Debian's Chromium driven by
// playwright-core, a fresh browser context per scenario (and more on request: another device,
// with its own cookies), screenshots of every scenario's final page (and of every page open when a
// scenario failed), and assertions on what the page shows.

import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { chromium } from 'playwright-core'

import { startSPA } from '../spa-server.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
export const E2E = path.resolve(here, '..')
const BIN = process.env.WECOM_OIDC_BIN || path.resolve(E2E, '../bin/wecom-oidc')
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
export const SCREENSHOTS = process.env.SCREENSHOT_DIR || path.join(E2E, 'screenshots')
// Debian's Chromium, headless, without the background traffic a fresh profile would start.
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

const START_TIMEOUT_MS = 15_000 // the provider printing its issuer
const STOP_TIMEOUT_MS = 10_000 // the provider exiting after SIGTERM
const LAUNCH_TIMEOUT_MS = 30_000 // Chromium starting
export const WAIT_MS = 10_000 // every wait for an element, a text or a URL
const NAVIGATION_MS = 15_000 // every navigation

// The two SPA instances and their clients (e2e/dev.yaml registers these origins).
export const SPAS = { spa: 5173, spa2: 5174 }

// The phone of the cross-device scenarios: the WeCom app's browser on an iPhone (the simulated
// WeCom's in-client page opens only there, as the real one does).
export const WECOM_PHONE = {
  userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
    'Mobile/15E148 wxwork/4.1.26 MicroMessenger/7.0.1 Language/zh ColorScheme/Light',
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
  locale: 'zh-CN',
}

// --- the provider -----------------------------------------------------------------------------

/**
 * startProvider starts `wecom-oidc dev` with e2e/dev.yaml; env adds environment variables (the
 * test file's own settings, e.g. { WECOM_OIDC_DEV__DESKTOP_SCAN: 'prefer' }).
 */
async function startProvider ({ env = {} } = {}) {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'wecom-oidc-e2e-'))
  const proc = spawn(BIN, ['dev', '--config', path.join(E2E, 'dev.yaml'), '--listen', '127.0.0.1:0', '--data', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Only what the binary needs, and what the test file asks for: no WECOM_OIDC_* from the
    // caller's environment.
    env: { PATH: process.env.PATH, HOME: process.env.HOME ?? dataDir, ...env },
  })
  const output = { stdout: '', stderr: '' }
  const diagnostics = () => {
    const tail = (s) => s.split('\n').slice(-40).join('\n')
    return `--- wecom-oidc stdout ---\n${tail(output.stdout)}\n--- wecom-oidc stderr ---\n${tail(output.stderr)}`
  }
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  proc.stdout.setEncoding('utf8')
  proc.stderr.setEncoding('utf8')
  proc.stderr.on('data', (s) => { output.stderr += s })
  let spawnError
  const issuer = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(
      `wecom-oidc dev printed no issuer within ${START_TIMEOUT_MS} ms\n` + diagnostics())), START_TIMEOUT_MS)
    proc.on('error', (err) => { spawnError = err; clearTimeout(timer); reject(new Error(`cannot start ${BIN}: ${err.message} (run make build)`)) })
    exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`wecom-oidc dev exited early (code ${code}, signal ${signal})\n` + diagnostics()))
    })
    proc.stdout.on('data', (s) => {
      output.stdout += s
      const issuer = output.stdout.match(/^\s*issuer\s+(\S+)\s*$/m)?.[1]
      if (issuer) { clearTimeout(timer); resolve(issuer) }
    })
  })
  assert.match(issuer, /^http:\/\/127\.0\.0\.1:\d+$/, 'dev mode serves on loopback')

  async function stop () {
    try {
      if (!spawnError && proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM')
        let timer
        const result = await Promise.race([exited,
          new Promise((resolve) => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS) })])
        clearTimeout(timer)
        if (result === null) {
          proc.kill('SIGKILL')
          assert.fail(`wecom-oidc did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM\n` + diagnostics())
        }
        assert.deepEqual(result, { code: 0, signal: null }, 'wecom-oidc exits 0 on SIGTERM\n' + diagnostics())
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true })
    }
  }
  return { issuer, stop, diagnostics }
}

// --- the suite ----------------------------------------------------------------------------------

/**
 * setup registers before/after hooks in the calling test file: the provider (env: environment
 * variables of its own, on top of e2e/dev.yaml), the SPA servers (with spas: true: env.spa.spa,
 * env.spa.spa2 and env.spa.stranger, an unregistered origin) and Chromium. The returned object is
 * filled in by the before hook.
 */
export function setup ({ spas = false, env: providerEnv = {} } = {}) {
  const env = { issuer: '', spa: {}, browser: null, provider: null, servers: [] }
  before(async () => {
    await mkdir(SCREENSHOTS, { recursive: true })
    env.provider = await startProvider({ env: providerEnv })
    env.issuer = env.provider.issuer
    if (spas) {
      // stranger: the same app on a free port, an origin no client registered.
      for (const [clientId, port] of [...Object.entries(SPAS), ['stranger', 0]]) {
        const server = await startSPA({ issuer: env.issuer, clientId, port })
        env.servers.push(server)
        env.spa[clientId] = server.origin
      }
    }
    env.browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: LAUNCH_TIMEOUT_MS,
    }).catch((err) => {
      throw new Error(`cannot launch ${CHROMIUM} (install it with: make browser): ${err.message}`)
    })
  })
  after(async () => {
    await env.browser?.close().catch(() => {})
    for (const server of env.servers) await server.close()
    await env.provider?.stop()
  })
  return env
}

/**
 * scenario defines one test: a fresh browser context and page (zh-CN, 1024x800; userAgent and
 * context, Playwright's context options, change that), fn(page, { context, snap, newPage }), then
 * a screenshot of the final page into screenshots/<slug>.png.
 * - snap(step, p = page) saves a picture of a step on the way as <slug>-<step>.png (of another
 *   page p, e.g. the phone's).
 * - newPage(label, options) opens a page in another context of the same Chromium: another device,
 *   with its own cookies (zh-CN, 1024x800 unless options, Playwright's context options, say
 *   otherwise). It is watched like the first page and closed at the end of the scenario.
 * On failure the screenshots are <slug>-failure.png and <slug>-<label>-failure.png of the other
 * pages, and the message gains the pages' URLs, their navigations, the browser console's errors and
 * the provider's log.
 */
export function scenario (env, name, slug, fn, { userAgent, context: contextOptions = {} } = {}) {
  test(name, async () => {
    // No picture of an earlier run may pass for this one's.
    for (const file of await readdir(SCREENSHOTS)) {
      if (file === `${slug}.png` || (file.startsWith(`${slug}-`) && file.endsWith('.png'))) await rm(path.join(SCREENSHOTS, file), { force: true })
    }
    const log = []
    const opened = [] // { label, context, page }, the scenario's first page first
    async function open (label, options) {
      const context = await env.browser.newContext({ locale: 'zh-CN', viewport: { width: 1024, height: 800 }, ...options })
      context.setDefaultTimeout(WAIT_MS)
      context.setDefaultNavigationTimeout(NAVIGATION_MS)
      opened.push({ label, context, page: null })
      const page = await context.newPage()
      opened.at(-1).page = page
      const tag = label ? `[${label}] ` : ''
      page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) log.push(`${tag}navigated ${frame.url()}`) })
      page.on('console', (msg) => { if (msg.type() === 'error' || msg.type() === 'warning') log.push(`${tag}console.${msg.type()}: ${msg.text()}`) })
      page.on('pageerror', (err) => log.push(`${tag}page error: ${err.message}`))
      page.on('requestfailed', (req) => log.push(`${tag}request failed: ${req.method()} ${req.url()}: ${req.failure()?.errorText}`))
      return page
    }
    const shot = (p, name) => p.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true, timeout: WAIT_MS })
    try {
      const page = await open('', { ...(userAgent ? { userAgent } : {}), ...contextOptions })
      const { context } = opened[0]
      const snap = (step, p = page) => shot(p, `${slug}-${step}`)
      const newPage = (label, options = {}) => {
        assert.match(label, /^[a-z0-9-]+$/, 'a page label is a file name part')
        assert.ok(!opened.some((o) => o.label === label), `one page labelled ${label}`)
        return open(label, options)
      }
      try {
        await fn(page, { context, snap, newPage })
        await shot(page, slug)
      } catch (err) {
        for (const { label, page } of opened) {
          if (!page) continue
          await shot(page, label ? `${slug}-${label}-failure` : `${slug}-failure`)
            .catch((shotErr) => log.push(`failure screenshot${label ? ` of ${label}` : ''}: ${shotErr.message}`))
        }
        if (err instanceof Error) {
          const where = opened.filter((o) => o.page).map(({ label, page }) => `--- ${label ? `${label} ` : ''}page ${page.url()} ---`).join('\n')
          err.message += `\n${where}\n${log.join('\n')}\n${env.provider?.diagnostics() ?? ''}`
        }
        throw err
      }
    } finally {
      for (const { context } of opened) await context.close().catch(() => {})
    }
  })
}

// --- what the person sees -------------------------------------------------------------------------

/**
 * see waits until the element's trimmed text equals expected (a string) or matches it (a RegExp),
 * and fails with what the page shows instead.
 */
export async function see (page, selector, expected, timeout = WAIT_MS) {
  const isRegExp = expected instanceof RegExp
  try {
    await page.waitForFunction(({ selector, source, flags, text }) => {
      const el = document.querySelector(selector)
      if (!el) return false
      const actual = el.textContent.trim()
      return source !== null ? new RegExp(source, flags).test(actual) : actual === text
    }, { selector, source: isRegExp ? expected.source : null, flags: isRegExp ? expected.flags : '', text: isRegExp ? null : expected },
    { timeout, polling: 100 })
  } catch {
    const actual = await page.locator(selector).first().textContent({ timeout: 1_000 }).catch(() => null)
    assert.fail(`${selector} should show ${isRegExp ? expected : JSON.stringify(expected)}; ` +
      `the page (${page.url()}) shows ${actual === null ? 'no such element' : JSON.stringify(actual.trim())}`)
  }
}

/** waitForPath waits until the page is at origin+pathname (the query is ignored). */
export async function waitForPath (page, origin, pathname, timeout = NAVIGATION_MS) {
  try {
    await page.waitForURL((url) => url.origin === origin && url.pathname === pathname, { timeout, waitUntil: 'load' })
  } catch {
    const title = await page.title().catch(() => '')
    assert.fail(`expected to arrive at ${origin}${pathname} within ${timeout} ms; the page is at ${page.url()}` +
      (title ? ` (title ${JSON.stringify(title)})` : ''))
  }
}

/** idle waits until the SPA has finished its current action (body[data-busy=false]). */
export async function idle (page) {
  await page.locator('body[data-busy="false"]').waitFor({ state: 'attached', timeout: WAIT_MS })
}

// The scan sign-in (desktop_scan: prefer) of `wecom-oidc dev`, in Chromium, with two devices: a
// computer (a desktop browser) signing in to the dev demo shows a QR code of a link; a phone (the
// WeCom iPhone app's User-Agent, its own cookies) opens the link, confirms, picks 张三 on the
// simulated WeCom in-client authorize page, and the computer's page continues by itself, signed in
// with her mobile number and e-mail. Also: cancelling on the phone, a link another phone already
// opened, a phone browser that is not WeCom, and the QR page in English.
//
// Run: make e2e   (or, after make build and npm ci in e2e/: npm test)

import assert from 'node:assert/strict'

import { WECOM_PHONE, scenario, see, setup, waitForPath } from './harness.mjs'

const env = setup({ env: { WECOM_OIDC_DEV__DESKTOP_SCAN: 'prefer' } })

const IN_CLIENT = '/_wecomsim/connect/oauth2/authorize' // the simulated in-client authorize page
const LINK = /\/login\/wecom\/m\/[A-Za-z0-9]{24}$/ // the QR code's link

// The computer: Chromium's own (desktop) User-Agent.
const DESKTOP = { viewport: { width: 1280, height: 800 } }
// A phone's own browser (Safari), not WeCom: its camera app opened the link.
const SAFARI_PHONE = {
  ...WECOM_PHONE,
  userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
    'Version/17.5 Mobile/15E148 Safari/604.1',
}

/**
 * showQR: on the computer, the demo's sign-in button leads to the QR page (not to WeCom); it
 * returns the QR code's link as the page prints it.
 */
async function showQR (desktop) {
  await desktop.goto(env.issuer + '/demo/')
  await desktop.locator('#signin').click()
  await waitForPath(desktop, env.issuer, '/login')
  return seeQR(desktop)
}

/** seeQR: the computer shows the QR page, waiting for the scan; it returns the code's link. */
async function seeQR (desktop, { title = '使用企业微信扫码登录', waiting = '等待扫码…' } = {}) {
  await see(desktop, 'h1', title)
  await desktop.locator('#qr svg').waitFor({ state: 'visible' })
  await see(desktop, '#scan-status', waiting)
  await see(desktop, '#qr-link', LINK)
  const link = (await desktop.locator('#qr-link').textContent()).trim()
  assert.ok(link.startsWith(env.issuer + '/login/wecom/m/'), `the QR code's link ${link} is the issuer's`)
  // The whole QR code is on the screen, at its size: nothing cut off, nothing squeezed.
  const box = await desktop.locator('#qr svg').boundingBox()
  const viewport = desktop.viewportSize()
  assert.ok(box && box.width >= 200 && Math.abs(box.width - box.height) < 1, `the QR code is a square of 200 px or more: ${JSON.stringify(box)}`)
  assert.ok(box.x >= 0 && box.y >= 0 && box.x + box.width <= viewport.width && box.y + box.height <= viewport.height,
    `the QR code ${JSON.stringify(box)} is inside the window ${JSON.stringify(viewport)}`)
  return link
}

/** scan: the phone opens the link (as the WeCom app does after scanning) and sees the confirmation. */
async function scan (phone, link) {
  await phone.goto(link)
  await see(phone, 'h1', '在电脑上登录 wecom-oidc demo？')
  await see(phone, '#action-confirm', '确认登录')
  await see(phone, '#action-cancel', '取消')
}

scenario(env, 'scan sign-in: the computer shows a QR code, the phone confirms and picks 张三, the computer is signed in with her phone number', 'scan', async (desktop, { snap, newPage }) => {
  const link = await showQR(desktop)
  await see(desktop, 'a#web-login', /企业微信网页登录/)
  await snap('desktop-qr')

  const phone = await newPage('phone', WECOM_PHONE)
  await scan(phone, link)
  await see(desktop, '#scan-status', '已扫码，请在手机上确认。')
  await snap('phone-confirm', phone)

  await phone.locator('#action-confirm').click()
  await waitForPath(phone, env.issuer, IN_CLIENT)
  await see(phone, 'body', /该应用申请获取你的头像、手机、邮箱等信息。选择成员以同意授权：/)
  const authorize = new URL(phone.url())
  assert.equal(authorize.searchParams.get('scope'), 'snsapi_privateinfo', 'the phone asks WeCom for consent')
  await see(desktop, '#scan-status', '已确认，正在通过企业微信登录…')

  await phone.locator('a[data-userid="zhangsan"]').click()
  await waitForPath(phone, env.issuer, '/login/wecom/callback')
  await see(phone, 'h1', '已在电脑上登录')
  await snap('phone-done', phone)

  // The computer, untouched, continues by itself: signed in, with what only consent discloses.
  await waitForPath(desktop, env.issuer, '/demo/callback')
  await see(desktop, '#welcome', '你好，张三')
  await see(desktop, '#claim-email', 'zhangsan@corp.example')
  await see(desktop, '#claim-phone', '+86 13800000001')
  await see(desktop, '#claim-groups', /(^|, )研发中心(, |$)/)
  await snap('desktop-signed-in')

  // The link is spent: opened again, even on the same phone, it signs nobody in.
  await phone.goto(link)
  await see(phone, 'h1', '二维码已失效')
}, { context: DESKTOP })

scenario(env, 'scan sign-in cancelled on the phone: the computer says so, and 重新扫码 shows a new QR code', 'scan-cancel', async (desktop, { snap, newPage }) => {
  const link = await showQR(desktop)
  const phone = await newPage('phone', WECOM_PHONE)
  await scan(phone, link)
  await see(desktop, '#scan-status', '已扫码，请在手机上确认。')

  await phone.locator('#action-cancel').click()
  await see(phone, 'h1', '已取消登录')
  await snap('phone-cancelled', phone)

  // The computer, untouched, leaves the QR page for the cancellation.
  await see(desktop, 'h1', '手机上已取消登录')
  await see(desktop, 'a#retry', '重新扫码')
  assert.match(await desktop.locator('a#return').getAttribute('href'), /[?&]error=access_denied(&|$)/,
    'a way back to the application, with access_denied')
  await snap('desktop-cancelled')

  await desktop.locator('a#retry').click()
  await waitForPath(desktop, env.issuer, '/login')
  const again = await seeQR(desktop)
  assert.notEqual(again, link, 'a new QR code, of a new link')
  // The cancelled link stays dead.
  await phone.goto(link)
  await see(phone, 'h1', '二维码已失效')
}, { context: DESKTOP })

scenario(env, 'scan links: a phone browser that is not WeCom is told to use the app (and claims nothing); a second phone gets 二维码已失效', 'scan-link-used', async (desktop, { snap, newPage }) => {
  const link = await showQR(desktop)

  // The phone's camera opened the link in Safari: the page says to scan with WeCom…
  const safari = await newPage('safari', SAFARI_PHONE)
  await safari.goto(link)
  await see(safari, 'h1', '请使用企业微信扫码')
  await snap('safari', safari)
  // …and the link is still free: the computer waits on, and the WeCom app can still use it.
  await desktop.waitForTimeout(2_000) // more than one of the page's polls (1.5 s)
  await see(desktop, '#scan-status', '等待扫码…')

  const phone = await newPage('phone', WECOM_PHONE)
  await scan(phone, link)
  await see(desktop, '#scan-status', '已扫码，请在手机上确认。')

  // Another phone (another WeCom app, its own cookies) with the same link: refused.
  const other = await newPage('other-phone', WECOM_PHONE)
  await other.goto(link)
  await see(other, 'h1', '二维码已失效')
  assert.equal(await other.locator('#action-confirm').count(), 0, 'no confirm button on the second phone')
  await snap('other-phone', other)

  // The first phone, reloading, still has its confirmation.
  await phone.reload()
  await see(phone, 'h1', '在电脑上登录 wecom-oidc demo？')
  await see(desktop, '#scan-status', '已扫码，请在手机上确认。')
}, { context: DESKTOP })

scenario(env, 'the QR page in English (Accept-Language en)', 'scan-desktop-qr-en', async (desktop) => {
  await desktop.goto(env.issuer + '/demo/')
  await desktop.locator('#signin').click()
  await waitForPath(desktop, env.issuer, '/login')
  await seeQR(desktop, { title: 'Scan with the WeCom app to sign in', waiting: 'Waiting for the scan…' })
  await see(desktop, 'a#web-login', 'Use the WeCom web login instead (no mobile number or email)')
  assert.equal(await desktop.locator('html').getAttribute('lang'), 'en')
}, { context: { ...DESKTOP, locale: 'en-US', extraHTTPHeaders: { 'Accept-Language': 'en-US,en;q=0.9' } } })

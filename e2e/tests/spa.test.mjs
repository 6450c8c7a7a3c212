// A single-page app (oidc-client-ts, public client with PKCE) signing members of the simulated
// WeCom in through `wecom-oidc dev`, in Chromium: two instances (clients spa and spa2) on their
// own loopback origins, cross-origin to the provider. Every test asserts what the page shows.
//
// Run: make e2e   (or, after make build and npm ci in e2e/: npm test)

import assert from 'node:assert/strict'

import { idle, scenario, see, setup, waitForPath } from './harness.mjs'

const env = setup({ spas: true })

const WEB_LOGIN = '/_wecomsim/wwlogin/sso/login' // the simulated WeCom web (QR) login page
const IN_CLIENT = '/_wecomsim/connect/oauth2/authorize' // the simulated in-client authorize page
const WECOM_UA = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) ' +
  'Mobile/15E148 wxwork/4.1.26 MicroMessenger/7.0.1 Language/zh ColorScheme/Light'

/** open loads the SPA of clientId and waits until it has started (signed in or not). */
async function open (page, clientId) {
  await page.goto(env.spa[clientId] + '/')
  await see(page, '#client-id', clientId)
  await idle(page)
}

/** pickMember clicks a member on the simulated WeCom page the browser is on. */
async function pickMember (page, userid = 'zhangsan') {
  await page.locator(`a[data-userid="${userid}"]`).click()
}

/**
 * signIn: the SPA's sign-in button, the simulated WeCom web login, a click on the member; snap,
 * when given, takes a picture of the WeCom page.
 */
async function signIn (page, clientId = 'spa', userid = 'zhangsan', snap) {
  await open(page, clientId)
  await see(page, '#status', '未登录 · Not signed in')
  await page.locator('#signin').click()
  await waitForPath(page, env.issuer, WEB_LOGIN)
  await see(page, 'h1', '企业微信登录')
  await snap?.('wecom')
  await pickMember(page, userid)
  await see(page, '#status', '已登录 · Signed in')
  assert.equal(new URL(page.url()).origin, env.spa[clientId], `back at ${clientId}'s origin`)
}

/** seeZhangsan: the member's claims as the SPA shows them. */
async function seeZhangsan (page) {
  await see(page, '#name', '张三')
  await see(page, '#email', 'zhangsan@corp.example')
  await see(page, '#groups', /(^|, )研发中心(, |$)/)
  await see(page, '#groups', /(^|, )平台组(, |$)/)
  await see(page, '#sub', 'zhangsan')
}

/** wecomPages records every request the page makes to the simulated WeCom from now on. */
function wecomPages (page) {
  const seen = []
  page.on('request', (req) => { if (new URL(req.url()).pathname.startsWith('/_wecomsim/')) seen.push(req.url()) })
  return seen
}

scenario(env, 'sign in: a click on 张三 in the simulated WeCom, back at the SPA with tokens and her claims', 'spa-sign-in', async (page, { snap }) => {
  await signIn(page, 'spa', 'zhangsan', snap)
  await seeZhangsan(page)
  await see(page, '#amr', 'wecom_web')
  await see(page, '#access-token', /^[0-9a-f]{8}$/)
  await see(page, '#refresh-token', /^[0-9a-f]{8}$/) // offline_access: a refresh token
  await see(page, '#error', '')
  assert.equal(new URL(page.url()).pathname, '/', 'the callback URL (code, state) is gone from the address bar')
})

scenario(env, 'userinfo from the SPA\'s origin: a cross-origin call the provider allows (CORS)', 'spa-userinfo-cors', async (page, { context }) => {
  await signIn(page)
  const answer = page.waitForResponse((r) => new URL(r.url()).pathname === '/userinfo' && r.request().method() === 'GET')
  await page.locator('#userinfo').click()
  await see(page, '#userinfo-result', 'HTTP 200 · 张三 · zhangsan@corp.example · sub zhangsan')
  // What let the page read it: the provider named the SPA's origin. (The Authorization header
  // made Chromium send a preflight first, which Playwright does not report; the GET would not
  // have been sent had the preflight failed.)
  assert.equal(await (await answer).headerValue('access-control-allow-origin'), env.spa.spa,
    'GET /userinfo allows the SPA\'s origin')

  // The same access token, from an origin no client registered: the browser withholds the answer.
  const accessToken = await page.evaluate(() => {
    const key = Object.keys(sessionStorage).find((k) => k.startsWith('oidc.user:'))
    return JSON.parse(sessionStorage.getItem(key)).access_token
  })
  const stranger = await context.newPage()
  await stranger.goto(env.spa.stranger + '/')
  const outcome = await stranger.evaluate(async ({ url, token }) => {
    try {
      const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } })
      return `read HTTP ${response.status}`
    } catch (err) {
      return `blocked: ${err.message}`
    }
  }, { url: env.issuer + '/userinfo', token: accessToken })
  assert.match(outcome, /^blocked: /, `userinfo from the unregistered origin ${env.spa.stranger}`)
  await stranger.close()
})

scenario(env, 'refresh: the rotated refresh token is accepted, the old one refused with invalid_grant', 'spa-refresh-rotation', async (page) => {
  await signIn(page)
  const first = await page.locator('#refresh-token').textContent()

  // Refresh with the token from the sign-in: a new refresh token replaces it.
  await page.locator('#refresh').click()
  await see(page, '#refresh-result', new RegExp(`^rotated · ${first} → [0-9a-f]{8}$`))
  const second = await page.locator('#refresh-token').textContent()
  assert.notEqual(second, first, 'the page holds the new refresh token')
  await seeZhangsan(page)

  // The rotated token is accepted: refreshing with it works, and so does the new access token.
  await page.locator('#refresh').click()
  await see(page, '#refresh-result', new RegExp(`^rotated · ${second} → [0-9a-f]{8}$`))
  await page.locator('#userinfo').click()
  await see(page, '#userinfo-result', 'HTTP 200 · 张三 · zhangsan@corp.example · sub zhangsan')

  // The token the last refresh replaced, presented again by hand: refused.
  await page.locator('#old-refresh').click()
  await see(page, '#old-refresh-result', 'HTTP 400 · invalid_grant')

  // Replaying a rotated token revoked its family: the current refresh token is refused too.
  await page.locator('#refresh').click()
  await see(page, '#refresh-result', 'refused · invalid_grant')
  await see(page, '#error', /^invalid_grant\b/)
})

scenario(env, 'SSO: the second client (spa2) signs in silently (prompt=none) through the session', 'spa2-silent-sso', async (page) => {
  await signIn(page, 'spa')
  const wecom = wecomPages(page)
  await open(page, 'spa2')
  await see(page, '#status', '未登录 · Not signed in')
  await page.locator('#silent').click()
  await see(page, '#status', '已登录 · Signed in')
  assert.equal(new URL(page.url()).origin, env.spa.spa2)
  await see(page, '#client-id', 'spa2')
  await seeZhangsan(page)
  await see(page, '#error', '')
  assert.deepEqual(wecom, [], 'no WeCom page on the way: the SSO session signed spa2 in')
})

scenario(env, 'log out through end_session: back at the SPA signed out, and prompt=none then fails with login_required', 'spa-logout', async (page, { snap }) => {
  await signIn(page, 'spa')
  const wecom = wecomPages(page)
  const revoked = []
  page.on('response', (r) => { if (new URL(r.url()).pathname === '/revoke' && r.request().method() === 'POST') revoked.push(r.status()) })
  const endSession = page.waitForRequest((r) => new URL(r.url()).pathname === '/end_session')
  await page.locator('#signout').click()

  // The request oidc-client-ts made: id_token_hint, post_logout_redirect_uri, state.
  const q = new URL((await endSession).url()).searchParams
  assert.ok(q.get('id_token_hint'), 'end_session carries id_token_hint')
  assert.equal(q.get('post_logout_redirect_uri'), env.spa.spa + '/')
  assert.ok(q.get('state'), 'end_session carries a state')

  await see(page, '#status', '已退出登录 · Signed out')
  assert.equal(new URL(page.url()).origin, env.spa.spa, 'back at the SPA (post_logout_redirect_uri)')
  await see(page, '#name', '')
  await see(page, '#error', '')
  assert.deepEqual(revoked, [200, 200], 'the SPA revoked its access and refresh token (cross-origin /revoke)')
  await snap('signed-out')

  // The provider's session is over: prompt=none answers login_required, for this client…
  await page.locator('#silent').click()
  await see(page, '#error', /^login_required\b/)
  await see(page, '#status', '未登录 · Not signed in')
  // …and for the other one.
  await open(page, 'spa2')
  await page.locator('#silent').click()
  await see(page, '#error', /^login_required\b/)
  await see(page, '#status', '未登录 · Not signed in')
  assert.deepEqual(wecom, [], 'prompt=none never shows WeCom')
})

scenario(env, 'inside the WeCom app (User-Agent wxwork): the in-client authorize page, then signed in with the consented e-mail', 'spa-wecom-in-client', async (page, { snap }) => {
  await open(page, 'spa')
  await page.locator('#signin').click()
  await waitForPath(page, env.issuer, IN_CLIENT)
  await see(page, 'h1', '企业微信 · 网页授权')
  await see(page, '.meta', /scope snsapi_privateinfo$/)
  await snap('authorize')
  await pickMember(page, 'zhangsan')
  await see(page, '#status', '已登录 · Signed in')
  await seeZhangsan(page)
  await see(page, '#amr', 'wecom_client')
}, { userAgent: WECOM_UA })

// The device authorization grant (RFC 8628) of `wecom-oidc dev`, for the public client `cli`
// (e2e/dev.yaml, device_flow: true). The device is this Node process: it starts the device
// authorization with fetch and polls the token endpoint in the background, honouring `interval`
// (5 s more after every slow_down, RFC 8628 §3.5), while Chromium plays the person: the
// verification page (the code typed on a computer, or the complete link opened inside the WeCom
// app), the simulated WeCom login as 张三, and allow or deny. Also: a wrong code, the page in
// English, and the device's own mistakes (polling too fast, a client without the device flow, an
// unknown device code).
//
// Run: make e2e   (or, after make build and npm ci in e2e/: npm test)

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'

import { WECOM_PHONE, scenario, see, setup, waitForPath } from './harness.mjs'

const env = setup()

const CLIENT_ID = 'cli'
const CLIENT_NAME = 'E2E command-line tool'
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'
const SCOPE = 'openid profile offline_access'
const WEB_LOGIN = '/_wecomsim/wwlogin/sso/login' // the simulated WeCom web (QR) login page
const IN_CLIENT = '/_wecomsim/connect/oauth2/authorize' // the simulated in-client authorize page
const USER_CODE = /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/ // 8 of op.CharSetBase20
// The longest a device waits for the person (each happy scenario needs one or two intervals).
const POLL_BUDGET_MS = 30_000
// A little over the interval: a timer may fire a millisecond early, and the provider answers a
// poll sooner than `interval` seconds after the previous one with slow_down.
const POLL_MARGIN_MS = 100


// --- the device -----------------------------------------------------------------------------------

const issued = new Set() // every user code this file's devices got
let discovery
async function discover () {
  if (!discovery) {
    const res = await fetch(env.issuer + '/.well-known/openid-configuration')
    assert.equal(res.status, 200, 'discovery')
    discovery = await res.json()
    assert.equal(discovery.device_authorization_endpoint, env.issuer + '/device_authorization', 'discovery names the device authorization endpoint')
    assert.ok(discovery.grant_types_supported.includes(DEVICE_GRANT), `discovery lists the device grant: ${discovery.grant_types_supported}`)
  }
  return discovery
}

async function post (url, form) {
  const res = await fetch(url, { method: 'POST', body: new URLSearchParams(form) })
  const text = await res.text()
  let body
  try { body = JSON.parse(text) } catch { assert.fail(`POST ${url} answered ${res.status} with no JSON: ${text.slice(0, 200)}`) }
  return { status: res.status, body }
}

/** startDevice: the device asks for a device code and a user code (RFC 8628 §3.1–3.2). */
async function startDevice ({ clientId = CLIENT_ID, scope = SCOPE } = {}) {
  const { device_authorization_endpoint: endpoint } = await discover()
  const { status, body } = await post(endpoint, { client_id: clientId, scope })
  assert.equal(status, 200, `device authorization: ${JSON.stringify(body)}`)
  assert.ok(typeof body.device_code === 'string' && body.device_code.length >= 32, `a device code: ${JSON.stringify(body)}`)
  assert.match(body.user_code, USER_CODE)
  assert.equal(body.verification_uri, env.issuer + '/device')
  assert.equal(body.verification_uri_complete, `${env.issuer}/device?user_code=${body.user_code}`)
  assert.equal(body.expires_in, 600)
  assert.equal(body.interval, 5)
  issued.add(body.user_code)
  return body
}

/** pollOnce: one poll of the token endpoint with the device code; { status, body }. */
async function pollOnce (deviceCode, clientId = CLIENT_ID) {
  const { token_endpoint: endpoint } = await discover()
  return post(endpoint, { grant_type: DEVICE_GRANT, device_code: deviceCode, client_id: clientId })
}

/**
 * pollInBackground: the device polls — at once, then `interval` seconds after each answer, 5 s
 * more after every slow_down — until it gets tokens or an error other than authorization_pending
 * and slow_down. result resolves to { tokens } or { error }, with answers: every poll's outcome in
 * order. stop() ends the polling (the scenario failed: nobody will answer).
 */
function pollInBackground (auth) {
  const abort = new AbortController()
  const answers = []
  const started = Date.now()
  const result = (async () => {
    let interval = auth.interval * 1000
    for (;;) {
      const { status, body } = await pollOnce(auth.device_code)
      if (status === 200) {
        answers.push('tokens')
        return { tokens: body, answers }
      }
      assert.equal(status, 400, `a poll answered ${status}: ${JSON.stringify(body)}`)
      answers.push(body.error)
      if (body.error === 'slow_down') interval += 5_000
      else if (body.error !== 'authorization_pending') return { error: body.error, answers }
      if (Date.now() - started + interval > POLL_BUDGET_MS) {
        throw new Error(`the device got no answer within ${POLL_BUDGET_MS} ms; polls: ${answers.join(', ')}`)
      }
      await sleep(interval + POLL_MARGIN_MS, undefined, { signal: abort.signal })
    }
  })()
  result.catch(() => {}) // awaited by the scenario; a scenario that failed before stops it
  return { result, stop: () => abort.abort() }
}

/** withDevice runs fn(auth, poller) with a device polling in the background, stopped after fn. */
async function withDevice (fn) {
  const auth = await startDevice()
  const poller = pollInBackground(auth)
  try {
    return await fn(auth, poller)
  } finally {
    poller.stop()
  }
}

function decodeJWT (jwt) {
  const parts = jwt.split('.')
  assert.equal(parts.length, 3, `a signed JWT: ${jwt.slice(0, 40)}…`)
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'))
}

/** assertTokens checks the device's tokens: an ID token for 张三 and cli, a refresh token. */
function assertTokens (tokens) {
  assert.ok(tokens.access_token, `an access token: ${JSON.stringify(tokens)}`)
  assert.match(tokens.token_type, /^bearer$/i)
  assert.ok(tokens.expires_in > 0, `expires_in: ${tokens.expires_in}`)
  assert.ok(tokens.refresh_token, 'a refresh token (scope offline_access)')
  assert.ok(tokens.id_token, 'an ID token (scope openid)')
  const claims = decodeJWT(tokens.id_token)
  assert.equal(claims.iss, env.issuer)
  assert.equal(claims.sub, 'zhangsan')
  const aud = [claims.aud].flat()
  assert.ok(aud.includes(CLIENT_ID), `the ID token is for ${CLIENT_ID}: aud ${JSON.stringify(claims.aud)}`)
  assert.ok(claims.exp * 1000 > Date.now(), 'the ID token is not expired')
  return claims
}

// --- the person -----------------------------------------------------------------------------------

/** seeConfirmation: the signed-in 张三 is asked to allow the device showing userCode. */
async function seeConfirmation (page, userCode) {
  assert.equal(new URL(page.url()).searchParams.get('user_code'), userCode, 'back at the page of the code')
  await see(page, 'h1', `允许 ${CLIENT_NAME} 在设备上登录？`)
  await see(page, 'main > p:not(#detail)', /您正以 张三 的身份/)
  await see(page, '#detail', userCode)
  await see(page, '#action-allow', '允许')
  await see(page, '#action-deny', '拒绝')
}

/** seeEntryForm: the verification page without a code, in Chinese. */
async function seeEntryForm (page) {
  await see(page, 'h1', '登录设备')
  await see(page, 'main > p', '请输入设备或命令行工具上显示的代码。')
  await see(page, 'label[for="user_code"]', '设备代码')
  await page.locator('input#user_code').waitFor({ state: 'visible' })
  await see(page, '#go-1', '继续')
}

// This scenario runs first: its slug's clean-up also removes the other device-*.png, which the
// later scenarios make again.
scenario(env, 'device flow: on a computer, 张三 types the code (lower case, a space), signs in and allows; the device gets her tokens, once', 'device', async (page, { snap, newPage }) => {
  await withDevice(async (auth, poller) => {
    await page.goto(auth.verification_uri)
    await seeEntryForm(page)
    const typed = auth.user_code.toLowerCase().replace('-', ' ')
    await page.locator('input#user_code').fill(typed)
    await page.locator('#go-1').click()

    await waitForPath(page, env.issuer, WEB_LOGIN)
    await page.locator('a[data-userid="zhangsan"]').click()
    await waitForPath(page, env.issuer, '/device')
    await seeConfirmation(page, auth.user_code)
    await snap('confirm')

    await page.locator('#action-allow').click()
    await see(page, 'h1', '设备已登录')
    await see(page, 'main > p', '请回到设备继续。可以关闭此页面。')
    await snap('done')

    const { tokens, error, answers } = await poller.result
    assert.equal(error, undefined, `the device was refused: ${answers.join(', ')}`)
    assert.ok(!answers.includes('slow_down'), `a device that waits the interval is never told slow_down: ${answers.join(', ')}`)
    assert.equal(answers[0], 'authorization_pending', 'the device polled while the person signed in')
    assert.equal(answers.at(-1), 'tokens')
    assertTokens(tokens)

    // The access token is 张三's at the userinfo endpoint.
    const { userinfo_endpoint: userinfo } = await discover()
    const res = await fetch(userinfo, { headers: { Authorization: `Bearer ${tokens.access_token}` } })
    assert.equal(res.status, 200, 'userinfo with the access token')
    const info = await res.json()
    assert.equal(info.sub, 'zhangsan')
    assert.equal(info.name, '张三')

    // The device code is spent.
    const again = await pollOnce(auth.device_code)
    assert.equal(again.status, 400)
    assert.equal(again.body.error, 'invalid_grant', `a second poll after the tokens: ${JSON.stringify(again.body)}`)

    // And the code's page, opened again (here in another browser), says it was used.
    const other = await newPage('again', { viewport: { width: 1280, height: 800 } })
    await other.goto(auth.verification_uri_complete)
    await see(other, 'h1', '此代码已使用')
    await snap('used', other)
  })
}, { context: { viewport: { width: 1280, height: 800 } } })

scenario(env, 'device flow: 张三 opens the complete link on a computer and denies; the device is told access_denied', 'device-denied', async (page) => {
  await withDevice(async (auth, poller) => {
    await page.goto(auth.verification_uri_complete)
    await waitForPath(page, env.issuer, WEB_LOGIN)
    await page.locator('a[data-userid="zhangsan"]').click()
    await waitForPath(page, env.issuer, '/device')
    await seeConfirmation(page, auth.user_code)

    await page.locator('#action-deny').click()
    await see(page, 'h1', '已拒绝')
    await see(page, 'main > p', '设备没有登录。可以关闭此页面。')

    const { tokens, error, answers } = await poller.result
    assert.equal(tokens, undefined, 'no tokens for a denied device')
    assert.equal(error, 'access_denied', `polls: ${answers.join(', ')}`)
    assert.ok(!answers.includes('slow_down'), `polls: ${answers.join(', ')}`)
  })
}, { context: { viewport: { width: 1280, height: 800 } } })

scenario(env, 'device flow: a wrong code gets the form again, with the error and what was typed', 'device-wrong-code', async (page) => {
  let wrong = 'BCDF-GHJK'
  while (issued.has(wrong)) wrong = wrong.split('').reverse().join('') // not a code a device here got
  await page.goto(env.issuer + '/device')
  await seeEntryForm(page)
  await page.locator('input#user_code').fill(wrong)
  const [response] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/device' && r.request().method() === 'GET'),
    page.locator('#go-1').click(),
  ])
  assert.equal(response.status(), 400, 'a wrong code is a 400')
  await see(page, '#error', '代码无效或已过期，请核对后重新输入，或在设备上重新开始登录。')
  await see(page, 'h1', '登录设备')
  assert.equal(await page.locator('input#user_code').inputValue(), wrong, 'the form keeps what was typed')
  await see(page, '#go-1', '继续')
}, { context: { viewport: { width: 1280, height: 800 } } })

scenario(env, 'device flow: the verification page in English (Accept-Language en)', 'device-entry-en', async (page) => {
  await page.goto(env.issuer + '/device')
  await see(page, 'h1', 'Sign in a device')
  await see(page, 'main > p', 'Enter the code shown on your device or command-line tool.')
  await see(page, 'label[for="user_code"]', 'Device code')
  await see(page, '#go-1', 'Continue')
  assert.equal(await page.locator('html').getAttribute('lang'), 'en')
}, { context: { viewport: { width: 1280, height: 800 }, locale: 'en-US', extraHTTPHeaders: { 'Accept-Language': 'en-US,en;q=0.9' } } })

scenario(env, 'device flow inside the WeCom app: the complete link leads to the in-client login, 张三 allows, the device gets her tokens', 'device-wecom', async (phone, { snap }) => {
  await withDevice(async (auth, poller) => {
    await phone.goto(auth.verification_uri_complete)
    await waitForPath(phone, env.issuer, IN_CLIENT)
    await phone.locator('a[data-userid="zhangsan"]').click()
    await waitForPath(phone, env.issuer, '/device')
    await seeConfirmation(phone, auth.user_code)
    await snap('confirm')

    await phone.locator('#action-allow').click()
    await see(phone, 'h1', '设备已登录')

    const { tokens, error, answers } = await poller.result
    assert.equal(error, undefined, `the device was refused: ${answers.join(', ')}`)
    assert.ok(!answers.includes('slow_down'), `polls: ${answers.join(', ')}`)
    assertTokens(tokens)
  })
}, { context: WECOM_PHONE })

// The device's mistakes, at the endpoints only (no browser).
test('device flow endpoints: polling too fast, an unknown device code, a client without the device flow', async () => {
  const auth = await startDevice({ scope: 'openid' })
  let r = await pollOnce(auth.device_code)
  assert.deepEqual([r.status, r.body.error], [400, 'authorization_pending'], JSON.stringify(r.body))
  r = await pollOnce(auth.device_code) // at once, not `interval` seconds later
  assert.deepEqual([r.status, r.body.error], [400, 'slow_down'], JSON.stringify(r.body))

  r = await pollOnce('not-a-device-code-of-this-provider')
  assert.deepEqual([r.status, r.body.error], [400, 'expired_token'], JSON.stringify(r.body))

  // spa is public but not registered with device_flow.
  const { device_authorization_endpoint: endpoint } = await discover()
  r = await post(endpoint, { client_id: 'spa', scope: 'openid' })
  assert.deepEqual([r.status, r.body.error], [400, 'unauthorized_client'], JSON.stringify(r.body))
  r = await pollOnce(auth.device_code, 'spa')
  assert.deepEqual([r.status, r.body.error], [400, 'unauthorized_client'], JSON.stringify(r.body))
})

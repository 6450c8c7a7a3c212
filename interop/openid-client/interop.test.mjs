// Interoperability test: panva's openid-client (an OpenID-certified relying party) against
// `wecom-oidc dev` (the provider with the simulated WeCom and its demo client).
//
// The test starts the built binary itself (../../bin/wecom-oidc, or $WECOM_OIDC_BIN) on a free
// loopback port with a throw-away data directory, plays the browser with a small cookie jar, and
// hands the final redirect to openid-client, which does everything an application would: discovery,
// code + PKCE, ID token validation (signature against /keys, iss, aud, exp, nonce), userinfo,
// refresh, introspection, revocation and RP-initiated logout.
//
// Run: make interop   (or: npm ci && node --test, after make build)

import { after, before, test as nodeTest } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import * as client from 'openid-client'

const here = path.dirname(fileURLToPath(import.meta.url))
const BIN = process.env.WECOM_OIDC_BIN || path.resolve(here, '../../bin/wecom-oidc')
const CLIENT_ID = 'demo'
const SCOPE = 'openid profile email phone groups offline_access'
const REQUEST_TIMEOUT_MS = 5_000 // every HTTP request the test makes itself
const START_TIMEOUT_MS = 15_000 // the provider printing its issuer
const STOP_TIMEOUT_MS = 10_000 // the provider exiting after SIGTERM

/** @type {import('node:child_process').ChildProcess} */
let proc
let procExit // resolves to { code, signal } when the provider exits
let dataDir
const output = { stdout: '', stderr: '' }
let spawnError
let issuer // e.g. http://127.0.0.1:PORT
let secret
let redirectUri
let postLogoutRedirectUri
/** @type {client.Configuration} */
let config

// --- the provider ---------------------------------------------------------------------------

before(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'wecom-oidc-interop-'))
  proc = spawn(BIN, ['dev', '--listen', '127.0.0.1:0', '--data', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // Only what the binary needs: no WECOM_OIDC_* from the caller's environment.
    // desktop_scan off: the logins here go straight to the simulated web login.
    env: { PATH: process.env.PATH, HOME: process.env.HOME ?? dataDir, WECOM_OIDC_DEV__DESKTOP_SCAN: 'off' },
  })
  procExit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  proc.stdout.setEncoding('utf8')
  proc.stderr.setEncoding('utf8')
  proc.stderr.on('data', (s) => { output.stderr += s })

  const printed = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(
      `wecom-oidc dev printed no issuer and secret within ${START_TIMEOUT_MS} ms\n` + diagnostics())), START_TIMEOUT_MS)
    proc.on('error', (err) => { spawnError = err; clearTimeout(timer); reject(new Error(`cannot start ${BIN}: ${err.message} (run make build)`)) })
    procExit.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`wecom-oidc dev exited early (code ${code}, signal ${signal})\n` + diagnostics()))
    })
    proc.stdout.on('data', (s) => {
      output.stdout += s
      const field = (label) => output.stdout.match(new RegExp(`^\\s*${label}\\s+(\\S+)\\s*$`, 'm'))?.[1]
      const got = {
        issuer: field('issuer'),
        clientId: field('client id'),
        secret: field('client secret'),
        redirectUri: field('redirect URI'),
        afterLogout: field('after logout'),
      }
      if (got.issuer && got.clientId && got.secret && got.redirectUri && got.afterLogout) {
        clearTimeout(timer)
        resolve(got)
      }
    })
  })
  issuer = printed.issuer
  secret = printed.secret
  redirectUri = printed.redirectUri
  postLogoutRedirectUri = printed.afterLogout
  assert.match(issuer, /^http:\/\/127\.0\.0\.1:\d+$/, 'dev mode serves on loopback')
  assert.equal(printed.clientId, CLIENT_ID)
  assert.equal(redirectUri, `${issuer}/demo/callback`)
  assert.equal(postLogoutRedirectUri, `${issuer}/demo/`)

  config = await client.discovery(new URL(issuer), CLIENT_ID, secret, undefined, {
    // http is fine on loopback; also verify the ID token's signature against the JWKS
    // (openid-client skips that for token-endpoint responses unless asked).
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    timeout: REQUEST_TIMEOUT_MS / 1000,
  })
})

after(async () => {
  try {
    if (proc && !spawnError && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM')
      let timer
      const result = await Promise.race([
        procExit,
        new Promise((resolve) => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS) }),
      ])
      clearTimeout(timer)
      if (result === null) {
        proc.kill('SIGKILL')
        assert.fail(`wecom-oidc did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM\n` + diagnostics())
      }
      assert.deepEqual(result, { code: 0, signal: null },
        'wecom-oidc exits 0 on SIGTERM\n' + diagnostics())
    }
  } finally {
    if (dataDir) await rm(dataDir, { recursive: true, force: true })
  }
})

function diagnostics () {
  const tail = (s) => s.split('\n').slice(-30).join('\n')
  return `--- stdout ---\n${tail(output.stdout)}\n--- stderr ---\n${tail(output.stderr)}`
}

// --- the browser --------------------------------------------------------------------------------

// A cookie jar for one host (everything is on 127.0.0.1): name → { value, path, expires }.
class CookieJar {
  #cookies = new Map()

  store (response, url) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';')
      const eq = pair.indexOf('=')
      if (eq <= 0) continue
      const name = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1).trim()
      let cookiePath = url.pathname.replace(/\/[^/]*$/, '') || '/'
      let expires = Infinity
      for (const attr of attrs) {
        const [k, ...v] = attr.split('=')
        const key = k.trim().toLowerCase()
        const val = v.join('=').trim()
        if (key === 'path' && val.startsWith('/')) cookiePath = val
        if (key === 'max-age' && /^-?\d+$/.test(val)) expires = Date.now() + Number(val) * 1000
        if (key === 'expires' && !attrs.some((a) => a.trim().toLowerCase().startsWith('max-age='))) {
          const t = Date.parse(val)
          if (!Number.isNaN(t)) expires = t
        }
      }
      if (expires <= Date.now() || value === '') this.#cookies.delete(name)
      else this.#cookies.set(name, { value, path: cookiePath, expires })
    }
  }

  header (url) {
    const now = Date.now()
    const pairs = []
    for (const [name, c] of this.#cookies) {
      if (c.expires <= now) { this.#cookies.delete(name); continue }
      const matches = url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : c.path + '/')
      if (matches) pairs.push(`${name}=${c.value}`)
    }
    return pairs.join('; ')
  }

  names () { return [...this.#cookies.keys()] }

  clone () {
    const copy = new CookieJar()
    for (const [name, c] of this.#cookies) copy.#cookies.set(name, { ...c })
    return copy
  }
}

// get fetches one URL without following redirects, with the jar's cookies and a timeout.
async function get (jar, url) {
  const headers = { 'user-agent': 'wecom-oidc-interop (openid-client)', 'accept-language': 'en' }
  const cookie = jar.header(url)
  if (cookie) headers.cookie = cookie
  const response = await fetch(url, { redirect: 'manual', headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  jar.store(response, url)
  return response
}

function unescapeHTML (s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (_, e) => {
    const lower = e.toLowerCase()
    if (lower.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16))
    if (lower.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10))
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[lower]
  })
}

const withoutQuery = (u) => u.origin + u.pathname

// browse follows redirects from start, as a browser would, until one points at stopAt (a URL
// without query, compared without the query), and returns that URL without fetching it. On the
// simulated WeCom login page it clicks the member `userid`. Every hop is recorded, for messages.
async function browse (jar, start, { userid = 'zhangsan', stopAt = redirectUri } = {}) {
  let url = new URL(start)
  const hops = []
  for (let i = 0; i < 20; i++) {
    const response = await get(jar, url)
    hops.push(`${response.status} GET ${url}`)
    const trail = () => `\nhops:\n  ${hops.join('\n  ')}`
    if (response.status >= 300 && response.status < 400) {
      const location = response.headers.get('location')
      assert.ok(location, `redirect without Location from ${url}` + trail())
      const next = new URL(location, url)
      if (withoutQuery(next) === stopAt) return next
      url = next
      continue
    }
    const body = await response.text()
    if (response.status === 200 && url.pathname.endsWith('/_wecomsim/wwlogin/sso/login')) {
      const links = new Map([...body.matchAll(/data-userid="([^"]*)"\s+href="([^"]*)"/g)]
        .map(([, id, href]) => [unescapeHTML(id), unescapeHTML(href)]))
      assert.ok(links.has(userid), `simulated WeCom lists no member ${userid} (has ${[...links.keys()]})` + trail())
      url = new URL(links.get(userid), url)
      continue
    }
    assert.fail(`unexpected ${response.status} at ${url}: ${body.slice(0, 500)}` + trail())
  }
  assert.fail(`more than 20 hops from ${start}`)
}

// --- openid-client helpers ----------------------------------------------------------------------

async function authParams (extra = {}) {
  const codeVerifier = client.randomPKCECodeVerifier()
  const params = {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state: client.randomState(),
    nonce: client.randomNonce(),
    ...extra,
  }
  return { params, codeVerifier, url: client.buildAuthorizationUrl(config, params) }
}

// signIn runs the whole code flow for a member with a fresh (or the given) jar.
async function signIn ({ jar = new CookieJar(), userid = 'zhangsan', extra = {} } = {}) {
  const { params, codeVerifier, url } = await authParams(extra)
  const callback = await browse(jar, url, { userid })
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedState: params.state,
    expectedNonce: params.nonce,
    idTokenExpected: true,
  })
  return { jar, tokens, callback, params }
}

async function expectRejects (promise, check, message) {
  let err
  try {
    await promise
  } catch (e) {
    err = e
  }
  assert.ok(err, message + ': expected an error, got success')
  check(err)
  return err
}

// test is node:test's test, so that an openid-client error about an HTTP response (wrong status,
// content type, …) reports that response: status, content type, body.
function test (name, fn) {
  return nodeTest(name, async (t) => {
    try {
      await fn(t)
    } catch (err) {
      const response = err?.response instanceof Response ? err.response : err?.cause instanceof Response ? err.cause : undefined
      if (response) {
        const body = response.bodyUsed ? '(body already read)' : (await response.text().catch(() => '')).slice(0, 500)
        err.message += ` — the provider answered ${response.status} ${response.headers.get('content-type') ?? '(no content type)'}` +
          `${response.headers.get('www-authenticate') ? ', WWW-Authenticate: ' + response.headers.get('www-authenticate') : ''}` +
          ` from ${response.url || '?'}: ${JSON.stringify(body)}`
      }
      throw err
    }
  })
}

// --- the tests ----------------------------------------------------------------------------------

test('discovery: metadata names the issuer, endpoints, S256 and end_session', () => {
  const m = config.serverMetadata()
  assert.equal(m.issuer, issuer)
  for (const endpoint of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri',
    'introspection_endpoint', 'revocation_endpoint', 'end_session_endpoint']) {
    assert.ok(m[endpoint], `${endpoint} present`)
    assert.ok(m[endpoint].startsWith(issuer + '/'), `${endpoint} (${m[endpoint]}) is under the issuer`)
  }
  assert.ok(m.code_challenge_methods_supported?.includes('S256'), 'code_challenge_methods_supported includes S256')
  assert.ok(m.response_types_supported?.includes('code'), 'response_types_supported includes code')
  assert.ok(m.id_token_signing_alg_values_supported?.includes('RS256'), 'RS256 ID tokens')
  const auth = m.token_endpoint_auth_methods_supported ?? ['client_secret_basic']
  assert.ok(auth.includes('client_secret_basic'), `client_secret_basic in ${auth}`)
  assert.ok(auth.includes('client_secret_post'), `client_secret_post in ${auth}`)
})

test('code + PKCE (S256) with state and nonce: a verified ID token for zhangsan', async () => {
  const { tokens, params } = await signIn()
  assert.equal(tokens.token_type.toLowerCase(), 'bearer')
  assert.ok(tokens.access_token, 'access token')
  assert.ok(tokens.refresh_token, 'refresh token (offline_access)')
  assert.ok(tokens.id_token, 'ID token')
  const claims = tokens.claims()
  assert.equal(claims.iss, issuer)
  assert.ok(claims.aud === CLIENT_ID || (Array.isArray(claims.aud) && claims.aud.includes(CLIENT_ID)), `aud ${claims.aud}`)
  assert.equal(claims.nonce, params.nonce)
  assert.ok(claims.exp > Date.now() / 1000, 'unexpired')
  assert.equal(claims.sub, 'zhangsan')
  assert.equal(claims.name, '张三')
  assert.equal(claims.preferred_username, 'zhangsan')
  assert.equal(claims.email, 'zhangsan@corp.example')
  assert.ok(Array.isArray(claims.groups), `groups is an array: ${JSON.stringify(claims.groups)}`)
  for (const g of ['研发中心', '平台组']) assert.ok(claims.groups.includes(g), `groups ${JSON.stringify(claims.groups)} include ${g}`)
})

test('the ID token is signed with RS256 by a key in the JWKS', async () => {
  // enableNonRepudiationChecks has already made openid-client verify the signature; this checks
  // what it checked against.
  const { tokens } = await signIn()
  const header = JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url').toString())
  assert.equal(header.alg, 'RS256')
  const res = await fetch(config.serverMetadata().jwks_uri, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  assert.equal(res.status, 200)
  const jwks = await res.json()
  assert.ok(jwks.keys.some((k) => k.kid === header.kid), `kid ${header.kid} is in the JWKS`)
})

test('a code is single use: the second exchange fails with invalid_grant', async () => {
  const { params, codeVerifier, url } = await authParams()
  const callback = await browse(new CookieJar(), url)
  const checks = { pkceCodeVerifier: codeVerifier, expectedState: params.state, expectedNonce: params.nonce }
  await client.authorizationCodeGrant(config, callback, checks)
  await expectRejects(client.authorizationCodeGrant(config, callback, checks), (err) => {
    assert.ok(err instanceof client.ResponseBodyError, `ResponseBodyError, got ${err}`)
    assert.equal(err.error, 'invalid_grant')
  }, 'redeeming a code twice')
})

test('userinfo: same sub as the ID token, profile, e-mail and groups', async () => {
  const { tokens } = await signIn()
  const sub = tokens.claims().sub
  const info = await client.fetchUserInfo(config, tokens.access_token, sub)
  assert.equal(info.sub, 'zhangsan')
  assert.equal(info.name, '张三')
  assert.equal(info.email, 'zhangsan@corp.example')
  assert.ok(info.groups?.includes('研发中心') && info.groups?.includes('平台组'), `groups ${JSON.stringify(info.groups)}`)
})

test('a member without e-mail (wangwu): no email claim', async () => {
  const { tokens } = await signIn({ userid: 'wangwu' })
  const claims = tokens.claims()
  assert.equal(claims.sub, 'wangwu')
  assert.equal(claims.name, '王五')
  assert.equal(claims.email, undefined)
  const info = await client.fetchUserInfo(config, tokens.access_token, 'wangwu')
  assert.equal(info.email, undefined)
})

test('refresh: the refresh token rotates and the old one then fails with invalid_grant', async () => {
  const { tokens } = await signIn()
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token)
  assert.ok(refreshed.access_token, 'new access token')
  assert.notEqual(refreshed.access_token, tokens.access_token)
  assert.ok(refreshed.refresh_token, 'a new refresh token')
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'rotated')
  if (refreshed.id_token) assert.equal(refreshed.claims().sub, 'zhangsan')
  const info = await client.fetchUserInfo(config, refreshed.access_token, 'zhangsan')
  assert.equal(info.sub, 'zhangsan')
  await expectRejects(client.refreshTokenGrant(config, tokens.refresh_token), (err) => {
    assert.ok(err instanceof client.ResponseBodyError, `ResponseBodyError, got ${err}`)
    assert.equal(err.error, 'invalid_grant')
  }, 'reusing the rotated refresh token')
})

test('refresh: reusing a rotated refresh token revokes its family (the newer one fails too)', async () => {
  const { tokens } = await signIn()
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token)
  await expectRejects(client.refreshTokenGrant(config, tokens.refresh_token), (err) => {
    assert.equal(err.error, 'invalid_grant', `${err}`)
  }, 'reusing the rotated refresh token')
  await expectRejects(client.refreshTokenGrant(config, refreshed.refresh_token), (err) => {
    assert.ok(err instanceof client.ResponseBodyError, `ResponseBodyError, got ${err}`)
    assert.equal(err.error, 'invalid_grant')
  }, 'the newest refresh token of a family whose rotated token was replayed')
})

// The provider advertises introspection_endpoint_auth_methods_supported: [client_secret_basic]
// only; openid-client uses one client authentication method for every endpoint, by default
// client_secret_post. basicConfig is the same client with client_secret_basic.
let basic
async function basicConfig () {
  basic ??= await client.discovery(new URL(issuer), CLIENT_ID, undefined, client.ClientSecretBasic(secret), {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    timeout: REQUEST_TIMEOUT_MS / 1000,
  })
  return basic
}

test('client_secret_basic: code exchange, and introspection (active token, garbage inactive)', async () => {
  const basic = await basicConfig()
  const { params, codeVerifier, url } = await authParams()
  const callback = await browse(new CookieJar(), url)
  const tokens = await client.authorizationCodeGrant(basic, callback, {
    pkceCodeVerifier: codeVerifier, expectedState: params.state, expectedNonce: params.nonce,
  })
  assert.equal(tokens.claims().sub, 'zhangsan')
  const live = await client.tokenIntrospection(basic, tokens.access_token)
  assert.equal(live.active, true, JSON.stringify(live))
  assert.equal(live.sub, 'zhangsan')
  assert.equal(live.client_id, CLIENT_ID)
  const garbage = await client.tokenIntrospection(basic, 'not-a-token-' + client.randomState())
  assert.equal(garbage.active, false, JSON.stringify(garbage))
})

test('introspection with openid-client\'s default client_secret_post: active token, garbage inactive', async () => {
  const { tokens } = await signIn()
  const live = await client.tokenIntrospection(config, tokens.access_token)
  assert.equal(live.active, true, JSON.stringify(live))
  assert.equal(live.sub, 'zhangsan')
  assert.equal(live.client_id, CLIENT_ID)
  const garbage = await client.tokenIntrospection(config, 'not-a-token-' + client.randomState())
  assert.equal(garbage.active, false, JSON.stringify(garbage))
})

test('revocation: a revoked access token fails at userinfo and introspects inactive', async () => {
  const { tokens } = await signIn()
  await client.fetchUserInfo(config, tokens.access_token, 'zhangsan') // live before
  await client.tokenRevocation(config, tokens.access_token)
  await expectRejects(client.fetchUserInfo(config, tokens.access_token, 'zhangsan'), (err) => {
    // RFC 6750 §3.1 would be 401 with WWW-Authenticate: Bearer error="invalid_token"
    // (openid-client: WWWAuthenticateChallengeError); any 4xx refusal counts here, a network
    // error or a timeout does not.
    const status = err.status ?? (err.cause instanceof Response ? err.cause.status : undefined)
    assert.ok(status >= 400 && status < 500,
      `userinfo refused with a 4xx, got ${err?.name} ${err?.code ?? ''}: ${err?.message} (status ${status})`)
  }, 'userinfo with a revoked access token')
  // Introspected with client_secret_basic, the method the provider advertises for introspection.
  const dead = await client.tokenIntrospection(await basicConfig(), tokens.access_token)
  assert.equal(dead.active, false, JSON.stringify(dead))
})

test('with a live SSO session, prompt=none signs in again without WeCom', async () => {
  const { jar } = await signIn()
  const { params, codeVerifier, url } = await authParams({ prompt: 'none' })
  const callback = await browse(jar, url, { userid: '(none: prompt=none must not show WeCom)' })
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier, expectedState: params.state, expectedNonce: params.nonce,
  })
  assert.equal(tokens.claims().sub, 'zhangsan')
})

test('end session: buildEndSessionUrl with id_token_hint and state returns to the post-logout URI', async () => {
  const { jar, tokens } = await signIn()
  const state = client.randomState()
  const url = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: postLogoutRedirectUri,
    state,
  })
  const response = await get(jar, url)
  const location = response.headers.get('location')
  assert.ok(response.status >= 300 && response.status < 400 && location,
    `a redirect from GET ${url}, got ${response.status} ${location ?? ''} ${response.status < 300 || response.status >= 400 ? (await response.text()).slice(0, 300) : ''}`)
  const back = new URL(location, url)
  assert.equal(withoutQuery(back), postLogoutRedirectUri, `redirected to ${back}`)
  assert.equal(back.searchParams.get('state'), state)
})

test('after logout, prompt=none fails with login_required', async () => {
  const { jar, tokens } = await signIn()
  const logout = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: postLogoutRedirectUri,
    state: client.randomState(),
  })
  const response = await get(jar, logout)
  assert.equal(response.status, 302, `end_session answers a redirect (got ${response.status})`)
  const { params, codeVerifier, url } = await authParams({ prompt: 'none' })
  const callback = await browse(jar, url, { userid: '(none: prompt=none must not show WeCom)' })
  assert.equal(callback.searchParams.get('error'), 'login_required', `redirected to ${callback}`)
  assert.equal(callback.searchParams.get('state'), params.state)
  await expectRejects(client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier, expectedState: params.state, expectedNonce: params.nonce,
  }), (err) => {
    assert.ok(err instanceof client.AuthorizationResponseError, `AuthorizationResponseError, got ${err}`)
    assert.equal(err.error, 'login_required')
  }, 'prompt=none after logout')
})

test('after logout, replaying the old session cookie does not sign in (the session ended at the server)', async () => {
  const { jar, tokens } = await signIn()
  assert.ok(jar.names().includes('wecom_oidc_session'), `an SSO session cookie after sign-in (have ${jar.names()})`)
  const stolen = jar.clone() // the cookies as they were before logout
  const response = await get(jar, client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: postLogoutRedirectUri,
  }))
  assert.equal(response.status, 302, `end_session answers a redirect (got ${response.status})`)
  assert.ok(!jar.names().includes('wecom_oidc_session'), 'end_session expires the session cookie')
  const { params, url } = await authParams({ prompt: 'none' })
  const callback = await browse(stolen, url, { userid: '(none: prompt=none must not show WeCom)' })
  assert.equal(callback.searchParams.get('error'), 'login_required', `redirected to ${callback}`)
  assert.equal(callback.searchParams.get('state'), params.state)
})

for (const [userid, why] of [['zhaoliu', 'a disabled member'], ['outsider', 'not a member']]) {
  test(`a refused login (${userid}, ${why}) ends as access_denied at the application`, async () => {
    const { params, codeVerifier, url } = await authParams()
    const callback = await browse(new CookieJar(), url, { userid })
    assert.equal(callback.searchParams.get('error'), 'access_denied', `redirected to ${callback}`)
    assert.equal(callback.searchParams.get('state'), params.state, 'the application\'s state comes back')
    assert.equal(callback.searchParams.get('code'), null)
    await expectRejects(client.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: codeVerifier, expectedState: params.state, expectedNonce: params.nonce,
    }), (err) => {
      assert.ok(err instanceof client.AuthorizationResponseError, `AuthorizationResponseError, got ${err}`)
      assert.equal(err.error, 'access_denied')
    }, `signing in as ${userid}`)
  })
}

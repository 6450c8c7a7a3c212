// The e2e single-page app: a public client (PKCE, no secret) of wecom-oidc through oidc-client-ts.
// Everything it learns is written into the page, under stable element ids, for the tests to read.
/* global oidc */
'use strict'

const cfg = window.SPA_CONFIG
const PREVIOUS_REFRESH_TOKEN = 'e2e.previous_refresh_token'

oidc.Log.setLogger(console)
oidc.Log.setLevel(oidc.Log.WARN)

const userManager = new oidc.UserManager({
  authority: cfg.authority,
  client_id: cfg.client_id,
  redirect_uri: cfg.redirect_uri,
  post_logout_redirect_uri: cfg.post_logout_redirect_uri,
  response_type: 'code',
  scope: 'openid profile email groups offline_access',
  automaticSilentRenew: false, // the tests press "refresh" themselves
  monitorSession: false, // wecom-oidc has no check_session_iframe
  revokeTokensOnSignout: true, // /revoke, cross-origin, before going to end_session
  revokeTokenTypes: ['access_token', 'refresh_token'],
  userStore: new oidc.WebStorageStateStore({ store: window.sessionStorage }),
  // oidc-client-ts drops amr from user.profile by default; keep it (wecom_web or wecom_client).
  filterProtocolClaims: ['nbf', 'jti', 'auth_time', 'nonce', 'acr', 'azp', 'at_hash'],
})

const $ = (id) => document.getElementById(id)
const show = (id, text) => { $(id).textContent = text }

function showError (err) {
  // An OAuth error (ErrorResponse) has a code; anything else (a network or CORS failure) a message.
  const code = err?.error || err?.name || 'error'
  const desc = err?.error_description || (err?.error ? '' : err?.message || String(err))
  $('error').hidden = false
  $('error').textContent = desc ? `${code}: ${desc}` : code
  $('error').dataset.code = code
}

function clearError () {
  $('error').hidden = true
  $('error').textContent = ''
  delete $('error').dataset.code
}

// fingerprint: the first 8 hex digits of a token's SHA-256, to tell tokens apart on the page
// without showing them.
async function fingerprint (token) {
  if (!token) return '(none)'
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token))
  return [...new Uint8Array(digest).slice(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join('')
}

async function render (status) {
  const user = await userManager.getUser()
  const signedIn = !!user && !user.expired
  show('status', status ?? (signedIn ? '已登录 · Signed in' : '未登录 · Not signed in'))
  const p = signedIn ? user.profile : {}
  show('name', p.name ?? '')
  show('email', p.email ?? '')
  show('groups', Array.isArray(p.groups) ? p.groups.join(', ') : '')
  show('sub', p.sub ?? '')
  show('amr', Array.isArray(p.amr) ? p.amr.join(', ') : '')
  show('access-token', signedIn ? await fingerprint(user.access_token) : '')
  show('refresh-token', signedIn ? await fingerprint(user.refresh_token) : '')
  for (const id of ['userinfo', 'refresh', 'signout']) $(id).disabled = !signedIn
  $('old-refresh').disabled = !sessionStorage.getItem(PREVIOUS_REFRESH_TOKEN)
  document.body.dataset.signedIn = String(signedIn)
}

// busy runs one button's action: the page says "ready" again only when it is done.
async function busy (fn) {
  document.body.dataset.busy = 'true'
  try {
    await fn()
  } catch (err) {
    console.error(err)
    showError(err)
  } finally {
    document.body.dataset.busy = 'false'
  }
}

$('signin').onclick = () => busy(async () => {
  clearError()
  await userManager.signinRedirect()
})

// Silent sign-in: a top-level redirect with prompt=none. The provider's session cookie is
// SameSite=Lax, so a top-level navigation carries it on any site; a hidden iframe would not across
// sites. Without a session the callback carries error=login_required.
$('silent').onclick = () => busy(async () => {
  clearError()
  await userManager.signinRedirect({ prompt: 'none' })
})

// userinfo with the access token, from this origin: a cross-origin request to the provider (CORS,
// with a preflight for the Authorization header).
$('userinfo').onclick = () => busy(async () => {
  clearError()
  show('userinfo-result', '…')
  const user = await userManager.getUser()
  const endpoint = await userManager.metadataService.getUserInfoEndpoint()
  let response
  try {
    response = await fetch(endpoint, { headers: { Authorization: `Bearer ${user.access_token}`, Accept: 'application/json' } })
  } catch (err) {
    show('userinfo-result', `network error (CORS?): ${err.message}`)
    throw err
  }
  const body = await response.json().catch(() => ({}))
  show('userinfo-result', response.ok
    ? `HTTP ${response.status} · ${body.name} · ${body.email ?? '(no email)'} · sub ${body.sub}`
    : `HTTP ${response.status} · ${body.error ?? '(no error code)'}`)
})

// Refresh: signinSilent uses the refresh-token grant when the user has a refresh token (a
// cross-origin POST to /oauth/token). The token it replaces is kept for "raw refresh".
$('refresh').onclick = () => busy(async () => {
  clearError()
  show('refresh-result', '…')
  const before = await userManager.getUser()
  let after
  try {
    after = await userManager.signinSilent()
  } catch (err) {
    show('refresh-result', `refused · ${err?.error ?? err?.message ?? err}`)
    throw err
  }
  sessionStorage.setItem(PREVIOUS_REFRESH_TOKEN, before.refresh_token)
  const [oldFp, newFp] = [await fingerprint(before.refresh_token), await fingerprint(after.refresh_token)]
  show('refresh-result', after.refresh_token && after.refresh_token !== before.refresh_token
    ? `rotated · ${oldFp} → ${newFp}`
    : `not rotated · ${oldFp}`)
  await render()
})

// The refresh token the last refresh replaced, presented again by hand: the provider must refuse
// it (invalid_grant) — and, as reuse of a rotated token, revoke its whole family.
$('old-refresh').onclick = () => busy(async () => {
  clearError()
  show('old-refresh-result', '…')
  const endpoint = await userManager.metadataService.getTokenEndpoint()
  const response = await fetch(endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
    body: new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: sessionStorage.getItem(PREVIOUS_REFRESH_TOKEN) ?? '',
      client_id: cfg.client_id,
    }),
  })
  const body = await response.json().catch(() => ({}))
  show('old-refresh-result', `HTTP ${response.status} · ${body.error ?? (body.access_token ? 'tokens issued' : '(no error code)')}`)
})

$('signout').onclick = () => busy(async () => {
  clearError()
  sessionStorage.removeItem(PREVIOUS_REFRESH_TOKEN)
  // id_token_hint and post_logout_redirect_uri come from the stored user and the settings; the
  // state makes the provider send a state back, which signoutCallback checks.
  await userManager.signoutRedirect({ state: 'signed-out' })
})

async function start () {
  show('client-id', cfg.client_id)
  show('origin', location.origin)
  show('issuer', cfg.authority)
  const url = new URL(location.href)
  let status
  try {
    if (url.pathname === '/callback') {
      await userManager.signinRedirectCallback()
    } else if (url.searchParams.has('state')) {
      await userManager.signoutCallback() // back from end_session
      status = '已退出登录 · Signed out'
    }
  } catch (err) {
    console.error(err)
    showError(err)
  }
  if (url.search || url.pathname !== '/') history.replaceState(null, '', '/')
  await render(status)
  document.body.dataset.busy = 'false'
}

start().catch((err) => { console.error(err); showError(err) })

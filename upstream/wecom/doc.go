// Package wecom is the WeCom (企业微信) upstream connector: it sends the browser to WeCom, turns
// WeCom's callback into an upstream.Identity, and wraps the few WeCom server APIs that takes.
//
// # Two doors
//
// WeCom has two login pages and the connector picks one per browser (LoginURL):
//
//   - Inside the WeCom client (the User-Agent contains "wxwork"): the web-authorization page
//     {OAuthBaseURL}/connect/oauth2/authorize?…#wechat_redirect. Only this door can yield a
//     user_ticket (with scope snsapi_privateinfo and the member's consent), and only a user_ticket
//     unlocks the sensitive fields (mobile, email, biz_mail, gender, avatar, address) through
//     auth/getuserdetail.
//   - Anywhere else: the web-login page {LoginBaseURL}/wwlogin/sso/login (QR code or the desktop
//     client's quick login). It yields identity only: no user_ticket, so no sensitive fields, and
//     apps created after 2022-06-20 do not get them from user/get either. Claims must cope with an
//     absent email or phone.
//
// Either door comes back to RedirectURL with code (or auth_code) and state. HandleCallback
// exchanges the code exactly once (auth/getuserinfo), rejects non-members (openid without
// userid), fetches the sensitive fields when a user_ticket came back, reads the member with
// user/get (name, departments, position, status: anyone but an active member is denied) and
// resolves department names through a small cache.
//
// # Access token
//
// Every server API needs the corp access token of this app (corp_id + agent secret). It is cached
// in memory and in a TokenStore shared with every other request and process, keyed
// "corp_id/agent_id", and used until five minutes before it expires, so it is refreshed ahead of
// expiry. A stale memory copy is first reloaded from the store (another process may have refreshed
// it); only then is gettoken called. One refresh runs at a time: concurrent callers wait for it, so
// a burst of logins costs one gettoken.
//
// # Errcodes
//
// WeCom answers HTTP 200 with {"errcode":N,"errmsg":"…"}; success is errcode absent or 0 and
// errmsg is never interpreted. A non-zero errcode becomes an *APIError. The policy:
//
//   - 40014 and 42001 (token invalid or expired, including tokens WeCom dropped early): forget the
//     token if it is still the one that failed, refresh, and retry that call exactly once.
//   - 40001, 40013, 40056, 48002, 50001, 50003, 60020, 301002: configuration faults (wrong
//     secret, wrong corp id, trusted domain, trusted IP, …). Never retried; logged at ERROR with a
//     hint for the operator, and returned.
//   - 40029 (code used or expired), openid without userid, 50002/60011/60021/60111 (outside the
//     app's visible range or unknown), and a status other than 1 deny the login with an
//     *upstream.DeniedError.
//
// Transport failures, non-200 statuses and bodies that are not JSON are wrapped errors naming the
// endpoint. Every call has a timeout and a bounded response size. The secret, access tokens,
// codes and user tickets never appear in logs or error messages.
package wecom

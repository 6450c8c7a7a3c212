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
// user/get (name, departments, position, status: anyone but an active member is denied), resolves
// department names and paths through a cache and, with Config.Tags, the member's tags. Recheck
// (upstream.Rechecker) does the user/get part again without the person, e.g. when a refresh token
// is redeemed.
//
// # Departments and tags
//
// department/get is cached per id for Config.DepartmentTTL; concurrent misses share one call. A
// department's Path walks parentid through that cache up to, not including, the root (parentid
// 0): 平台组 under 研发中心 under the root is ["研发中心", "平台组"], and a second login makes no
// calls. A withheld or failed name on the way, a cycle, or more than 16 levels make Path nil.
// With Config.Tags, tag/list and each tag/get are cached the same way; a member has a tag when
// their userid, or one of their departments (not its parents), is listed. Department and tag
// failures degrade (WARN), never fail a login; 60011 (withheld) is an answer and is cached, other
// failures are not.
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
// errmsg is never interpreted. A non-zero errcode becomes an *APIError, which stays in the chain of
// whatever the connector returns. Every failure of HandleCallback and Recheck is either an
// *upstream.DeniedError with a Kind or wraps upstream.ErrUnavailable or upstream.ErrMisconfigured
// (errors.Is). The table (reference §6.4), row by row, and where it is implemented:
//
//	errcode                      behaviour                                                 code path
//	-1 system busy               retry ≤3 times after 100/200/400 ms, then ErrUnavailable  retrying (busyBackoff), APIError.class
//	40014, 42001 token rejected  forget the token, refresh, retry the call once;           call, tokenCache.reject/get
//	                             rejected again: ErrUnavailable                            APIError.class
//	40029 invalid code           DeniedCodeInvalid; never retried                          handleCallback
//	45009 frequency limit        no retry; the endpoint is not called for                  retrying → cooldown.trip/check
//	                             Config.RateLimitCooldown (60 s): calls fail at once
//	                             with ErrUnavailable; one WARN per window
//	45033 concurrency limit      retry ≤2 times after 100/200 ms, then ErrUnavailable      retrying (concurrencyBackoff)
//	50002 outside range          DeniedNotVisible                                          notVisible: member, handleCallback
//	60011 no privilege           user/get: DeniedNotVisible;                               notVisible: member
//	                             department/get: no name, Path nil (WARN, cached);         Department, identity, departmentPath
//	                             tag/get: the tag is left out (WARN, cached)               tag, memberTags
//	60111, 60021 not in range    DeniedNotVisible                                          notVisible: member
//	40001 40013 40056 48002      ErrMisconfigured, never retried, logged at ERROR with     configHint, doOnce, APIError.class
//	50001 50003 60020 301002     an operator hint
//	85004 85005 80001
//	40082 42009 suite token      ErrMisconfigured like the above (a self-built app         configHint
//	                             has no suite token: wrong secret or app type)
//	other errcodes               ErrUnavailable at HandleCallback/Recheck (no policy)      classify
//
// Transport failures, timeouts, non-200 statuses and bodies that are not WeCom JSON are
// ErrUnavailable errors naming the endpoint. Every call has a timeout (Config.Timeout) and a
// bounded response size. The -1 and 45033 retries and the 45009 cool-down apply to gettoken too.
// The getuserdetail lookup (sensitive fields) degrades on any failure. Config.Observer hears of
// every call, retries included (errcode NoAnswer when there was no usable answer), and of every
// gettoken attempt. The secret, access tokens, codes and user tickets never appear in logs or
// error messages.
package wecom

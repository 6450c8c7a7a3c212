package provider

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream"
)

// Cookies. Both are HttpOnly and SameSite=Lax: WeCom's callback is a top-level cross-site GET,
// which Lax cookies accompany, while cross-site subrequests and POSTs carry neither.
const (
	// browserCookie holds a random per-browser value; auth requests and WeCom states are bound to
	// its hash, so a login step replayed from another browser fails.
	browserCookie = "wecom_oidc_browser"
	// sessionCookie holds the SSO session's secret; the store knows only its hash.
	sessionCookie = "wecom_oidc_session"
	// browserCookieTTL outlives any single login.
	browserCookieTTL = 30 * 24 * time.Hour
)

// wecomStateLen: WeCom accepts [A-Za-z0-9]{0,128} as state; 32 characters carry 190 bits.
const wecomStateLen = 32

// login is the login page of an auth request: where the OP library sends the browser after
// /authorize (LoginURL), and where the chooser and the retry link lead. It checks the request
// belongs to this browser (bound at /authorize), then startLogin.
func (p *Provider) login(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.URL.Query().Get("authRequestID")
	ar, err := p.store.GetAuthRequest(ctx, id)
	if err != nil {
		p.failPage(w, r, http.StatusBadRequest, msgRequestExpired, "login: unknown or expired auth request", err)
		return
	}
	lang := pickLang(ar.UILocales, r.Header.Get("Accept-Language"))
	switch {
	case ar.BrowserHash == "":
		// Requests are bound at /authorize; one stored by an older version is bound here.
		browser := p.browserID(w, r)
		ar, err = p.store.UpdateAuthRequest(ctx, ar.ID, func(a *storage.AuthRequest) error {
			switch a.BrowserHash {
			case "":
				a.BrowserHash = storage.HashSecret(browser)
			case storage.HashSecret(browser):
			default:
				return storage.ErrConflict
			}
			return nil
		})
		if err != nil {
			p.failPageLang(w, r, lang, http.StatusBadRequest, msgOtherBrowser, "login: auth request bound to another browser", err)
			return
		}
	case !p.sameBrowser(r, ar.BrowserHash):
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgOtherBrowser, "login: auth request bound to another browser", nil)
		return
	}
	p.startLogin(w, r, ar, lang)
}

// startLogin goes on with ar, bound to this browser: it completes it at once from a valid SSO
// session, and otherwise sends the person to WeCom with a fresh single-use state (or to the
// chooser first).
func (p *Provider) startLogin(w http.ResponseWriter, r *http.Request, ar storage.AuthRequest, lang string) {
	ctx := r.Context()
	if ar.Done {
		http.Redirect(w, r, op.AuthCallbackURL(p.op)(ctx, ar.ID), http.StatusFound)
		return
	}

	if sess, ok := p.usableSession(ctx, r, ar); ok {
		done, code, err := p.complete(ctx, ar, storage.Completion{Subject: sess.Subject, AuthTime: sess.AuthTime, AMR: sess.AMR, SessionID: sess.ID})
		if err != nil {
			p.metrics.login(loginError, "")
			p.failPageLang(w, r, lang, http.StatusInternalServerError, msgInternal, "login: complete from session", err)
			return
		}
		p.metrics.login(loginSession, "")
		p.sendCode(w, r, done, code)
		return
	}
	if slices.Contains(ar.Prompt, oidc.PromptNone) {
		p.rejectToApp(w, r, ar, oidc.ErrLoginRequired().WithDescription("no valid session"))
		return
	}

	up, ok := p.chooseUpstream(r, ar)
	if !ok {
		p.renderChooser(w, lang, ar)
		return
	}
	if _, ok := p.scanUpstream(r, up); ok {
		p.renderScan(w, r, ar, up, lang)
		return
	}
	p.toUpstream(w, r, lang, "login", up.Connector.LoginURL, storage.LoginState{
		AuthRequestID: ar.ID,
		Upstream:      up.ID,
		BrowserHash:   ar.BrowserHash,
		ExpiresAt:     p.now().Add(loginStateTTL),
	})
}

// toUpstream sends the browser to the upstream's login page made by loginURL, with a fresh
// single-use state that continues ls (stored first). On failure it has shown an error page
// (logged under what) and reports false.
func (p *Provider) toUpstream(w http.ResponseWriter, r *http.Request, lang, what string,
	loginURL func(string, upstream.LoginHints) (string, error), ls storage.LoginState) bool {
	ls.State = randomAlnum(wecomStateLen)
	if err := p.store.CreateLoginState(r.Context(), ls); err != nil {
		p.failPageLang(w, r, lang, http.StatusInternalServerError, msgInternal, what+": store WeCom state", err)
		return false
	}
	target, err := loginURL(ls.State, upstream.LoginHints{UserAgent: r.UserAgent(), Lang: lang})
	if err != nil {
		p.failPageLang(w, r, lang, http.StatusInternalServerError, msgInternal, what+": upstream login URL", err)
		return false
	}
	status := http.StatusFound
	if r.Method == http.MethodPost {
		status = http.StatusSeeOther // the page's GET, not the form's POST again
	}
	http.Redirect(w, r, target, status)
	return true
}

// currentSession returns this browser's SSO session and its person, if both are still good.
func (p *Provider) currentSession(ctx context.Context, r *http.Request) (storage.Session, storage.User, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return storage.Session{}, storage.User{}, false
	}
	sess, err := p.store.GetSession(ctx, storage.HashSecret(c.Value))
	if err != nil {
		return storage.Session{}, storage.User{}, false
	}
	u, err := p.store.GetUser(ctx, sess.Subject)
	if err != nil || u.Disabled || sess.AuthTime.Before(u.DisabledAt) {
		return storage.Session{}, storage.User{}, false
	}
	return sess, u, true
}

// usableSession returns the browser's SSO session if it may complete ar without a WeCom round
// trip: not when prompt=login, not when older than max_age, not for someone other than the
// id_token_hint names, not for a disabled user.
func (p *Provider) usableSession(ctx context.Context, r *http.Request, ar storage.AuthRequest) (storage.Session, bool) {
	if slices.Contains(ar.Prompt, oidc.PromptLogin) {
		return storage.Session{}, false
	}
	sess, _, ok := p.currentSession(ctx, r)
	if !ok {
		return storage.Session{}, false
	}
	if ar.MaxAge != nil && p.now().Sub(sess.AuthTime) > time.Duration(*ar.MaxAge)*time.Second {
		return storage.Session{}, false
	}
	if ar.HintSubject != "" && ar.HintSubject != sess.Subject {
		return storage.Session{}, false
	}
	return sess, true
}

// wecomCallback is where WeCom sends the browser back. The state is consumed first (single use),
// then checked against this browser; only then is WeCom's code exchanged.
func (p *Provider) wecomCallback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	state := r.URL.Query().Get("state")
	if !validWeComState(state) {
		p.failPage(w, r, http.StatusBadRequest, msgBadCallback, "callback: missing or malformed state", nil)
		return
	}
	ls, err := p.store.ConsumeLoginState(ctx, state)
	if err != nil {
		p.failPage(w, r, http.StatusBadRequest, msgStateUsed, "callback: unknown, expired or reused state", err)
		return
	}
	if !p.sameBrowser(r, ls.BrowserHash) {
		p.failPage(w, r, http.StatusBadRequest, msgOtherBrowser, "callback: state belongs to another browser", nil)
		return
	}
	if ls.DeviceUserCode != "" || ls.ScanHandleHash != "" {
		up, ok := p.upstreamByID(ls.Upstream)
		switch {
		case !ok:
			p.failPage(w, r, http.StatusBadRequest, msgRequestExpired, "callback: upstream no longer configured", nil)
		case ls.DeviceUserCode != "":
			p.deviceCallback(w, r, ls, up)
		default:
			p.phoneCallback(w, r, ls, up)
		}
		return
	}
	ar, err := p.store.GetAuthRequest(ctx, ls.AuthRequestID)
	if err != nil {
		p.failPage(w, r, http.StatusBadRequest, msgRequestExpired, "callback: auth request gone", err)
		return
	}
	lang := pickLang(ar.UILocales, r.Header.Get("Accept-Language"))
	up, ok := p.upstreamByID(ls.Upstream)
	if !ok {
		p.failPageLang(w, r, lang, http.StatusBadRequest, msgRequestExpired, "callback: upstream no longer configured", nil)
		return
	}

	id, err := up.Connector.HandleCallback(ctx, r)
	if err != nil {
		p.upstreamFailed(w, r, lang, ar, up, err)
		return
	}

	now := p.now()
	user, err := p.signInUser(ctx, up, id, now)
	if err != nil {
		if errors.Is(err, errUserDisabled) {
			p.metrics.login(loginDenied, up.ID)
			p.rejectToApp(w, r, ar, oidc.ErrAccessDenied().WithDescription("this account is disabled"))
			return
		}
		p.metrics.login(loginError, up.ID)
		p.log.ErrorContext(ctx, "login failed: user record", "client_id", ar.ClientID, "error", err)
		p.rejectToApp(w, r, ar, oidc.ErrServerError().WithDescription("could not record the sign-in"))
		return
	}
	sess, secret := p.newSession(ctx, r, user.Subject, now, []string{id.Method})
	sess.Clients = []string{ar.ClientID}
	done, code, err := p.complete(ctx, ar, storage.Completion{
		Subject: user.Subject, AuthTime: now, AMR: sess.AMR, NewSession: &sess,
	})
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrConflict):
		p.failPage(w, r, http.StatusBadRequest, msgRequestExpired, "callback: auth request expired or already done", err)
		return
	case err != nil:
		p.failPage(w, r, http.StatusInternalServerError, msgInternal, "callback: complete auth request", err)
		return
	}
	http.SetCookie(w, p.cookie(sessionCookie, secret, p.cfg.SessionTTL))
	p.metrics.login(loginSuccess, up.ID)
	p.log.InfoContext(ctx, "login", "client_id", ar.ClientID, "sub", user.Subject, "method", id.Method)
	p.sendCode(w, r, done, code)
}

var errUserDisabled = errors.New("provider: user disabled by an operator")

// signInUser records the person's fresh profile in one atomic update, keeping what an operator
// set: a `users disable` racing the login either lands first (the login is refused) or after
// (the flag stays).
func (p *Provider) signInUser(ctx context.Context, up Upstream, id upstream.Identity, now time.Time) (storage.User, error) {
	sub := p.claims.subject(up.SubjectTemplate, id)
	return p.store.UpdateUser(ctx, sub, func(u *storage.User, _ bool) error {
		if u.Disabled {
			return errUserDisabled
		}
		fresh, err := p.claims.user(up, id, *u, now)
		if err != nil {
			return err
		}
		fresh.LastLogin = now
		*u = fresh
		return nil
	})
}

// upstreamFailed tells the person and the operator why the upstream did not sign them in. Plain
// refusals go back to the application as access_denied; the others get a page that explains,
// with a way back to the application (and, for outages, a way to try again).
func (p *Provider) upstreamFailed(w http.ResponseWriter, r *http.Request, lang string, ar storage.AuthRequest, up Upstream, err error) {
	ctx := r.Context()
	var denied *upstream.DeniedError
	switch {
	case errors.As(err, &denied) && denied.Kind == upstream.DeniedNotVisible:
		p.metrics.login(loginDenied, up.ID)
		p.log.InfoContext(ctx, "login denied: outside the app's visible range", "client_id", ar.ClientID, "upstream", up.ID, "reason", denied.Reason)
		p.renderPage(w, lang, http.StatusForbidden, msgNotVisible, returnLink(ar, "access_denied"))
	case errors.As(err, &denied):
		p.metrics.login(loginDenied, up.ID)
		p.log.InfoContext(ctx, "login denied", "client_id", ar.ClientID, "upstream", up.ID, "kind", denied.Kind, "reason", denied.Reason)
		p.rejectToApp(w, r, ar, oidc.ErrAccessDenied().WithDescription("%s", denied.Reason))
	case errors.Is(err, upstream.ErrMisconfigured):
		p.metrics.login(loginMisconfigured, up.ID)
		p.log.ErrorContext(ctx, "login failed: upstream misconfigured", "client_id", ar.ClientID, "upstream", up.ID, "error", err)
		p.renderPage(w, lang, http.StatusBadGateway, msgMisconfigured, returnLink(ar, "server_error"))
	default:
		p.metrics.login(loginUnavailable, up.ID)
		p.log.ErrorContext(ctx, "login failed: upstream unavailable", "client_id", ar.ClientID, "upstream", up.ID, "error", err)
		p.renderPage(w, lang, http.StatusServiceUnavailable, msgUnavailable,
			link{ID: "retry", Href: "/login?authRequestID=" + url.QueryEscape(ar.ID), Text: msgRetry},
			returnLink(ar, "temporarily_unavailable"))
	}
}

// Errors a person may take back to the application from our pages, with what it is told.
var returnErrors = map[string]*oidc.Error{
	"access_denied":           oidc.ErrAccessDenied().WithDescription("the person may not use this application"),
	"temporarily_unavailable": {ErrorType: "temporarily_unavailable", Description: "WeCom is unavailable; try again later"},
	"server_error":            oidc.ErrServerError().WithDescription("the sign-in service is misconfigured"),
}

func returnLink(ar storage.AuthRequest, code string) link {
	return link{ID: "return", Href: "/login/return?authRequestID=" + url.QueryEscape(ar.ID) + "&error=" + code, Text: msgReturn}
}

// loginReturn ends a login from one of our pages: the application receives the error the page
// offered (only those), if this browser started the login.
func (p *Provider) loginReturn(w http.ResponseWriter, r *http.Request) {
	ar, err := p.store.GetAuthRequest(r.Context(), r.URL.Query().Get("authRequestID"))
	if err != nil || ar.Done {
		p.failPage(w, r, http.StatusBadRequest, msgRequestExpired, "login return: unknown or finished auth request", err)
		return
	}
	if !p.sameBrowser(r, ar.BrowserHash) {
		p.failPage(w, r, http.StatusBadRequest, msgOtherBrowser, "login return: another browser", nil)
		return
	}
	e, ok := returnErrors[r.URL.Query().Get("error")]
	if !ok {
		p.failPage(w, r, http.StatusBadRequest, msgBadCallback, "login return: unknown error code", nil)
		return
	}
	copied := *e
	p.rejectToApp(w, r, ar, &copied)
}

// chooseUpstream picks the upstream for this login: the only one; the one chosen on the chooser
// page; or the one a hint names — an upstream id or corp id, alone or after '@' ("zhangsan@corp-a").
func (p *Provider) chooseUpstream(r *http.Request, ar storage.AuthRequest) (Upstream, bool) {
	if len(p.cfg.Upstreams) == 1 {
		return p.cfg.Upstreams[0], true
	}
	if id := r.URL.Query().Get("upstream"); id != "" {
		if up, ok := p.upstreamByID(id); ok {
			return up, true
		}
	}
	if ar.UpstreamHint == "" {
		return Upstream{}, false
	}
	hint := ar.UpstreamHint
	if _, after, ok := strings.Cut(hint, "@"); ok {
		hint = after
	}
	for _, up := range p.cfg.Upstreams {
		if hint == up.ID || (up.CorpID != "" && hint == up.CorpID) {
			return up, true
		}
	}
	return Upstream{}, false
}

// renderChooser shows the upstreams to choose from.
func (p *Provider) renderChooser(w http.ResponseWriter, lang string, ar storage.AuthRequest) {
	links := make([]link, 0, len(p.cfg.Upstreams))
	for _, up := range p.cfg.Upstreams {
		links = append(links, link{
			ID:   "upstream-" + up.ID,
			Href: "/login?authRequestID=" + url.QueryEscape(ar.ID) + "&upstream=" + url.QueryEscape(up.ID),
			Text: upstreamLabel(up, lang),
		})
	}
	p.renderPage(w, lang, http.StatusOK, msgChooser, links...)
}

// upstreamLabel is an upstream's name on the chooser, in lang.
func upstreamLabel(up Upstream, lang string) message {
	name := up.Name
	if lang == "en" && up.NameEN != "" {
		name = up.NameEN
	}
	if name == "" {
		name = up.ID
	}
	return message{Title: map[string]string{"zh": name, "en": name}}
}

// newSession returns a new SSO session (not stored yet) and the secret its cookie carries, and
// ends the browser's previous session.
func (p *Provider) newSession(ctx context.Context, r *http.Request, subject string, now time.Time, amr []string) (storage.Session, string) {
	if old, err := r.Cookie(sessionCookie); err == nil && old.Value != "" {
		if err := p.store.DeleteSession(ctx, storage.HashSecret(old.Value)); err != nil {
			p.log.WarnContext(ctx, "could not end the previous session", "error", err)
		}
	}
	secret := newSecret()
	return storage.Session{
		ID:        storage.HashSecret(secret),
		Subject:   subject,
		AuthTime:  now,
		AMR:       amr,
		CreatedAt: now,
		ExpiresAt: now.Add(p.cfg.SessionTTL),
	}, secret
}

// complete marks ar authenticated and saves the code the application will get, in one write
// (with c's session). The request's life is extended so the code has time to be redeemed even
// when the person took long at WeCom.
func (p *Provider) complete(ctx context.Context, ar storage.AuthRequest, c storage.Completion) (storage.AuthRequest, string, error) {
	code, err := op.BuildAuthRequestCode(&authRequest{ar}, p.op.Crypto())
	if err != nil {
		return storage.AuthRequest{}, "", err
	}
	now := p.now()
	c.ExpiresAt = now.Add(codeTTL + time.Minute)
	c.CodeHash, c.CodeExpiresAt = storage.HashSecret(code), now.Add(codeTTL)
	done, err := p.store.CompleteAuthRequest(ctx, ar.ID, c)
	if err != nil {
		return storage.AuthRequest{}, "", err
	}
	return done, code, nil
}

// sendCode answers the application's authorization request with code as the OP library's
// /authorize/callback would (query, fragment or form_post), without the browser's detour
// through it.
func (p *Provider) sendCode(w http.ResponseWriter, r *http.Request, ar storage.AuthRequest, code string) {
	resp := &op.CodeResponseType{Code: code, State: ar.State}
	var err error
	if oidc.ResponseMode(ar.ResponseMode) == oidc.ResponseModeFormPost {
		setPageHeaders(w.Header(), formPostScriptHash)
		err = op.AuthResponseFormPost(w, ar.RedirectURI, resp, p.op.Encoder())
	} else {
		var target string
		if target, err = op.AuthResponseURL(ar.RedirectURI, oidc.ResponseType(ar.ResponseType), oidc.ResponseMode(ar.ResponseMode), resp, p.op.Encoder()); err == nil {
			http.Redirect(w, r, target, http.StatusFound)
		}
	}
	if err != nil {
		op.AuthRequestError(w, r, &authRequest{ar}, err, p.op)
	}
}

// rejectToApp ends the login with an OAuth error at the application's (validated) redirect URI,
// carrying its state, and forgets the auth request.
func (p *Provider) rejectToApp(w http.ResponseWriter, r *http.Request, ar storage.AuthRequest, e *oidc.Error) {
	op.AuthRequestError(w, r, &authRequest{ar}, e, p.op)
	if err := p.store.DeleteAuthRequest(r.Context(), ar.ID); err != nil {
		p.log.WarnContext(r.Context(), "could not delete a rejected auth request", "error", err)
	}
}

// browserID returns the browser's binding value, setting the cookie when the browser has none.
func (p *Provider) browserID(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(browserCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	v := newSecret()
	http.SetCookie(w, p.cookie(browserCookie, v, browserCookieTTL))
	return v
}

func (p *Provider) sameBrowser(r *http.Request, hash string) bool {
	c, err := r.Cookie(browserCookie)
	return err == nil && hash != "" && storage.HashSecret(c.Value) == hash
}

func (p *Provider) cookie(name, value string, ttl time.Duration) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   int(ttl / time.Second),
		HttpOnly: true,
		Secure:   p.secure,
		SameSite: http.SameSiteLaxMode,
	}
}

// failPage shows the person an error page when there is no validated application to return to.
// The log line carries the cause; the page carries only our own text.
func (p *Provider) failPage(w http.ResponseWriter, r *http.Request, status int, msg message, logMsg string, err error) {
	p.failPageLang(w, r, pickLang(nil, r.Header.Get("Accept-Language")), status, msg, logMsg, err)
}

func (p *Provider) failPageLang(w http.ResponseWriter, r *http.Request, lang string, status int, msg message, logMsg string, err error) {
	level := slog.LevelWarn
	if status >= 500 {
		level = slog.LevelError
	}
	attrs := []any{"status", status}
	if err != nil {
		attrs = append(attrs, "error", err)
	}
	p.log.Log(r.Context(), level, logMsg, attrs...)
	p.renderPage(w, lang, status, msg)
}

func (p *Provider) renderMessage(w http.ResponseWriter, r *http.Request, status int, msg message) {
	p.renderPage(w, pickLang(nil, r.Header.Get("Accept-Language")), status, msg)
}

// validWeComState reports whether s could be a state we minted.
func validWeComState(s string) bool { return validAlnum(s, wecomStateLen) }

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomAlnum returns n characters drawn uniformly from [A-Za-z0-9] (rejection sampling).
func randomAlnum(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n*2)
	for len(out) < n {
		rand.Read(buf) // never fails: crypto/rand crashes the program instead
		for _, b := range buf {
			if b < 248 { // 248 = 4 × 62: keeps the distribution uniform
				out = append(out, alnum[b%62])
				if len(out) == n {
					break
				}
			}
		}
	}
	return string(out)
}

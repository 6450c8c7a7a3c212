package provider

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// Context keys set by intercept for the storage adapter, which sees only a context.
type (
	sessionCtxKey    struct{} // HashSecret of the browser's SSO session cookie (end_session)
	requestURICtxKey struct{} // the authorization request carried request_uri
	idpHintCtxKey    struct{} // the authorization request's idp_hint (the library drops it)
	browserCtxKey    struct{} // HashSecret of the browser's binding cookie (/authorize)
)

// upstreamHint is what names an upstream in an authorization request: idp_hint, else the login
// hint (matched against upstream ids and corp ids at the login page).
func upstreamHint(ctx context.Context, loginHint string) string {
	if h, _ := ctx.Value(idpHintCtxKey{}).(string); h != "" {
		return h
	}
	return loginHint
}

// browserHash is the binding of the browser that sent the authorization request ("" outside one).
func browserHash(ctx context.Context) string {
	h, _ := ctx.Value(browserCtxKey{}).(string)
	return h
}

// intercept runs inside the OP library's router (after its CORS and issuer middleware) and adds
// what the library leaves out:
//   - discovery that advertises only what works (see discovery);
//   - request_uri refused as unsupported instead of silently ignored;
//   - /authorize/callback bound to the browser that logged in: the library would hand the code
//     to anyone holding the auth request id;
//   - end_session told which browser session to end, and the session cookie expired once the
//     logout has succeeded.
func (p *Provider) intercept(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The paths are read per request: interceptors are built inside op.NewProvider, before
		// p.op is set.
		authorizePath := p.op.AuthorizationEndpoint().Relative()
		if p.authenticatesClients(r.URL.Path) {
			p.limitAuthFailures(w, r, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p.clientEndpoint(w, r, next)
			}))
			return
		}
		switch path := r.URL.Path; {
		case strings.HasSuffix(path, oidc.DiscoveryEndpoint):
			op.Discover(w, p.discovery(r.Context()))
			return
		case strings.HasSuffix(path, strings.TrimSuffix(authorizePath, "/")+"/callback"):
			// The library may answer with its form_post page, whose only script is its onload.
			setPageHeaders(w.Header(), formPostScriptHash)
			ar, err := p.store.GetAuthRequest(r.Context(), r.URL.Query().Get("id"))
			if err != nil {
				p.failPage(w, r, http.StatusBadRequest, msgRequestExpired, "authorize callback: unknown auth request", err)
				return
			}
			if !p.sameBrowser(r, ar.BrowserHash) {
				p.failPage(w, r, http.StatusBadRequest, msgOtherBrowser, "authorize callback: another browser", nil)
				return
			}
		case strings.HasSuffix(path, authorizePath):
			setPageHeaders(w.Header(), "")
			if msg := p.checkAuthorizeRequest(r); msg != "" {
				p.log.WarnContext(r.Context(), "authorize: refused before the library", "reason", msg)
				p.renderPage(w, pickLang(nil, r.Header.Get("Accept-Language")), http.StatusBadRequest, msgBadRequest)
				return
			}
			if v, _ := formValueFold(r.Form, "request_uri"); v != "" {
				r = r.WithContext(context.WithValue(r.Context(), requestURICtxKey{}, true))
			}
			if h, _ := formValueFold(r.Form, "idp_hint"); h != "" {
				r = r.WithContext(context.WithValue(r.Context(), idpHintCtxKey{}, h))
			}
			// The auth request is bound to this browser when it is created, so that no later
			// step has to write the binding.
			r = r.WithContext(context.WithValue(r.Context(), browserCtxKey{}, storage.HashSecret(p.browserID(w, r))))
		case strings.HasSuffix(path, p.op.UserinfoEndpoint().Relative()):
			w.Header().Set("Cache-Control", "no-store")
			w = &errorRewriter{ResponseWriter: w, rewrite: userinfoError(r)}
		case strings.HasSuffix(path, p.op.EndSessionEndpoint().Relative()):
			if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
				r = r.WithContext(context.WithValue(r.Context(), sessionCtxKey{}, storage.HashSecret(c.Value)))
				w = &expireOnRedirect{ResponseWriter: w, cookie: p.cookie(sessionCookie, "", -time.Second)}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// formPostScriptHash allows the one inline handler of the OP library's form_post page
// (`javascript:document.forms[0].submit()` in body onload).
const formPostScriptHash = "'sha256-FRuPMoCm2v334i+3oP3jLBT4RnmwV1pycDQaxVXK4MY='"

// setPageHeaders sets the headers of an HTML page we or the library render; scriptHash, when set,
// is the only script the page may run.
func setPageHeaders(h http.Header, scriptHash string) {
	csp := "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
	if scriptHash != "" {
		csp += "; script-src 'unsafe-hashes' " + scriptHash
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// Limits on what an unauthenticated /authorize request may make the provider store (it lives ten
// minutes in the database).
const (
	maxAuthorizeParam = 2048 // state, nonce, login_hint, code_challenge, …
	maxAuthorizeTotal = 16 << 10
)

// checkAuthorizeRequest refuses, before the library sees it, what the library would accept but
// must not be: parameters too large to store, and a redirect_uri that is not registered byte for
// byte — the library percent-decodes redirect_uri once more before comparing and matches native
// loopback URIs on path and query only, while RFC 9700 §2.1 wants exact matching with only the
// port of a loopback URI free. An unknown client or missing redirect_uri is left to the library.
func (p *Provider) checkAuthorizeRequest(r *http.Request) string {
	if err := r.ParseForm(); err != nil {
		return "the request does not parse"
	}
	total := 0
	for k, vs := range r.Form {
		for _, v := range vs {
			if len(v) > maxAuthorizeParam {
				return "parameter " + k + " is too long"
			}
			total += len(k) + len(v)
		}
	}
	if total > maxAuthorizeTotal {
		return "the request is too large"
	}
	// The library's decoder matches parameter names without regard to case, so read them the
	// same way; two different values under spellings of one name are refused.
	redirect, ok := formValueFold(r.Form, "redirect_uri")
	if !ok {
		return "redirect_uri is given more than once"
	}
	clientID, ok := formValueFold(r.Form, "client_id")
	if !ok {
		return "client_id is given more than once"
	}
	if redirect == "" {
		return ""
	}
	c, err := p.store.GetClient(r.Context(), clientID)
	if err != nil {
		return ""
	}
	if !redirectRegistered(c, redirect) {
		return "redirect_uri is not registered for this client"
	}
	return ""
}

// formValueFold returns the value of the parameter name in any letter case; ok is false when
// spellings of it carry different values.
func formValueFold(form url.Values, name string) (value string, ok bool) {
	for k, vs := range form {
		if !strings.EqualFold(k, name) {
			continue
		}
		for _, v := range vs {
			if value != "" && v != value {
				return "", false
			}
			value = v
		}
	}
	return value, true
}

// redirectRegistered: the URI is registered byte for byte, or — for a public client — it equals
// a registered http loopback URI but for the port (RFC 8252 §7.3).
func redirectRegistered(c storage.Client, raw string) bool {
	for _, reg := range c.RedirectURIs {
		if raw == reg {
			return true
		}
	}
	if !c.Public {
		return false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" || strings.Contains(raw, "#") {
		return false
	}
	for _, reg := range c.RedirectURIs {
		ru, err := url.Parse(reg)
		if err != nil || ru.Scheme != "http" || !isLoopback(ru.Hostname()) || ru.Hostname() != u.Hostname() {
			continue
		}
		ru.Host = u.Host // the port, and only the port, may differ
		if ru.String() == raw {
			return true
		}
	}
	return false
}

// authenticatesClients reports whether path is an endpoint where clients authenticate.
func (p *Provider) authenticatesClients(path string) bool {
	return strings.HasSuffix(path, p.op.TokenEndpoint().Relative()) ||
		strings.HasSuffix(path, p.op.DeviceAuthorizationEndpoint().Relative()) ||
		strings.HasSuffix(path, p.op.RevocationEndpoint().Relative()) ||
		strings.HasSuffix(path, p.op.IntrospectionEndpoint().Relative())
}

// clientEndpoint prepares a token, revocation or introspection request for the library: client
// assertions checked first (a bad one is invalid_client before any code is spent), token
// responses marked no-store, and introspection given client_secret_post and OAuth JSON errors.
func (p *Provider) clientEndpoint(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if desc := p.checkClientAssertion(r); desc != "" {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", desc, "")
		return
	}
	if strings.HasSuffix(r.URL.Path, p.op.TokenEndpoint().Relative()) && r.ParseForm() == nil {
		// The library always enables the JWT-bearer grant; only what discovery lists is offered.
		// Read as the library does: any letter case, query included.
		g, ok := formValueFold(r.Form, "grant_type")
		if !ok {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "grant_type is given more than once", "")
			return
		}
		switch g {
		case string(oidc.GrantTypeCode), string(oidc.GrantTypeRefreshToken), "":
		case deviceGrantType:
			noStore(w)
			p.deviceToken(w, r)
			return
		default:
			writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "this provider offers authorization_code, refresh_token and device_code", "")
			return
		}
	}
	if strings.HasSuffix(r.URL.Path, p.op.DeviceAuthorizationEndpoint().Relative()) {
		noStore(w)
		p.deviceAuthorization(w, r)
		return
	}
	if !strings.HasSuffix(r.URL.Path, p.op.IntrospectionEndpoint().Relative()) {
		noStore(w)
		next.ServeHTTP(w, r)
		return
	}
	if err := postCredentialsToBasic(r); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "the request body does not parse", "")
		return
	}
	next.ServeHTTP(&errorRewriter{ResponseWriter: w, rewrite: func(status int) (int, string, string, string, bool) {
		if status != http.StatusUnauthorized {
			return 0, "", "", "", false
		}
		return http.StatusUnauthorized, "invalid_client", "client authentication failed", `Basic realm="wecom-oidc"`, true
	}}, r)
}

// noStore marks a response that carries tokens or codes: it must not be cached (RFC 6749 §5.1).
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
}

// expireOnRedirect adds an expiring Set-Cookie to a redirect response: end_session redirects only
// when the logout succeeded, and a refused logout (a forged id_token_hint) must keep the session.
type expireOnRedirect struct {
	http.ResponseWriter
	cookie *http.Cookie
}

func (e *expireOnRedirect) WriteHeader(status int) {
	if status == http.StatusFound || status == http.StatusSeeOther {
		http.SetCookie(e.ResponseWriter, e.cookie)
	}
	e.ResponseWriter.WriteHeader(status)
}

// postCredentialsToBasic moves client_secret_post credentials into an Authorization header:
// the library's introspection endpoint accepts only Basic (and private_key_jwt), while clients
// use one authentication method for every endpoint (openid-client defaults to post).
func postCredentialsToBasic(r *http.Request) error {
	if r.Method != http.MethodPost || r.Header.Get("Authorization") != "" {
		return nil
	}
	if err := r.ParseForm(); err != nil {
		return err
	}
	id, ok1 := formValueFold(r.Form, "client_id")
	secret, ok2 := formValueFold(r.Form, "client_secret")
	if !ok1 || !ok2 {
		return errors.New("client credentials given more than once")
	}
	if id == "" || secret == "" {
		return nil
	}
	for _, v := range []url.Values{r.PostForm, r.Form} {
		for k := range v {
			if strings.EqualFold(k, "client_id") || strings.EqualFold(k, "client_secret") {
				v.Del(k)
			}
		}
	}
	// RFC 6749 §2.3.1: the Basic credentials are form-encoded first; the library decodes them.
	r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return nil
}

// userinfoError turns the library's userinfo failures into RFC 6750 §3.1 answers: 401 with a
// WWW-Authenticate challenge, invalid_token when a token was presented.
func userinfoError(r *http.Request) func(int) (int, string, string, string, bool) {
	return func(status int) (int, string, string, string, bool) {
		if status != http.StatusUnauthorized && status != http.StatusForbidden {
			return 0, "", "", "", false
		}
		if r.Header.Get("Authorization") == "" && r.FormValue("access_token") == "" {
			return http.StatusUnauthorized, "invalid_request", "no access token", `Bearer realm="wecom-oidc"`, true
		}
		return http.StatusUnauthorized, "invalid_token", "the access token is invalid, expired or revoked",
			`Bearer realm="wecom-oidc", error="invalid_token"`, true
	}
}

// errorRewriter replaces an error response of the library (plain text, or a bare JSON object)
// with an OAuth error document. rewrite decides from the status: the new status, error code,
// description, WWW-Authenticate value, and whether to rewrite at all.
type errorRewriter struct {
	http.ResponseWriter
	rewrite   func(status int) (int, string, string, string, bool)
	swallowed bool
}

func (e *errorRewriter) WriteHeader(status int) {
	newStatus, code, desc, challenge, ok := e.rewrite(status)
	if !ok {
		e.ResponseWriter.WriteHeader(status)
		return
	}
	e.swallowed = true
	e.Header().Del("X-Content-Type-Options")
	writeOAuthError(e.ResponseWriter, newStatus, code, desc, challenge)
}

func (e *errorRewriter) Write(b []byte) (int, error) {
	if e.swallowed {
		return len(b), nil // the library's own error body, replaced
	}
	return e.ResponseWriter.Write(b)
}

// writeOAuthError writes {"error","error_description"} with the status and an optional challenge.
func writeOAuthError(w http.ResponseWriter, status int, code, desc, challenge string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if challenge != "" {
		h.Set("WWW-Authenticate", challenge)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// discovery is the library's discovery document, corrected to advertise only what this provider
// does: the code flow, the grants its clients may hold (the device flow per client), no request
// objects.
func (p *Provider) discovery(ctx context.Context) *oidc.DiscoveryConfiguration {
	d := op.CreateDiscoveryConfig(ctx, p.op, p.op.Storage())
	d.ResponseTypesSupported = []string{string(oidc.ResponseTypeCode)}
	d.GrantTypesSupported = []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeDeviceCode}
	d.CheckSessionIframe = ""
	d.RequestParameterSupported = false
	d.RequestURIParameterSupported = false
	d.RequestObjectSigningAlgValuesSupported = nil
	d.ClaimsParameterSupported = false
	d.ResponseModesSupported = []string{string(oidc.ResponseModeQuery), string(oidc.ResponseModeFormPost)}
	// postCredentialsToBasic makes client_secret_post work at introspection too.
	d.IntrospectionEndpointAuthMethodsSupported = []oidc.AuthMethod{oidc.AuthMethodBasic, oidc.AuthMethodPost, oidc.AuthMethodPrivateKeyJWT}
	return d
}

// corsAllowed decides CORS (RFC 9700 §2.6): only for the endpoints a browser app calls across
// origins, never the authorization endpoint, and only for origins of registered redirect URIs.
func (p *Provider) corsAllowed(r *http.Request, origin string) (bool, []string) {
	if origin == "" {
		return false, nil
	}
	path := r.URL.Path
	allowedPath := false
	for _, e := range []string{
		oidc.DiscoveryEndpoint,
		p.op.KeysEndpoint().Relative(),
		p.op.TokenEndpoint().Relative(),
		p.op.UserinfoEndpoint().Relative(),
		p.op.RevocationEndpoint().Relative(),
		p.op.IntrospectionEndpoint().Relative(),
	} {
		if strings.HasSuffix(path, e) {
			allowedPath = true
			break
		}
	}
	if !allowedPath {
		return false, nil
	}
	return p.origins.allowed(r.Context(), p, origin), nil
}

// originCache holds the origins of every registered redirect URI for a few seconds, so CORS does
// not read every client on each cross-origin request; a client registered meanwhile is allowed
// within originCacheTTL.
type originCache struct {
	mu      sync.Mutex
	origins map[string]bool
	until   time.Time
}

const originCacheTTL = 5 * time.Second

func (c *originCache) allowed(ctx context.Context, p *Provider, origin string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); c.origins == nil || !now.Before(c.until) {
		clients, err := p.store.ListClients(ctx)
		if err != nil {
			p.log.WarnContext(ctx, "CORS: list clients", "error", err)
			return false
		}
		c.origins = make(map[string]bool)
		for _, cl := range clients {
			for _, uri := range cl.RedirectURIs {
				if o := originOf(uri); o != "" {
					c.origins[o] = true
				}
			}
		}
		c.until = now.Add(originCacheTTL)
	}
	return c.origins[origin]
}

// originOf returns scheme://host[:port] of an absolute URL, or "".
func originOf(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return ""
	}
	host, _, _ := strings.Cut(rest, "/")
	host, _, _ = strings.Cut(host, "?")
	if host == "" || strings.Contains(host, "@") {
		return ""
	}
	return strings.ToLower(scheme) + "://" + strings.ToLower(host)
}

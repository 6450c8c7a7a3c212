package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxBody bounds what is read of any answer; the provider's largest (discovery, a token
// response) is a few KiB.
const maxBody = 1 << 20

// maxHops bounds a login's redirect chain; the provider uses five hops today.
const maxHops = 12

// simPrefix is where `wecom-oidc dev` serves its simulated WeCom, and simSelect the query
// parameter with which the simulator's login page completes the login for a member at once
// (what clicking the member does).
const (
	simPrefix = "/_wecomsim/"
	simSelect = "wecomsim_userid"
)

// members are the simulated corp's active members; logins rotate among them.
var members = [...]string{"zhangsan", "lisi", "wangwu"}

// opError is a failed operation; kind names what failed ("http 500 at callback") and is the key
// under which the error is counted, so it never holds values that vary from one op to the next.
type opError struct {
	kind string
	err  error
}

func (e *opError) Error() string {
	if e.err == nil {
		return e.kind
	}
	return e.kind + ": " + e.err.Error()
}

func (e *opError) Unwrap() error { return e.err }

func failf(kind string, err error) error { return &opError{kind: kind, err: err} }

// errorKind is the counting key of an op's error.
func errorKind(err error) string {
	if oe, ok := errors.AsType[*opError](err); ok {
		return oe.kind
	}
	return "other"
}

// endpoints are the provider's, from discovery.
type endpoints struct {
	Issuer        string `json:"issuer"`
	Authorization string `json:"authorization_endpoint"`
	Token         string `json:"token_endpoint"`
	UserInfo      string `json:"userinfo_endpoint"`
	JWKS          string `json:"jwks_uri"`
}

// target is a relying party of the provider under test: it knows the endpoints and the
// client, keeps the JWKS, and runs the flows. It is safe for concurrent use.
type target struct {
	ep           endpoints
	host         string // the provider's host:port; a redirect anywhere else is refused
	clientID     string
	clientSecret string
	redirectURI  string
	transport    *http.Transport
	timeout      time.Duration // of each request, body included
	client       *http.Client  // without cookies, for the back-channel requests
	labels       labeller
	keys         *keyCache
	next         atomic.Uint64 // rotates members
}

// newTransport is the HTTP setup of every phase: enough idle connections per host for every
// worker to keep its own (the default of 2 would make most requests open a new connection and
// measure the kernel's TCP handshake, then run out of ports in TIME_WAIT).
func newTransport(concurrency int) *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // loopback only, whatever the environment says
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4 * concurrency,
		MaxIdleConnsPerHost:   2 * concurrency,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
	}
}

// newTarget reads the provider's discovery document and JWKS.
func newTarget(ctx context.Context, s *server, transport *http.Transport, timeout time.Duration) (*target, error) {
	base, err := url.Parse(s.baseURL)
	if err != nil {
		return nil, fmt.Errorf("server URL: %w", err)
	}
	t := &target{
		host:         base.Host,
		clientID:     s.clientID,
		clientSecret: s.clientSecret,
		redirectURI:  s.redirectURI,
		transport:    transport,
		timeout:      timeout,
		client:       &http.Client{Transport: transport, Timeout: timeout, CheckRedirect: noRedirects},
	}
	body, err := t.get(ctx, s.baseURL+"/.well-known/openid-configuration")
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if err := json.Unmarshal(body, &t.ep); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	for name, u := range map[string]string{
		"issuer": t.ep.Issuer, "authorization_endpoint": t.ep.Authorization, "token_endpoint": t.ep.Token,
		"userinfo_endpoint": t.ep.UserInfo, "jwks_uri": t.ep.JWKS,
	} {
		pu, err := url.Parse(u)
		if err != nil || pu.Host != t.host {
			return nil, fmt.Errorf("discovery: %s %q is not on %s", name, u, t.host)
		}
	}
	t.labels = newLabeller(t.ep)
	t.keys = &keyCache{url: t.ep.JWKS, fetch: t.get}
	if err := t.keys.refresh(ctx); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return t, nil
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// get fetches a document outside any phase (discovery, JWKS, metrics): 200 and a body, or an
// error.
func (t *target) get(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return body, nil
}

// labeller names a request by its path, so a step keeps its name when the provider folds or
// adds a hop: the discovered endpoints by their role, the authorization endpoint's
// "/callback" as "authorize/callback", anything under the simulated WeCom as "wecom", any other
// path ending in "/callback" (the WeCom callback) as "callback", and the rest by the path
// without its leading slash ("/login" → "login").
type labeller struct {
	byPath map[string]string
}

func newLabeller(ep endpoints) labeller {
	l := labeller{byPath: map[string]string{}}
	for label, u := range map[string]string{
		"authorize": ep.Authorization, "token": ep.Token, "userinfo": ep.UserInfo, "jwks": ep.JWKS,
	} {
		if pu, err := url.Parse(u); err == nil {
			l.byPath[pu.Path] = label
			if label == "authorize" {
				l.byPath[strings.TrimSuffix(pu.Path, "/")+"/callback"] = "authorize/callback"
			}
		}
	}
	return l
}

func (l labeller) label(path string) string {
	if label, ok := l.byPath[path]; ok {
		return label
	}
	switch {
	case strings.HasPrefix(path, simPrefix):
		return "wecom"
	case strings.HasSuffix(path, "/callback"):
		return "callback"
	case path == "" || path == "/":
		return "/"
	}
	return strings.TrimPrefix(path, "/")
}

// do runs one request as the step label: it sends req with c, reads the whole body (the
// step's time includes it), and classifies a failure to get an answer. The status is the
// caller's to judge.
func (t *target) do(c *http.Client, rec *recorder, label string, req *http.Request) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	defer cancel()
	req = req.WithContext(ctx)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, failf(transportKind(err)+" at "+label, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if err != nil {
		return nil, nil, failf(transportKind(err)+" at "+label, err)
	}
	rec.add(label, time.Since(start))
	return resp, body, nil
}

// transportKind classifies an error of the HTTP exchange itself (no answer).
func transportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port"
	}
	return "network error"
}

// grant is what a login yields up to the code: what the token request needs.
type grant struct {
	code     string
	verifier string
	nonce    string
}

// tokens are a token response's tokens, the ID token verified.
type tokens struct {
	access  string
	refresh string
	sub     string // the ID token's
}

// authorize runs the browser's part of a login with a fresh cookie jar: GET the authorization
// endpoint with state, nonce and PKCE (S256), then follow each redirect by hand, each request a
// step named by its path, choosing a member on the simulated WeCom's page, until the redirect
// to our redirect URI; it checks state and returns the code.
func (t *target) authorize(ctx context.Context, rec *recorder) (grant, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return grant{}, failf("cookie jar", err)
	}
	c := &http.Client{Transport: t.transport, Jar: jar, CheckRedirect: noRedirects}
	g := grant{verifier: randomString(32), nonce: randomString(16)}
	state := randomString(16)
	challenge := sha256.Sum256([]byte(g.verifier))
	u, err := url.Parse(t.ep.Authorization)
	if err != nil {
		return grant{}, failf("authorization endpoint", err)
	}
	u.RawQuery = url.Values{
		"client_id":             {t.clientID},
		"redirect_uri":          {t.redirectURI},
		"response_type":         {"code"},
		"scope":                 {"openid profile email offline_access"},
		"state":                 {state},
		"nonce":                 {g.nonce},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(challenge[:])},
		"code_challenge_method": {"S256"},
	}.Encode()

	for range maxHops {
		label := t.labels.label(u.Path)
		if strings.HasPrefix(u.Path, simPrefix) {
			q := u.Query()
			q.Set(simSelect, members[t.next.Add(1)%uint64(len(members))])
			u.RawQuery = q.Encode()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return grant{}, failf("request at "+label, err)
		}
		resp, _, err := t.do(c, rec, label, req)
		if err != nil {
			return grant{}, err
		}
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		default:
			return grant{}, failf(fmt.Sprintf("http %d at %s", resp.StatusCode, label), nil)
		}
		loc := resp.Header.Get("Location")
		if loc == "" {
			return grant{}, failf("redirect without Location at "+label, nil)
		}
		next, err := u.Parse(loc)
		if err != nil {
			return grant{}, failf("bad Location at "+label, err)
		}
		if strings.HasPrefix(next.String(), t.redirectURI) {
			q := next.Query()
			if q.Get("state") != state {
				return grant{}, failf("state mismatch", nil)
			}
			if e := q.Get("error"); e != "" {
				return grant{}, failf("authorize error "+e, errors.New(q.Get("error_description")))
			}
			if g.code = q.Get("code"); g.code == "" {
				return grant{}, failf("no code", nil)
			}
			return g, nil
		}
		if next.Host != t.host {
			return grant{}, failf("redirect off the server at "+label, fmt.Errorf("to %s", next.Host))
		}
		u = next
	}
	return grant{}, failf("too many redirects", nil)
}

// tokenResponse is the token endpoint's answer, success or error.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
	Error        string `json:"error"`
}

// postToken sends a token request with client_secret_basic as the step label and returns the
// parsed success.
func (t *target) postToken(ctx context.Context, rec *recorder, label string, form url.Values) (tokenResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.ep.Token, strings.NewReader(form.Encode()))
	if err != nil {
		return tokenResponse{}, failf("request at "+label, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 §2.3.1: both halves form-encoded before Basic.
	req.SetBasicAuth(url.QueryEscape(t.clientID), url.QueryEscape(t.clientSecret))
	resp, body, err := t.do(t.client, rec, label, req)
	if err != nil {
		return tokenResponse{}, err
	}
	var tr tokenResponse
	jsonErr := json.Unmarshal(body, &tr)
	if resp.StatusCode != http.StatusOK {
		kind := fmt.Sprintf("http %d at %s", resp.StatusCode, label)
		if tr.Error != "" {
			kind += " (" + tr.Error + ")"
		}
		return tokenResponse{}, failf(kind, nil)
	}
	if jsonErr != nil {
		return tokenResponse{}, failf("bad JSON at "+label, jsonErr)
	}
	if tr.AccessToken == "" || !strings.EqualFold(tr.TokenType, "Bearer") {
		return tokenResponse{}, failf("no bearer access_token at "+label, nil)
	}
	return tr, nil
}

// redeem exchanges a code (authorization_code grant with the PKCE verifier) and verifies the
// ID token, nonce included.
func (t *target) redeem(ctx context.Context, rec *recorder, g grant) (tokens, error) {
	tr, err := t.postToken(ctx, rec, "token", url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {g.code},
		"redirect_uri":  {t.redirectURI},
		"code_verifier": {g.verifier},
	})
	if err != nil {
		return tokens{}, err
	}
	if tr.IDToken == "" {
		return tokens{}, failf("id_token missing", nil)
	}
	sub, err := t.verifyIDToken(ctx, tr.IDToken, g.nonce, "")
	if err != nil {
		return tokens{}, err
	}
	return tokens{access: tr.AccessToken, refresh: tr.RefreshToken, sub: sub}, nil
}

// refresh redeems a refresh token. The provider rotates them: the answer's refresh token
// replaces the one sent, which is dead from now on (presenting it again would revoke the whole
// family), so a refresh without a new one is an error. An ID token, when present, must verify
// and name the same subject.
func (t *target) refresh(ctx context.Context, rec *recorder, old tokens) (tokens, error) {
	tr, err := t.postToken(ctx, rec, "token (refresh)", url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {old.refresh},
	})
	if err != nil {
		return tokens{}, err
	}
	if tr.RefreshToken == "" {
		return tokens{}, failf("refresh_token not rotated", nil)
	}
	if tr.IDToken != "" {
		if _, err := t.verifyIDToken(ctx, tr.IDToken, "", old.sub); err != nil {
			return tokens{}, err
		}
	}
	return tokens{access: tr.AccessToken, refresh: tr.RefreshToken, sub: old.sub}, nil
}

// userinfo calls the userinfo endpoint with the access token; it must answer 200 for sub.
func (t *target) userinfo(ctx context.Context, rec *recorder, tok tokens) error {
	const label = "userinfo"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.ep.UserInfo, nil)
	if err != nil {
		return failf("request at "+label, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok.access)
	resp, body, err := t.do(t.client, rec, label, req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return failf(fmt.Sprintf("http %d at %s", resp.StatusCode, label), nil)
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(body, &claims); err != nil {
		return failf("bad JSON at "+label, err)
	}
	if claims.Sub != tok.sub {
		return failf("userinfo sub mismatch", nil)
	}
	return nil
}

// login is one full login: authorize, redeem the code, call userinfo.
func (t *target) login(ctx context.Context, rec *recorder) (tokens, error) {
	g, err := t.authorize(ctx, rec)
	if err != nil {
		return tokens{}, err
	}
	tok, err := t.redeem(ctx, rec, g)
	if err != nil {
		return tokens{}, err
	}
	if err := t.userinfo(ctx, rec, tok); err != nil {
		return tokens{}, err
	}
	return tok, nil
}

// signingAlgs are what the provider may sign with (keys.algorithm).
var signingAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

// verifyIDToken checks an ID token as a relying party does: the signature against the JWKS key
// of its kid, iss, aud containing our client, exp in the future, and nonce and sub when given.
// It returns the subject.
func (t *target) verifyIDToken(ctx context.Context, raw, nonce, sub string) (string, error) {
	jws, err := jose.ParseSigned(raw, signingAlgs)
	if err != nil {
		return "", failf("id_token malformed", err)
	}
	if len(jws.Signatures) != 1 {
		return "", failf("id_token malformed", fmt.Errorf("%d signatures", len(jws.Signatures)))
	}
	key, err := t.keys.key(ctx, jws.Signatures[0].Header.KeyID)
	if err != nil {
		return "", err
	}
	payload, err := jws.Verify(key)
	if err != nil {
		return "", failf("id_token signature", err)
	}
	var claims struct {
		Iss   string   `json:"iss"`
		Aud   audience `json:"aud"`
		Exp   float64  `json:"exp"`
		Nonce string   `json:"nonce"`
		Sub   string   `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", failf("id_token malformed", err)
	}
	switch {
	case claims.Iss != t.ep.Issuer:
		return "", failf("id_token iss", nil)
	case !claims.Aud.contains(t.clientID):
		return "", failf("id_token aud", nil)
	case float64(time.Now().Unix()) >= claims.Exp:
		return "", failf("id_token expired", nil)
	case nonce != "" && claims.Nonce != nonce:
		return "", failf("id_token nonce", nil)
	case claims.Sub == "", sub != "" && claims.Sub != sub:
		return "", failf("id_token sub", nil)
	}
	return claims.Sub, nil
}

// audience is aud: one string or an array of them.
type audience []string

func (a *audience) UnmarshalJSON(data []byte) error {
	var one string
	if err := json.Unmarshal(data, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return fmt.Errorf("aud: %w", err)
	}
	*a = many
	return nil
}

func (a audience) contains(s string) bool {
	for _, v := range a {
		if v == s {
			return true
		}
	}
	return false
}

// keyCache holds the provider's JWKS, fetched once and fetched again when a token names a kid
// it does not know (a key rotation), as a relying party does, at most once a second.
type keyCache struct {
	url   string
	fetch func(ctx context.Context, url string) ([]byte, error)

	keys atomic.Pointer[map[string]jose.JSONWebKey]

	mu      sync.Mutex // serializes fetches
	fetched time.Time
}

// refetchEvery bounds how often an unknown kid makes the cache fetch the JWKS again.
const refetchEvery = time.Second

func (c *keyCache) refresh(ctx context.Context) error {
	body, err := c.fetch(ctx, c.url)
	if err != nil {
		return err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	keys := make(map[string]jose.JSONWebKey, len(set.Keys))
	for _, k := range set.Keys {
		if k.Use == "" || k.Use == "sig" {
			keys[k.KeyID] = k
		}
	}
	c.keys.Store(&keys)
	c.fetched = time.Now()
	return nil
}

// key returns the key with this kid, fetching the JWKS again if it is unknown.
func (c *keyCache) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	if k, ok := (*c.keys.Load())[kid]; ok {
		return k, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := (*c.keys.Load())[kid]; ok {
		return k, nil // another worker fetched it meanwhile
	}
	if time.Since(c.fetched) >= refetchEvery {
		if err := c.refresh(ctx); err != nil {
			return jose.JSONWebKey{}, failf("jwks fetch", err)
		}
		if k, ok := (*c.keys.Load())[kid]; ok {
			return k, nil
		}
	}
	return jose.JSONWebKey{}, failf("id_token unknown kid", fmt.Errorf("kid %q", kid))
}

// randomString is n random bytes, base64url without padding (32 bytes → 43 characters, a PKCE
// verifier).
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

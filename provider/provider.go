// Package provider is the OpenID Provider: it mounts zitadel's *op.Provider on a chi router, adapts
// storage.Store to the library's op.Storage, and adds what the library leaves to us — the login
// page that hands the person to WeCom, the WeCom callback, the SSO session cookie, the binding of
// every login step to the browser that started it, and the mapping of WeCom profiles to claims.
//
// The whole HTTP surface is in (*Provider).routes.
package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/cors"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"

	"github.com/wecom-oidc/wecom-oidc/keys"
	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream"
)

// Lifetimes that are protocol choices rather than operator settings.
const (
	// authRequestTTL bounds the whole login, WeCom round trip included.
	authRequestTTL = 10 * time.Minute
	// codeTTL: the application redeems the code right after the redirect; a short life limits
	// what a leaked code is worth.
	codeTTL = 2 * time.Minute
	// loginStateTTL: WeCom's own codes live five minutes; a person may take longer on the page.
	loginStateTTL = 10 * time.Minute
)

// Config holds the provider's dependencies and settings. Zero durations take the defaults below.
type Config struct {
	// Issuer is the exact issuer URL, without a trailing slash. http is accepted only for
	// loopback hosts (development and tests).
	Issuer    string
	Store     storage.Store
	Keys      *keys.Set
	Upstreams []Upstream // at least one; with several, the person chooses (or a hint does)
	Claims    ClaimsConfig

	// RecheckInterval: at a refresh, the person's account is read from the upstream again when
	// the last confirmation is older than this (default 10m). RecheckGrace: when the upstream
	// cannot answer, refreshes go on until the last confirmation is this old (default 2h), then
	// fail closed.
	RecheckInterval time.Duration
	RecheckGrace    time.Duration

	AccessTokenTTL  time.Duration // default 1h
	IDTokenTTL      time.Duration // default 1h
	RefreshTokenTTL time.Duration // default 30 days
	SessionTTL      time.Duration // SSO session, default 12h

	// DevicePollInterval is the least time a device waits between two polls of the device flow
	// (RFC 8628 §3.2; default 5s, whole seconds).
	DevicePollInterval time.Duration

	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the client's address (for
	// the client-authentication rate limit). nil: 127.0.0.1 and ::1 (a proxy on the same host).
	TrustedProxies []netip.Prefix

	// Metrics records the provider's metrics and serves /metrics; nil: a fresh set. Pass the same
	// value to the WeCom connectors as their Observer.
	Metrics *Metrics

	// HTTPClient makes the provider's own outgoing calls: back-channel logout, clients' jwks_uri.
	// nil: a client with a 10-second timeout.
	HTTPClient *http.Client

	Logger *slog.Logger
	Now    func() time.Time
}

// Upstream is one identity source — a WeCom corp's app — behind the issuer.
type Upstream struct {
	// ID names the upstream in idp_hint, in login_hint ("user@ID") and on the chooser; stored with
	// each user. [a-z0-9-], stable.
	ID string
	// Name and NameEN are shown on the chooser page.
	Name, NameEN string
	// CorpID lets a login_hint "user@CORPID" pick this upstream.
	CorpID    string
	Connector upstream.Connector
	// SubjectTemplate overrides ClaimsConfig.SubjectTemplate for people of this upstream.
	SubjectTemplate string
	// DesktopScan offers the scan sign-in on computers (ScanOffer, ScanPrefer) when the connector
	// can do it (upstream.PhoneSignIn); "" or ScanOff: not.
	DesktopScan string
}

// Provider is the OpenID Provider as an http.Handler.
type Provider struct {
	cfg     Config
	op      *op.Provider
	store   storage.Store
	claims  *claimsMapper
	log     *slog.Logger
	now     func() time.Time
	secure  bool // issuer is https: cookies get the Secure attribute
	handler http.Handler

	httpClient   *http.Client
	metrics      *Metrics
	rechecks     recheckGroup
	clientKeys   jwksCache
	authFailures failureLimiter
	// userCodeMisses limits wrong user codes on the device page, per address.
	userCodeMisses failureLimiter
	origins        originCache
	// bg is the context of background work (back-channel deliveries); Close cancels it.
	bg         context.Context
	stopBG     context.CancelFunc
	deliveries sync.WaitGroup
}

// New builds the provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Store == nil || cfg.Keys == nil || len(cfg.Upstreams) == 0 {
		return nil, errors.New("provider: Store, Keys and at least one upstream are required")
	}
	if err := checkUpstreams(cfg.Upstreams, cfg.Claims.SubjectTemplate); err != nil {
		return nil, err
	}
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = 10 * time.Minute
	}
	if cfg.RecheckGrace <= 0 {
		cfg.RecheckGrace = 2 * time.Hour
	}
	if cfg.AccessTokenTTL <= 0 {
		cfg.AccessTokenTTL = time.Hour
	}
	if cfg.IDTokenTTL <= 0 {
		cfg.IDTokenTTL = time.Hour
	}
	if cfg.RefreshTokenTTL <= 0 {
		cfg.RefreshTokenTTL = 30 * 24 * time.Hour
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.DevicePollInterval < time.Second {
		cfg.DevicePollInterval = devicePollInterval * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(cfg.Store)
	}
	if cfg.TrustedProxies == nil {
		cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}
	}
	claims, err := newClaimsMapper(cfg.Claims)
	if err != nil {
		return nil, err
	}
	issuer, err := url.Parse(cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("provider: issuer: %w", err)
	}
	p := &Provider{
		cfg:    cfg,
		store:  cfg.Store,
		claims: claims,
		log:    cfg.Logger,
		now:    cfg.Now,
		secure: issuer.Scheme == "https",

		httpClient: cfg.HTTPClient,
		metrics:    cfg.Metrics,
	}
	p.bg, p.stopBG = context.WithCancel(context.Background())
	p.authFailures.now = cfg.Now
	p.userCodeMisses.now = cfg.Now
	opStore := &opStorage{p: p}
	p.op, err = op.NewProvider(&op.Config{
		CryptoKey:                cfg.Keys.CryptoKey(),
		DefaultLogoutRedirectURI: "/logged-out",
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		GrantTypeRefreshToken:    true,
		AuthMethodPrivateKeyJWT:  true,
		// Back-channel logout is ours (logout.go); the library only advertises it.
		BackChannelLogoutSupported:        true,
		BackChannelLogoutSessionSupported: true,
		SupportedUILocales:                []language.Tag{language.SimplifiedChinese, language.English},
		SupportedClaims:                   supportedClaims,
		SupportedScopes:                   supportedScopes,
	}, opStore, op.StaticIssuer(cfg.Issuer), p.opOptions(issuer)...)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	p.handler = p.routes()
	return p, nil
}

func (p *Provider) opOptions(issuer *url.URL) []op.Option {
	// The library's own verifiers (access tokens, id_token_hint) accept RS256, ES256 and PS256
	// unless told otherwise; keys.algorithm may be EdDSA.
	algs := []string{"RS256", "ES256", "EdDSA"}
	opts := []op.Option{
		op.WithCrypto(newTokenCrypto(p.cfg.Keys.CryptoKey())),
		op.WithHttpInterceptors(p.intercept),
		op.WithAccessTokenVerifierOpts(op.WithSupportedAccessTokenSigningAlgorithms(algs...)),
		op.WithIDTokenHintVerifierOpts(op.WithSupportedIDTokenHintSigningAlgorithms(algs...)),
		// The library's default reflects every origin, with credentials, on every endpoint.
		op.WithCORSOptions(&cors.Options{
			AllowOriginVaryRequestFunc: p.corsAllowed,
			AllowedMethods:             []string{http.MethodGet, http.MethodHead, http.MethodPost},
			AllowedHeaders:             []string{"Authorization", "Content-Type", "Accept", "DPoP"},
			ExposedHeaders:             []string{"WWW-Authenticate"},
			AllowCredentials:           false,
			MaxAge:                     600,
		}),
	}
	if issuer.Scheme == "http" {
		opts = append(opts, op.WithAllowInsecure())
	}
	return opts
}

// routes is the whole HTTP surface: our pages first, the OP library's endpoints last.
func (p *Provider) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID, p.logRequests, middleware.Recoverer, limitBody)
	r.Get("/healthz", p.healthz)
	r.Get("/readyz", p.readyz)
	r.Method(http.MethodGet, "/metrics", p.metrics.Handler())
	r.Get("/logged-out", p.loggedOut)
	r.Group(func(r chi.Router) {
		r.Use(op.NewIssuerInterceptor(p.op.IssuerFromRequest).Handler, securityHeaders)
		r.Get("/login", p.login)
		r.Get("/login/wecom/callback", p.wecomCallback)
		r.Get("/login/return", p.loginReturn)
		r.Get("/login/scan/status", p.scanStatus)
		r.Get("/login/scan/finish", p.scanFinish)
		r.Get("/login/wecom/m/{handle}", p.phoneScan)
		r.Post("/login/wecom/m/{handle}", p.phoneScan)
		r.Get(deviceEndpointPath, p.devicePage)
		r.Post(deviceEndpointPath, p.devicePage)
	})
	r.Mount("/", p.op)
	return r
}

// ServeHTTP serves every route of the provider.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.handler.ServeHTTP(w, r) }

// Issuer is the provider's issuer URL.
func (p *Provider) Issuer() string { return p.cfg.Issuer }

func (p *Provider) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err := p.store.Health(ctx); err != nil {
		p.log.ErrorContext(ctx, "health check failed", "error", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, `{"status":"unavailable","storage":"error"}`)
		return
	}
	fmt.Fprintln(w, `{"status":"ok"}`)
}

func (p *Provider) loggedOut(w http.ResponseWriter, r *http.Request) {
	p.renderMessage(w, r, http.StatusOK, msgLoggedOut)
}

// logRequests writes one line per request and observes its latency. Query strings are left out:
// they carry codes and states. The metrics' route label is the matched route pattern, never the
// raw path, so hostile paths cannot grow the label set.
func (p *Provider) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		d := time.Since(start)
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		route := "other"
		if rc := chi.RouteContext(r.Context()); rc != nil {
			if pattern := strings.ReplaceAll(rc.RoutePattern(), "/*/", "/"); pattern != "" && pattern != "/*" {
				route = pattern
			}
		}
		p.metrics.request(route, r.Method, status, d)
		path := r.URL.Path
		if strings.Contains(route, "{handle}") {
			path = route // a scan link's handle is a bearer value until the phone claims it
		}
		p.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("request_id", middleware.GetReqID(r.Context())),
			slog.String("method", r.Method),
			slog.String("path", path),
			slog.Int("status", status),
			slog.Duration("duration", d),
		)
	})
}

// readyz reports whether this instance can serve logins: storage answers, a signing key is
// loaded, and the last WeCom access-token fetch (if any yet) worked. 503 when one fails.
func (p *Provider) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"storage": "ok", "signing_key": "ok", "wecom_token": "ok"}
	ready := true
	if err := p.store.Health(ctx); err != nil {
		p.log.ErrorContext(ctx, "readiness: storage", "error", err)
		checks["storage"], ready = "failed", false
	}
	if p.cfg.Keys.SigningKey() == nil || len(p.cfg.Keys.PublicKeys()) == 0 {
		checks["signing_key"], ready = "missing", false
	}
	switch at, err := p.metrics.lastTokenRefresh(); {
	case at.IsZero():
		checks["wecom_token"] = "not fetched yet"
	case err != nil:
		checks["wecom_token"], ready = "last fetch failed at "+at.UTC().Format(time.RFC3339), false
	}
	status, word := http.StatusOK, "ready"
	if !ready {
		status, word = http.StatusServiceUnavailable, "not ready"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"status": word, "checks": checks})
}

// maxBody bounds a request body: the largest legitimate one (a token request with a client
// assertion, an authorization POST) is a few KiB. Go would otherwise parse forms up to 10 MB.
const maxBody = 64 << 10

func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBody {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		next.ServeHTTP(w, r)
	})
}

// securityHeaders is applied to the pages we render (the same headers as setPageHeaders).
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setPageHeaders(w.Header(), "")
		w.Header().Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// checkUpstreams refuses duplicate ids and subject templates that could give two people of
// different upstreams the same `sub`: with several upstreams every template must contain
// {corp_id} (and no two upstreams may share a corp with the same template) or begin with a
// literal prefix of its own.
func checkUpstreams(ups []Upstream, defaultTemplate string) error {
	if defaultTemplate == "" {
		defaultTemplate = "{userid}"
	}
	var templates, corps []string
	seen := map[string]bool{}
	for _, u := range ups {
		if u.ID == "" || u.Connector == nil {
			return errors.New("provider: every upstream needs an ID and a Connector")
		}
		if seen[u.ID] {
			return fmt.Errorf("provider: duplicate upstream id %q", u.ID)
		}
		seen[u.ID] = true
		t := u.SubjectTemplate
		if t == "" {
			t = defaultTemplate
		}
		if err := checkSubjectTemplate(t); err != nil {
			return fmt.Errorf("upstream %q: %w", u.ID, err)
		}
		templates, corps = append(templates, t), append(corps, u.CorpID)
	}
	if err := CheckSubjectTemplates(templates, corps); err != nil {
		return fmt.Errorf("provider: %w", err)
	}
	return nil
}

// upstreamByID returns the upstream with the id; a single upstream answers to "" as well (users
// recorded before there were several).
func (p *Provider) upstreamByID(id string) (Upstream, bool) {
	for _, u := range p.cfg.Upstreams {
		if u.ID == id {
			return u, true
		}
	}
	if id == "" && len(p.cfg.Upstreams) == 1 {
		return p.cfg.Upstreams[0], true
	}
	return Upstream{}, false
}

// loginURL is where the OP library sends the browser after /authorize.
func (p *Provider) loginURL(authRequestID string) string {
	return strings.TrimSuffix(p.cfg.Issuer, "/") + "/login?authRequestID=" + url.QueryEscape(authRequestID)
}

var supportedScopes = []string{"openid", "profile", "email", "phone", "address", "groups", "offline_access"}

var supportedClaims = []string{
	"sub", "aud", "exp", "iat", "iss", "auth_time", "nonce", "amr", "azp", "at_hash", "c_hash",
	"name", "preferred_username", "nickname", "picture", "gender", "updated_at",
	"email", "email_verified", "phone_number", "phone_number_verified", "address",
	"groups", "sid", "wecom_corp_id", "wecom_userid", "department", "position",
}

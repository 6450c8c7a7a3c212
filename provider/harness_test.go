package provider_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/keys"
	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/bolt"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// Clients every harness registers. The redirect URIs are never served: the test browser stops
// when it is sent there and hands the code to the relying party under test.
const (
	webClientID     = "web"
	webClientSecret = "web-secret-0123456789abcdef"
	webRedirect     = "https://rp.example.com/callback"
	spaClientID     = "spa"
	spaRedirect     = "http://127.0.0.1:5173/callback"
	otherClientID   = "other"
	otherRedirect   = "https://other.example.com/oidc/callback"
)

// harness is one provider over a bbolt database, with the simulated WeCom upstream, each on its
// own loopback HTTP server: everything a relying party talks to is real HTTP.
type harness struct {
	t      testing.TB
	sim    *wecomsim.Sim   // the first (or only) corp
	sims   []*wecomsim.Sim // every corp, in upstream order
	store  *bolt.Store
	issuer string
	// backend is the provider's own server URL (the issuer, unless a proxy fronts it).
	backend string
}

type harnessOptions struct {
	claims provider.ClaimsConfig
	seed   func(*wecomsim.Config)
	// now is the provider's and the store's clock (nil: time.Now), so tests can move time.
	now func() time.Time
	// clients are registered along with web, spa and other.
	clients []storage.Client
	// corps, when set, puts several simulated corps behind the issuer (upstream ids corp-a,
	// corp-b, …), each seed adjusted by its function; nil: one corp with id "corp".
	corps []func(*wecomsim.Config)
	// subject is every upstream's subject template (default: claims.subject).
	subject string
	// tags makes the connectors read WeCom tags.
	tags bool
	// recheckInterval and recheckGrace set the provider's re-check at refresh.
	recheckInterval, recheckGrace time.Duration
	// issuer, when set, is the provider's issuer instead of its own server URL (a proxy fronts it).
	issuer string
	// logger receives the provider's and the connectors' logs (nil: discarded).
	logger *slog.Logger
	// wrapSim wraps each simulated WeCom's handler (to observe what it hands out).
	wrapSim func(http.Handler) http.Handler
	// keyAlgorithm is the signing keys' algorithm (default RS256).
	keyAlgorithm string
	// keys receives the provider's key set, for rotation tests.
	keys **keys.Set
	// provider receives the provider, to serve it from a test's own http.Server.
	provider **provider.Provider
	// upstreamNames, when set, are the upstreams' Name and NameEN (shown on the chooser), in order.
	upstreamNames [][2]string
	// desktopScan is every upstream's DesktopScan (default off).
	desktopScan string
	// devicePollInterval is the provider's least time between device polls (default 5s).
	devicePollInterval time.Duration
}

func newHarness(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	store, err := bolt.Open(filepath.Join(t.TempDir(), "wecom-oidc.db"), bolt.Options{Now: opts.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	// The issuer is the server's own URL, known only once it listens: serve through a handler
	// that is filled in afterwards.
	var handler http.Handler
	opSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(opSrv.Close)
	h := &harness{t: t, store: store, issuer: opSrv.URL, backend: opSrv.URL}
	if opts.issuer != "" {
		h.issuer = opts.issuer
	}

	metrics := provider.NewMetrics(store)
	corps := opts.corps
	ids := []string{"corp"}
	if corps == nil {
		corps = []func(*wecomsim.Config){opts.seed}
	} else {
		ids = []string{"corp-a", "corp-b", "corp-c"}[:len(corps)]
	}
	var upstreams []provider.Upstream
	for i, adjust := range corps {
		seed := wecomsim.DefaultSeed()
		if len(opts.corps) > 0 {
			seed.CorpID = fmt.Sprintf("wwsim%013d", i+1)
		}
		if adjust != nil {
			adjust(&seed)
		}
		sim := wecomsim.New(seed)
		var simHandler http.Handler = sim
		if opts.wrapSim != nil {
			simHandler = opts.wrapSim(sim)
		}
		simSrv := httptest.NewServer(simHandler)
		t.Cleanup(simSrv.Close)
		conn, err := wecom.New(wecom.Config{
			CorpID:       seed.CorpID,
			AgentID:      seed.AgentID,
			Secret:       seed.Secret,
			Scope:        wecom.ScopePrivateInfo,
			APIBaseURL:   simSrv.URL,
			OAuthBaseURL: simSrv.URL,
			LoginBaseURL: simSrv.URL,
			RedirectURL:  h.issuer + "/login/wecom/callback",
			Tokens:       provider.UpstreamTokens{Store: store},
			Timeout:      5 * time.Second,
			Tags:         opts.tags,
			Now:          opts.now,
			Logger:       opts.logger,
			Observer:     metrics,
		})
		if err != nil {
			t.Fatal(err)
		}
		h.sims = append(h.sims, sim)
		name, nameEN := fmt.Sprintf("模拟企业 %c", 'A'+i), fmt.Sprintf("Sim corp %c", 'A'+i)
		if i < len(opts.upstreamNames) {
			name, nameEN = opts.upstreamNames[i][0], opts.upstreamNames[i][1]
		}
		upstreams = append(upstreams, provider.Upstream{
			ID: ids[i], Name: name, NameEN: nameEN,
			CorpID: seed.CorpID, Connector: conn, SubjectTemplate: opts.subject, DesktopScan: opts.desktopScan,
		})
	}
	h.sim = h.sims[0]

	ctx := context.Background()
	keySet, err := keys.Open(ctx, provider.KeyStore(store), keys.Config{Algorithm: opts.keyAlgorithm, Now: opts.now})
	if err != nil {
		t.Fatal(err)
	}
	if opts.keys != nil {
		*opts.keys = keySet
	}
	p, err := provider.New(provider.Config{
		Issuer:          h.issuer,
		Logger:          opts.logger,
		Metrics:         metrics,
		Store:           store,
		Keys:            keySet,
		Upstreams:       upstreams,
		Claims:          opts.claims,
		Now:             opts.now,
		RecheckInterval: opts.recheckInterval,
		RecheckGrace:    opts.recheckGrace,

		DevicePollInterval: opts.devicePollInterval,
	})
	if err != nil {
		t.Fatal(err)
	}
	handler = p
	if opts.provider != nil {
		*opts.provider = p
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("provider close: %v", err)
		}
	})

	for _, c := range append([]storage.Client{
		{ID: webClientID, SecretHash: storage.HashSecret(webClientSecret), RedirectURIs: []string{webRedirect}, IDTokenClaims: true},
		{ID: spaClientID, Public: true, RedirectURIs: []string{spaRedirect}, IDTokenClaims: true},
		{ID: otherClientID, SecretHash: storage.HashSecret(webClientSecret), RedirectURIs: []string{otherRedirect}},
	}, opts.clients...) {
		c.Source, c.CreatedAt = storage.SourceCLI, time.Now()
		if err := store.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// browser is a person's browser: a cookie jar, a User-Agent, and no automatic redirects, so every
// hop is seen.
type browser struct {
	t         testing.TB
	client    *http.Client
	userAgent string
}

const (
	desktopUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"
	wecomUA   = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0 wxwork/4.1.30"
)

func newBrowser(t testing.TB, userAgent string) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, userAgent: userAgent, client: &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// get fetches one URL without following redirects.
func (b *browser) get(raw string) *http.Response {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, raw, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("User-Agent", b.userAgent)
	res, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("GET %s: %v", raw, err)
	}
	return res
}

// follow fetches raw and follows redirects until a page is shown or the browser is sent to a URL
// for which stop returns true; it returns the last response (its body unread) and, when it
// stopped, the URL it was sent to.
func (b *browser) follow(raw string, stop func(*url.URL) bool) (*http.Response, *url.URL) {
	b.t.Helper()
	for range 20 {
		res := b.get(raw)
		if res.StatusCode < 300 || res.StatusCode >= 400 {
			return res, nil
		}
		res.Body.Close()
		loc, err := res.Request.URL.Parse(res.Header.Get("Location"))
		if err != nil {
			b.t.Fatalf("bad Location %q: %v", res.Header.Get("Location"), err)
		}
		if stop(loc) {
			return res, loc
		}
		raw = loc.String()
	}
	b.t.Fatalf("too many redirects from %s", raw)
	return nil, nil
}

var memberLink = regexp.MustCompile(`data-userid="([^"]+)"[^>]*href="([^"]+)"|href="([^"]+)"[^>]*data-userid="([^"]+)"`)

// clickMember finds the member's link on a simulated WeCom page and returns its target.
func clickMember(t testing.TB, page *http.Response, userID string) string {
	t.Helper()
	body := readBody(t, page)
	for _, m := range memberLink.FindAllStringSubmatch(body, -1) {
		id, href := m[1], m[2]
		if id == "" {
			id, href = m[4], m[3]
		}
		if id == userID {
			u, err := page.Request.URL.Parse(html.UnescapeString(href))
			if err != nil {
				t.Fatal(err)
			}
			return u.String()
		}
	}
	t.Fatalf("no link for %q on the WeCom page (status %d):\n%s", userID, page.StatusCode, body)
	return ""
}

func readBody(t testing.TB, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// signIn drives the browser from an authorization URL through the simulated WeCom, clicking
// userID, until the provider sends it to redirectURI; it returns that final URL's query.
func (h *harness) signIn(b *browser, authURL, redirectURI, userID string) url.Values {
	h.t.Helper()
	toApp := func(u *url.URL) bool { return strings.HasPrefix(u.String(), redirectURI) }
	res, loc := b.follow(authURL, toApp)
	if loc == nil {
		res, loc = b.follow(clickMember(h.t, res, userID), toApp)
	}
	if loc == nil {
		h.t.Fatalf("login ended on a page (status %d), not at the application:\n%s", res.StatusCode, readBody(h.t, res))
	}
	return loc.Query()
}

func randomString() string { return rand.Text() + rand.Text() }

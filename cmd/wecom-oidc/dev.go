package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"

	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// Dev mode's fixed names.
const (
	devListen   = "127.0.0.1:8080"
	devData     = "./data"
	devClientID = "demo"
	simPrefix   = "/_wecomsim"
)

// runDev: `wecom-oidc dev` — the provider with a simulated WeCom and a demo client, needing no
// configuration. --config adds clients and other settings; its wecom block is ignored.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("dev", getenv, stderr)
	listen := fs.String("listen", "", "address to listen on (default: the config's listen, "+devListen+")")
	data := fs.String("data", "", "directory for the database (default: the config's storage.path, "+devData+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	if *listen != "" {
		if cfg.Issuer != "" {
			return fmt.Errorf("--listen conflicts with the configured issuer %s; drop one", cfg.Issuer)
		}
		cfg.Listen = *listen
	}
	if *data != "" {
		cfg.Storage.Path = filepath.Join(*data, "wecom-oidc.db")
	}
	if err := cfg.Validate(ModeDev); err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)

	seed := wecomsim.DefaultSeed()
	seed.AutoLogin = cfg.Dev.AutoLogin
	// The demo shows what a long-standing WeCom app sees (user/get with contact fields); apps
	// created after 2022-06-20 get e-mail and mobile only through the in-client consent door.
	seed.LegacyContactFields = true
	sim := wecomsim.New(seed)
	demoSecret := rand.Text() + rand.Text()

	prepare := func(issuer string, cfg *Config) (func(*http.ServeMux, http.Handler), error) {
		cfg.WeCom = WeComConfig{
			CorpID:       seed.CorpID,
			AgentID:      seed.AgentID,
			Secret:       seed.Secret,
			Scope:        wecom.ScopePrivateInfo,
			APIBaseURL:   issuer + simPrefix,
			OAuthBaseURL: issuer + simPrefix,
			LoginBaseURL: issuer + simPrefix,
			Timeout:      cfg.WeCom.Timeout,
			Tags:         cfg.WeCom.Tags,
			DesktopScan:  cfg.Dev.DesktopScan,
		}
		cfg.Upstreams = nil // dev simulates one corp, whatever the file lists
		cfg.Clients = append(withoutClient(cfg.Clients, devClientID), ClientConfig{
			ID:           devClientID,
			Name:         "wecom-oidc demo",
			Secret:       demoSecret,
			RedirectURIs: []string{issuer + demoCallbackPath},
			// Logging out of the demo returns to it.
			PostLogoutRedirectURIs: []string{issuer + demoPrefix},
		})
		demo := newDemo(issuer, devClientID, demoSecret)
		return func(mux *http.ServeMux, _ http.Handler) {
			mux.Handle(simPrefix+"/", http.StripPrefix(simPrefix, sim))
			mux.Handle(demoPrefix, demo)
			mux.Handle("GET /{$}", http.RedirectHandler(demoPrefix, http.StatusFound))
		}, nil
	}
	ready := func(issuer string) {
		fmt.Fprintf(stdout, `wecom-oidc %s — development mode (simulated WeCom, not for production)

  issuer         %s
  discovery      %s/.well-known/openid-configuration
  demo page      %s%s
  client id      %s
  client secret  %s
  redirect URI   %s%s
  after logout   %s%s
  WeCom members  zhangsan 张三, lisi 李四, wangwu 王五 (no e-mail), zhaoliu 赵六 (disabled), outsider (not a member)
  storage        %s

Press Ctrl-C to stop.
`, version, issuer, issuer, issuer, demoPrefix, devClientID, demoSecret, issuer, demoCallbackPath, issuer, demoPrefix, cfg.Storage.describe())
	}
	// The connector's HTTP client code runs as against WeCom; only the socket is skipped, so a
	// login costs what it would with WeCom being someone else's machine.
	wecomHTTP := &http.Client{Timeout: cfg.WeCom.Timeout, Transport: handlerTransport{sim}}
	return serveProvider(ctx, cfg, log, serveOptions{prepare: prepare, ready: ready, wecomHTTP: wecomHTTP})
}

// handlerTransport answers requests with a handler in this process: the simulator's API, whose
// paths are those of WeCom's below simPrefix.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	in := req.Clone(req.Context())
	in.URL.Path = strings.TrimPrefix(in.URL.Path, simPrefix)
	in.RequestURI = in.URL.RequestURI()
	in.RemoteAddr = "127.0.0.1:0"
	if in.Body == nil {
		in.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, in)
	if req.Body != nil {
		req.Body.Close()
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

func withoutClient(clients []ClientConfig, id string) []ClientConfig {
	out := clients[:0:0]
	for _, c := range clients {
		if c.ID != id {
			out = append(out, c)
		}
	}
	return out
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/wecom-oidc/wecom-oidc/keys"
	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
)

// shutdownGrace bounds how long in-flight requests may take to finish on SIGINT/SIGTERM.
const shutdownGrace = 15 * time.Second

func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level)) // validated; "" means info
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// newUpstreams builds one WeCom connector per configured upstream (the wecom block, or the
// upstreams list) for the given issuer. httpClient nil: each connector's own, with its timeout.
func newUpstreams(cfg *Config, issuer string, store storage.Store, metrics *provider.Metrics, httpClient *http.Client, log *slog.Logger) ([]provider.Upstream, error) {
	var ups []provider.Upstream
	for _, uc := range cfg.EffectiveUpstreams() {
		w := uc.WeCom
		conn, err := wecom.New(wecom.Config{
			CorpID:       w.CorpID,
			AgentID:      w.AgentID,
			Secret:       w.Secret,
			Scope:        w.Scope,
			APIBaseURL:   w.APIBaseURL,
			OAuthBaseURL: w.OAuthBaseURL,
			LoginBaseURL: w.LoginBaseURL,
			RedirectURL:  strings.TrimSuffix(issuer, "/") + "/login/wecom/callback",
			Timeout:      w.Timeout,
			Tags:         w.Tags,
			HTTPClient:   httpClient,
			Tokens:       provider.UpstreamTokens{Store: store},
			Observer:     metrics,
			Logger:       log.With("upstream", uc.ID),
		})
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", uc.ID, err)
		}
		ups = append(ups, provider.Upstream{
			ID: uc.ID, Name: uc.Name, NameEN: uc.NameEN, CorpID: w.CorpID,
			Connector: conn, SubjectTemplate: uc.Subject, DesktopScan: w.DesktopScan,
		})
	}
	return ups, nil
}

// newProvider builds the OP over an open store.
func newProvider(cfg *Config, issuer string, store storage.Store, keySet *keys.Set, ups []provider.Upstream, metrics *provider.Metrics, log *slog.Logger) (*provider.Provider, error) {
	return provider.New(provider.Config{
		TrustedProxies: cfg.HTTP.trustedProxies(),
		Issuer:         issuer,
		Store:          store,
		Keys:           keySet,
		Upstreams:      ups,
		Claims: provider.ClaimsConfig{
			SubjectTemplate: cfg.Claims.Subject,
			EmailSources:    cfg.Claims.EmailSources,
			EmailFallback:   cfg.Claims.EmailFallback,
			EmailVerified:   cfg.Claims.EmailVerified,
			DefaultGroups:   cfg.Claims.DefaultGroups,
			Extra:           cfg.Claims.Extra,
		},
		AccessTokenTTL:  cfg.Tokens.AccessTokenTTL,
		IDTokenTTL:      cfg.Tokens.IDTokenTTL,
		RefreshTokenTTL: cfg.Tokens.RefreshTokenTTL,
		SessionTTL:      cfg.Tokens.SessionTTL,
		RecheckInterval: cfg.Tokens.RecheckInterval,
		RecheckGrace:    cfg.Tokens.RecheckGrace,
		Metrics:         metrics,
		Logger:          log,
	})
}

// reconcileClients makes the stored config-file clients equal to the file's list: each is
// created or updated, and a config client no longer in the file is removed. Clients registered
// through the CLI are left alone; an id taken by one of them is an error.
func reconcileClients(ctx context.Context, store storage.Store, clients []ClientConfig, now time.Time) error {
	existing, err := store.ListClients(ctx)
	if err != nil {
		return fmt.Errorf("reconcile clients: %w", err)
	}
	byID := make(map[string]storage.Client, len(existing))
	for _, c := range existing {
		byID[c.ID] = c
	}
	wanted := make(map[string]bool, len(clients))
	for _, cc := range clients {
		wanted[cc.ID] = true
		c := storage.Client{
			ID:                               cc.ID,
			Name:                             cc.Name,
			RedirectURIs:                     cc.RedirectURIs,
			PostLogoutRedirectURIs:           cc.PostLogoutRedirectURIs,
			Public:                           cc.Public,
			IDTokenClaims:                    cc.WantsIDTokenClaims(),
			AuthMethod:                       cc.TokenEndpointAuthMethod,
			JWKS:                             cc.JWKS,
			JWKSURI:                          cc.JWKSURI,
			BackchannelLogoutURI:             cc.BackchannelLogoutURI,
			BackchannelLogoutSessionRequired: cc.BackchannelLogoutSessionRequired,
			Groups:                           cc.Groups,
			DeviceFlow:                       cc.DeviceFlow,
			Source:                           storage.SourceConfig,
			CreatedAt:                        now,
			UpdatedAt:                        now,
		}
		if !cc.Public && cc.Secret != "" {
			c.SecretHash = storage.HashSecret(cc.Secret)
		}
		if prev, ok := byID[cc.ID]; ok {
			if prev.Source != storage.SourceConfig {
				return fmt.Errorf("reconcile clients: client %q from the config file is already registered through the CLI; remove one of them", cc.ID)
			}
			c.CreatedAt = prev.CreatedAt
			if sameClient(prev, c) {
				continue
			}
		}
		if err := store.PutClient(ctx, c); err != nil {
			return fmt.Errorf("reconcile client %q: %w", cc.ID, err)
		}
	}
	for _, c := range existing {
		if c.Source == storage.SourceConfig && !wanted[c.ID] {
			if err := store.DeleteClient(ctx, c.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("reconcile: remove client %q: %w", c.ID, err)
			}
		}
	}
	return nil
}

func sameClient(a, b storage.Client) bool {
	// Every field but the timestamps: a changed key set or logout URI must be written too.
	a.CreatedAt, a.UpdatedAt, b.CreatedAt, b.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// sweep deletes expired records every interval until ctx ends; done is closed when it has stopped.
func sweep(ctx context.Context, store storage.Store, every time.Duration, log *slog.Logger) (done <-chan struct{}) {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				res, err := store.DeleteExpired(ctx)
				if err != nil {
					if ctx.Err() == nil {
						log.Error("sweeper: delete expired records", "error", err)
					}
					continue
				}
				if res.Total() > 0 {
					log.Debug("sweeper: deleted expired records", "auth_requests", res.AuthRequests, "codes", res.Codes,
						"login_states", res.LoginStates, "access_tokens", res.AccessTokens,
						"refresh_tokens", res.RefreshTokens, "sessions", res.Sessions,
						"scan_logins", res.ScanLogins, "device_authorizations", res.DeviceAuths)
				}
			}
		}
	}()
	return ch
}

// serveUntilDone serves on ln until ctx ends, then shuts down gracefully: in-flight requests get
// shutdownGrace to finish. It returns nil after a clean shutdown.
func serveUntilDone(ctx context.Context, ln net.Listener, handler http.Handler, limits HTTPConfig, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		ReadTimeout:       limits.ReadTimeout,
		WriteTimeout:      limits.WriteTimeout,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// limitConcurrency sheds load: at most max requests are served at once, and a request beyond
// that gets 503 with Retry-After at once instead of queueing without bound (which would only
// grow memory and latency until everything times out). Probes and metrics bypass the limit so
// an overloaded instance can still be observed.
func limitConcurrency(next http.Handler, max int) http.Handler {
	slots := make(chan struct{}, max)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			next.ServeHTTP(w, r)
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			next.ServeHTTP(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("overloaded: too many requests at once; retry shortly\n"))
		}
	})
}

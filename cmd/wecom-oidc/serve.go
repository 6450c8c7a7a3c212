package main

import (
	"context"
	"fmt"
	"github.com/wecom-oidc/wecom-oidc/provider"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// runServe: `wecom-oidc serve` — the provider against the real WeCom.
func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("serve", getenv, stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	if err := cfg.Validate(ModeServe); err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	return serveProvider(ctx, cfg, log, serveOptions{})
}

// serveOptions are what dev mode (and tests) change about serving.
type serveOptions struct {
	// prepare, when set, runs once the listener is bound and the issuer known: dev mode points
	// the WeCom settings at its simulator and adds the demo client there. It returns the routes
	// to serve beside the provider (nil: none).
	prepare func(issuer string, cfg *Config) (extra func(mux *http.ServeMux, provider http.Handler), err error)
	// ready is told the issuer once the provider is about to serve.
	ready func(issuer string)
	// wecomHTTP, when set, makes the WeCom connectors' API calls (dev mode: straight into its
	// simulator, without a loopback connection).
	wecomHTTP *http.Client
}

// serveProvider opens the database, binds the listener, builds the provider and serves until ctx
// ends, closing everything in order: HTTP server, sweeper, database.
func serveProvider(ctx context.Context, cfg *Config, log *slog.Logger, opts serveOptions) (err error) {
	// The OP library logs through slog's default logger; give it ours (format, level, stream).
	slog.SetDefault(log)
	store, err := openStore(ctx, cfg.Storage)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close database: %w", cerr)
		}
	}()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	defer ln.Close() // after a clean Shutdown this is a no-op
	issuer := cfg.Issuer
	if issuer == "" {
		issuer = "http://" + ln.Addr().String()
	}
	var extra func(*http.ServeMux, http.Handler)
	if opts.prepare != nil {
		if extra, err = opts.prepare(issuer, cfg); err != nil {
			return err
		}
	}

	if err := reconcileClients(ctx, store, cfg.Clients, time.Now()); err != nil {
		return err
	}
	// Replicas on etcd learn of a key another one created or rotated at once, not at the next
	// periodic reload.
	var keyChanges <-chan struct{}
	if w, ok := store.(keyWatcher); ok {
		watchCtx, stopWatch := context.WithCancel(context.Background())
		defer stopWatch()
		keyChanges = w.WatchKeys(watchCtx)
	}
	keySet, err := openWatchedKeys(ctx, cfg, store, keyChanges, log)
	if err != nil {
		return err
	}
	metrics := provider.NewMetrics(store)
	ups, err := newUpstreams(cfg, issuer, store, metrics, opts.wecomHTTP, log)
	if err != nil {
		return err
	}
	p, err := newProvider(cfg, issuer, store, keySet, ups, metrics, log)
	if err != nil {
		return err
	}
	// The CLI's way in while the server runs: a Unix socket (0600), never the network. It closes
	// after the HTTP server and before the database.
	stopAdmin, err := startServerAdmin(cfg, store, keySet, log)
	if err != nil {
		return err
	}
	defer stopAdmin()
	var handler http.Handler = p
	if extra != nil {
		mux := http.NewServeMux()
		extra(mux, p)
		mux.Handle("/", p)
		handler = mux
	}
	handler = limitConcurrency(handler, cfg.HTTP.MaxConcurrentRequests)

	log.Info("serving", "issuer", issuer, "listen", ln.Addr().String(), "storage", cfg.Storage.describe(), "version", version)
	if opts.ready != nil {
		opts.ready(issuer)
	}
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	swept := sweep(sweepCtx, store, cfg.Storage.SweepInterval, log)
	rotated := make(chan struct{})
	go func() { defer close(rotated); keySet.Run(sweepCtx) }() // scheduled key rotation
	err = serveUntilDone(ctx, ln, handler, cfg.HTTP, log)
	stopSweep()
	<-swept
	<-rotated
	closeCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if cerr := p.Close(closeCtx); cerr != nil {
		log.Warn("shutdown", "error", cerr)
	}
	return err
}

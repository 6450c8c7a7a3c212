package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/wecom-oidc/wecom-oidc/keys"
	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/storage"
)

const keysUsage = `usage:
  wecom-oidc keys list       the published signing keys: next, active, retired
  wecom-oidc keys rotate     the next key signs from now on; the old one stays published
(both take --config FILE; they work while the server runs and when it is stopped)`

// openKeys opens the signing keys on store with the configured schedule.
func openKeys(ctx context.Context, cfg *Config, store storage.Store, log *slog.Logger) (*keys.Set, error) {
	return openWatchedKeys(ctx, cfg, store, nil, log)
}

// openWatchedKeys is openKeys for the server: changes, when not nil, tells its key set that
// another replica wrote a key.
func openWatchedKeys(ctx context.Context, cfg *Config, store storage.Store, changes <-chan struct{}, log *slog.Logger) (*keys.Set, error) {
	return keys.Open(ctx, provider.KeyStore(store), keys.Config{
		Algorithm:      cfg.Keys.Algorithm,
		RotationPeriod: cfg.Keys.RotationPeriod,
		Retention:      cfg.Keys.Retention,
		Logger:         log,
		Changes:        changes,
	})
}

// keyWatcher is a store that can tell when the stored keys change (storage/etcd).
type keyWatcher interface {
	WatchKeys(ctx context.Context) <-chan struct{}
}

// runKeys: `wecom-oidc keys list|rotate`.
func runKeys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("missing keys command\n%s", keysUsage)
	}
	sub := args[0]
	if sub != "list" && sub != "rotate" {
		return fmt.Errorf("unknown keys command %q\n%s", sub, keysUsage)
	}
	fs, configPath := newFlagSet("keys "+sub, getenv, stderr)
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("usage: wecom-oidc keys %s [--config FILE]", sub)
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	return withAdmin(ctx, cfg, func(a admin) error {
		var ks []keyInfo
		if sub == "list" {
			ks, err = a.ListKeys(ctx)
		} else {
			ks, err = a.RotateKeys(ctx)
		}
		if err != nil {
			return err
		}
		if sub == "rotate" {
			for _, k := range ks {
				if k.State == keys.StateActive {
					fmt.Fprintf(stdout, "key %s (%s) signs from now on; the previous key stays published until tokens it signed expire\n\n", k.ID, k.Algorithm)
				}
			}
		}
		return printKeys(stdout, ks)
	})
}

func printKeys(w io.Writer, ks []keyInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tALG\tSTATE\tCREATED\tACTIVATES\tUNPUBLISHED AFTER")
	for _, k := range ks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Algorithm, k.State, timeOrDash(k.CreatedAt), timeOrDash(k.ActivatesAt), timeOrDash(k.NotAfter))
	}
	return tw.Flush()
}

// timeOrDash formats t in UTC, "-" when zero.
func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

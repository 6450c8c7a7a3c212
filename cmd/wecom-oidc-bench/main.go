// Command wecom-oidc-bench is the load generator of wecom-oidc. It starts `wecom-oidc dev` (or
// uses a running server) on loopback and measures, after a warm-up, at a given concurrency and
// for a given time: full logins (fresh cookie jar, PKCE, the ID token verified against the
// JWKS), the token endpoint's code exchange alone, refreshes with rotation, and userinfo. Each
// result is printed as a ratio to a ceiling measured in the same run: RS256 signatures per
// second on all cores, and a bare net/http JSON handler's requests per second. With -soak it
// runs a mixed load instead and watches the server's memory, database and records.
//
// Everything stays on loopback and every run is bounded in time.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wecom-oidc-bench:", err)
		os.Exit(1)
	}
}

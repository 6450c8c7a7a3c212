// Command wecom-oidc is an OpenID Connect provider that signs people in with WeCom (企业微信).
//
// main only sets up signals and the process environment; run does the wiring so that tests can
// drive the real program in-process.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

// gcPercent is the collector's target unless GOGC is set. A serving process keeps a small live
// heap (about 10 MiB) and makes garbage per request: collecting at five times the live heap
// rather than twice cut a tenth of the CPU per login and refresh (make bench) for a few MiB.
const gcPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wecom-oidc:", err)
		os.Exit(1)
	}
}

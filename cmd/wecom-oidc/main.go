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
	"syscall"
)

// version is set at build time: -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wecom-oidc:", err)
		os.Exit(1)
	}
}

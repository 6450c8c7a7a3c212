package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

const usage = `wecom-oidc — an OpenID Connect provider that signs people in with WeCom (企业微信)

Usage:
  wecom-oidc serve [--config FILE]                  run the provider
  wecom-oidc dev [--config FILE] [--listen ADDR] [--data DIR]
                                                    provider + simulated WeCom + demo client, zero config
  wecom-oidc client add|list|show|remove|rotate-secret [--config FILE] ...
                                                    manage relying parties
  wecom-oidc users list|show|disable|enable [--config FILE] [SUB]
                                                    the people who have signed in
  wecom-oidc keys list|rotate [--config FILE]       the signing keys
  wecom-oidc backup --out FILE [--force] [--config FILE]
                                                    a consistent copy of the store
  wecom-oidc storage restore --from FILE [--config FILE]
                                                    load a backup into the configured, empty store
  wecom-oidc storage migrate --from BOLT_FILE --to etcd [--config FILE]
                                                    move a bolt database into the configured etcd
  wecom-oidc config check [--config FILE]           validate the configuration, print every problem
  wecom-oidc version                                print the version

client, users, keys and backup work while the server runs (through its admin socket, admin.socket,
default beside the database) and when it is stopped (on the store directly; with storage.backend
etcd also beside replicas whose admin sockets are elsewhere).

--config defaults to $WECOM_OIDC_CONFIG. Every configuration key can also be set in the
environment: WECOM_OIDC_ + the upper-case path with __ between levels (WECOM_OIDC_WECOM__SECRET).
`

// errUsage marks a command-line mistake; the usage text has already been printed.
var errUsage = errors.New("invalid command line (see wecom-oidc help)")

// run is the whole program: it parses args, does the work, and returns an error instead of
// exiting, so tests run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	err := dispatch(ctx, cmd, rest, getenv, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the flags' help was printed
	}
	return err
}

func dispatch(ctx context.Context, cmd string, rest []string, getenv func(string) string, stdout, stderr io.Writer) error {
	switch cmd {
	case "serve":
		return runServe(ctx, rest, getenv, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, getenv, stdout, stderr)
	case "client":
		return runClient(ctx, rest, getenv, stdout, stderr)
	case "users":
		return runUsers(ctx, rest, getenv, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, getenv, stdout, stderr)
	case "backup":
		return runBackup(ctx, rest, getenv, stdout, stderr)
	case "storage":
		return runStorage(ctx, rest, getenv, stdout, stderr)
	case "config":
		return runConfig(rest, getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "wecom-oidc", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting, with the --config flag
// every command takes.
func newFlagSet(name string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("wecom-oidc "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", getenv("WECOM_OIDC_CONFIG"), "configuration file (YAML)")
	return fs, configPath
}

// parseFlags parses args and refuses stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}

// parseArgs parses flags that may come before, between or after the positional arguments
// (`users show SUB --config FILE`) and returns the positional arguments; after "--" every argument
// is positional. -h prints the flags and yields flag.ErrHelp, which run treats as success.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, flag.ErrHelp
			}
			return nil, errUsage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// runConfig: `config check`.
func runConfig(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return errors.New("usage: wecom-oidc config check [--config FILE]")
	}
	fs, configPath := newFlagSet("config check", getenv, stderr)
	mode := fs.String("mode", "serve", "validate for: serve | dev")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	m := ModeServe
	if *mode == "dev" {
		m = ModeDev
	}
	if err := cfg.Validate(m); err != nil {
		var verr *ValidationError
		if errors.As(err, &verr) {
			for _, p := range verr.Problems {
				fmt.Fprintf(stdout, "%s: %s\n", p.Key, p.Message)
			}
			return fmt.Errorf("configuration has %d problem(s)", len(verr.Problems))
		}
		return err
	}
	name := *configPath
	if name == "" {
		name = "(defaults and environment)"
	}
	fmt.Fprintf(stdout, "%s: OK\n", name)
	return nil
}

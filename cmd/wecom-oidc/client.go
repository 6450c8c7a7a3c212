package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/storage"
)

const clientUsage = `usage:
  wecom-oidc client add --id ID --redirect-uri URI [--redirect-uri URI ...] [--name NAME]
                        [--post-logout-redirect-uri URI ...] [--public] [--no-id-token-claims]
                        [--backchannel-logout-uri URI]
                        [--auth-method private_key_jwt (--jwks-file FILE | --jwks-uri URI)]
  wecom-oidc client list
  wecom-oidc client show ID
  wecom-oidc client remove ID
(all take --config FILE; the server must be stopped: the database is locked while it runs)`

// runClient: `wecom-oidc client …` — manage relying parties in the database.
func runClient(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(clientUsage)
	}
	sub, rest := args[0], args[1:]
	fs, configPath := newFlagSet("client "+sub, getenv, stderr)
	var (
		id, name, backchannel         string
		authMethod, jwksFile, jwksURI string
		redirects, logouts, groups    stringList
		public, noIDTokenCls          bool
	)
	if sub == "add" {
		fs.StringVar(&id, "id", "", "client id ([A-Za-z0-9._-], at most 64)")
		fs.StringVar(&name, "name", "", "display name")
		fs.Var(&redirects, "redirect-uri", "redirect URI (repeatable)")
		fs.Var(&logouts, "post-logout-redirect-uri", "post-logout redirect URI (repeatable)")
		fs.BoolVar(&public, "public", false, "public client: no secret, PKCE required (SPAs, native apps)")
		fs.BoolVar(&noIDTokenCls, "no-id-token-claims", false, "put profile claims in userinfo only, not in the ID token")
		fs.Var(&groups, "groups", "what the groups claim holds: names (default), ids, paths, tags (repeatable, in order)")
		fs.StringVar(&backchannel, "backchannel-logout-uri", "", "where to POST logout tokens when a session ends")
		fs.StringVar(&authMethod, "auth-method", "", "token endpoint authentication: client_secret_basic (default) or private_key_jwt")
		fs.StringVar(&jwksFile, "jwks-file", "", "private_key_jwt: file holding the client's public JSON Web Key Set")
		fs.StringVar(&jwksURI, "jwks-uri", "", "private_key_jwt: URL where the client publishes its keys")
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	open := func() (storage.Store, error) { return openStore(cfg.Storage.Path) }

	switch sub {
	case "add":
		if fs.NArg() > 0 {
			return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
		}
		c := storage.Client{
			ID: id, Name: name, RedirectURIs: redirects, PostLogoutRedirectURIs: logouts,
			Public: public, IDTokenClaims: !noIDTokenCls, BackchannelLogoutURI: backchannel,
			AuthMethod: authMethod, JWKSURI: jwksURI, Groups: groups,
		}
		if jwksFile != "" {
			raw, err := os.ReadFile(jwksFile)
			if err != nil {
				return fmt.Errorf("--jwks-file: %w", err)
			}
			c.JWKS = string(raw)
		}
		return clientAdd(ctx, open, stdout, c)
	case "list":
		return withStore(open, func(s storage.Store) error { return clientList(ctx, s, stdout) })
	case "show", "remove":
		if fs.NArg() != 1 {
			return fmt.Errorf("usage: wecom-oidc client %s ID", sub)
		}
		if sub == "show" {
			return withStore(open, func(s storage.Store) error { return clientShow(ctx, s, fs.Arg(0), stdout) })
		}
		return withStore(open, func(s storage.Store) error { return clientRemove(ctx, s, fs.Arg(0), stdout) })
	default:
		return fmt.Errorf("unknown client command %q\n%s", sub, clientUsage)
	}
}

func withStore(open func() (storage.Store, error), fn func(storage.Store) error) (err error) {
	s, err := open()
	if err != nil {
		return err
	}
	defer func() {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	return fn(s)
}

func clientAdd(ctx context.Context, open func() (storage.Store, error), stdout io.Writer, c storage.Client) error {
	if err := validateClient(c); err != nil {
		return err
	}
	var secret string
	if !c.Public && c.AuthMethod != provider.AuthMethodPrivateKeyJWT {
		b := make([]byte, 32) // 256 bits
		rand.Read(b)
		secret = base64.RawURLEncoding.EncodeToString(b)
		c.SecretHash = storage.HashSecret(secret)
	}
	now := time.Now().UTC()
	c.Source, c.CreatedAt, c.UpdatedAt = storage.SourceCLI, now, now
	return withStore(open, func(s storage.Store) error {
		if err := s.CreateClient(ctx, c); err != nil {
			if errors.Is(err, storage.ErrAlreadyExists) {
				return fmt.Errorf("client %q already exists", c.ID)
			}
			return err
		}
		fmt.Fprintf(stdout, "client_id:     %s\n", c.ID)
		switch {
		case secret != "":
			fmt.Fprintf(stdout, "client_secret: %s\n(shown once; only its hash is stored)\n", secret)
		case c.Public:
			fmt.Fprintln(stdout, "public client: no secret; PKCE (S256) is required")
		default:
			fmt.Fprintln(stdout, "private_key_jwt client: authenticates with a JWT signed by its own key")
		}
		return nil
	})
}

// validateClient applies the config file's client rules to a client registered from the CLI.
func validateClient(c storage.Client) error {
	var ps problems
	if !validClientID(c.ID) {
		ps.add("--id", "must match [A-Za-z0-9._-]{1,64}")
	}
	if len(c.RedirectURIs) == 0 {
		ps.add("--redirect-uri", "at least one is required")
	}
	for _, raw := range c.RedirectURIs {
		checkRedirectURI(&ps, "--redirect-uri", raw)
	}
	for _, raw := range c.PostLogoutRedirectURIs {
		checkRedirectURI(&ps, "--post-logout-redirect-uri", raw)
	}
	if c.BackchannelLogoutURI != "" {
		checkRedirectURI(&ps, "--backchannel-logout-uri", c.BackchannelLogoutURI)
	}
	for _, g := range c.Groups {
		switch g {
		case provider.GroupsNames, provider.GroupsIDs, provider.GroupsPaths, provider.GroupsTags:
		default:
			ps.add("--groups", "must be names, ids, paths or tags, got %q", g)
		}
	}
	switch c.AuthMethod {
	case "", "client_secret_basic", "client_secret_post":
		if c.JWKS != "" || c.JWKSURI != "" {
			ps.add("--auth-method", "--jwks-file and --jwks-uri need private_key_jwt")
		}
	case provider.AuthMethodPrivateKeyJWT:
		switch {
		case c.Public:
			ps.add("--auth-method", "a public client authenticates with PKCE only")
		case (c.JWKS == "") == (c.JWKSURI == ""):
			ps.add("--jwks-file", "private_key_jwt needs exactly one of --jwks-file, --jwks-uri")
		case c.JWKS != "":
			if msg := checkPublicJWKS(c.JWKS); msg != "" {
				ps.add("--jwks-file", "%s", msg)
			}
		default:
			checkBaseURL(&ps, "--jwks-uri", c.JWKSURI)
		}
	default:
		ps.add("--auth-method", "must be client_secret_basic, client_secret_post or private_key_jwt")
	}
	if len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

func clientList(ctx context.Context, s storage.Store, stdout io.Writer) error {
	clients, err := s.ListClients(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tSOURCE\tREDIRECT URIS")
	for _, c := range clients {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ID, clientType(c), c.Source, strings.Join(c.RedirectURIs, " "))
	}
	return tw.Flush()
}

func clientShow(ctx context.Context, s storage.Store, id string, stdout io.Writer) error {
	c, err := s.GetClient(ctx, id)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("no client %q", id)
		}
		return err
	}
	fmt.Fprintf(stdout, "id:                        %s\n", c.ID)
	fmt.Fprintf(stdout, "name:                      %s\n", c.Name)
	fmt.Fprintf(stdout, "type:                      %s\n", clientType(c))
	fmt.Fprintf(stdout, "source:                    %s\n", c.Source)
	fmt.Fprintf(stdout, "redirect_uris:             %s\n", strings.Join(c.RedirectURIs, " "))
	fmt.Fprintf(stdout, "post_logout_redirect_uris: %s\n", strings.Join(c.PostLogoutRedirectURIs, " "))
	fmt.Fprintf(stdout, "id_token_claims:           %t\n", c.IDTokenClaims)
	if c.AuthMethod != "" {
		fmt.Fprintf(stdout, "auth_method:               %s\n", c.AuthMethod)
	}
	if c.JWKSURI != "" {
		fmt.Fprintf(stdout, "jwks_uri:                  %s\n", c.JWKSURI)
	}
	if c.BackchannelLogoutURI != "" {
		fmt.Fprintf(stdout, "backchannel_logout_uri:    %s\n", c.BackchannelLogoutURI)
	}
	fmt.Fprintf(stdout, "created:                   %s\n", c.CreatedAt.Format(time.RFC3339))
	return nil
}

func clientRemove(ctx context.Context, s storage.Store, id string, stdout io.Writer) error {
	c, err := s.GetClient(ctx, id)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("no client %q", id)
		}
		return err
	}
	if err := s.DeleteClient(ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed client %q\n", id)
	if c.Source == storage.SourceConfig {
		fmt.Fprintln(stdout, "note: it comes from the config file and returns at the next start unless removed there")
	}
	return nil
}

func clientType(c storage.Client) string {
	if c.Public {
		return "public"
	}
	return "confidential"
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

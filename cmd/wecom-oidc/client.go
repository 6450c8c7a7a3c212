package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/storage"
)

const clientUsage = `usage:
  wecom-oidc client add --id ID --redirect-uri URI [--redirect-uri URI ...] [--name NAME]
                        [--post-logout-redirect-uri URI ...] [--public] [--no-id-token-claims]
                        [--groups names|ids|paths|tags ...] [--backchannel-logout-uri URI]
                        [--device-flow]
                        [--auth-method private_key_jwt (--jwks-file FILE | --jwks-uri URI)]
  wecom-oidc client list
  wecom-oidc client show ID
  wecom-oidc client remove ID
  wecom-oidc client rotate-secret ID
(all take --config FILE; they work while the server runs, through its admin socket, and when it
is stopped; a change takes effect at once)`

// runClient: `wecom-oidc client …` — manage relying parties.
func runClient(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(clientUsage)
	}
	sub, rest := args[0], args[1:]
	wantArgs := 1
	switch sub {
	case "add", "list":
		wantArgs = 0
	case "show", "remove", "rotate-secret":
	default:
		return fmt.Errorf("unknown client command %q\n%s", sub, clientUsage)
	}
	fs, configPath := newFlagSet("client "+sub, getenv, stderr)
	var (
		id, name, backchannel         string
		authMethod, jwksFile, jwksURI string
		redirects, logouts, groups    stringList
		public, noIDTokenCls, device  bool
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
		fs.BoolVar(&device, "device-flow", false, "allow the device authorization grant (RFC 8628): command-line tools, devices without a browser")
		fs.StringVar(&authMethod, "auth-method", "", "token endpoint authentication: client_secret_basic (default) or private_key_jwt")
		fs.StringVar(&jwksFile, "jwks-file", "", "private_key_jwt: file holding the client's public JSON Web Key Set")
		fs.StringVar(&jwksURI, "jwks-uri", "", "private_key_jwt: URL where the client publishes its keys")
	}
	pos, err := parseArgs(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != wantArgs {
		if wantArgs == 0 {
			return fmt.Errorf("unexpected arguments: %s", strings.Join(pos, " "))
		}
		return fmt.Errorf("usage: wecom-oidc client %s ID [--config FILE]", sub)
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	var c storage.Client
	if sub == "add" {
		c = storage.Client{
			ID: id, Name: name, RedirectURIs: redirects, PostLogoutRedirectURIs: logouts,
			Public: public, IDTokenClaims: !noIDTokenCls, BackchannelLogoutURI: backchannel,
			AuthMethod: authMethod, JWKSURI: jwksURI, Groups: groups, DeviceFlow: device,
		}
		if jwksFile != "" {
			raw, err := os.ReadFile(jwksFile)
			if err != nil {
				return fmt.Errorf("--jwks-file: %w", err)
			}
			c.JWKS = string(raw)
		}
		// Checked here too, so that a mistake is reported before anything is opened.
		if err := validateClient(c); err != nil {
			return err
		}
	}

	return withAdmin(ctx, cfg, func(a admin) error {
		switch sub {
		case "add":
			res, err := a.AddClient(ctx, c)
			if err != nil {
				return err
			}
			printClientSecret(stdout, res, false)
			return nil
		case "list":
			cs, err := a.ListClients(ctx)
			if err != nil {
				return err
			}
			return printClients(stdout, cs)
		case "show":
			c, err := a.GetClient(ctx, pos[0])
			if err != nil {
				return err
			}
			printClient(stdout, c)
			return nil
		case "remove":
			c, err := a.RemoveClient(ctx, pos[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "removed client %q\n", c.ID)
			if c.Source == storage.SourceConfig {
				fmt.Fprintln(stdout, "note: it comes from the config file and returns at the next start unless removed there")
			}
			return nil
		default: // rotate-secret
			res, err := a.RotateClientSecret(ctx, pos[0])
			if err != nil {
				return err
			}
			printClientSecret(stdout, res, true)
			return nil
		}
	})
}

// printClientSecret prints a new client's id and its one-time secret.
func printClientSecret(w io.Writer, res clientSecret, rotated bool) {
	c := res.Client
	fmt.Fprintf(w, "client_id:     %s\n", c.ID)
	switch {
	case res.Secret != "" && rotated:
		fmt.Fprintf(w, "client_secret: %s\n(shown once; only its hash is stored; the previous secret no longer works)\n", res.Secret)
	case res.Secret != "":
		fmt.Fprintf(w, "client_secret: %s\n(shown once; only its hash is stored)\n", res.Secret)
	case c.Public:
		fmt.Fprintln(w, "public client: no secret; PKCE (S256) is required")
	default:
		fmt.Fprintln(w, "private_key_jwt client: authenticates with a JWT signed by its own key")
	}
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

func printClients(w io.Writer, clients []storage.Client) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tSOURCE\tREDIRECT URIS")
	for _, c := range clients {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ID, clientType(c), c.Source, strings.Join(c.RedirectURIs, " "))
	}
	return tw.Flush()
}

func printClient(w io.Writer, c storage.Client) {
	fmt.Fprintf(w, "id:                        %s\n", c.ID)
	fmt.Fprintf(w, "name:                      %s\n", c.Name)
	fmt.Fprintf(w, "type:                      %s\n", clientType(c))
	fmt.Fprintf(w, "source:                    %s\n", c.Source)
	fmt.Fprintf(w, "redirect_uris:             %s\n", strings.Join(c.RedirectURIs, " "))
	fmt.Fprintf(w, "post_logout_redirect_uris: %s\n", strings.Join(c.PostLogoutRedirectURIs, " "))
	fmt.Fprintf(w, "id_token_claims:           %t\n", c.IDTokenClaims)
	if c.AuthMethod != "" {
		fmt.Fprintf(w, "auth_method:               %s\n", c.AuthMethod)
	}
	if c.JWKSURI != "" {
		fmt.Fprintf(w, "jwks_uri:                  %s\n", c.JWKSURI)
	}
	if len(c.Groups) > 0 {
		fmt.Fprintf(w, "groups:                    %s\n", strings.Join(c.Groups, " "))
	}
	if c.BackchannelLogoutURI != "" {
		fmt.Fprintf(w, "backchannel_logout_uri:    %s\n", c.BackchannelLogoutURI)
	}
	if c.DeviceFlow {
		fmt.Fprintf(w, "device_flow:               true\n")
	}
	fmt.Fprintf(w, "created:                   %s\n", timeOrDash(c.CreatedAt))
	fmt.Fprintf(w, "updated:                   %s\n", timeOrDash(c.UpdatedAt))
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

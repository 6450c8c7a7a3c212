package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// exampleConfigPath is the shipped example, a documentation page and a fixture at once.
const exampleConfigPath = "../../config.example.yaml"

// envFunc is an injected getenv backed by m.
func envFunc(m map[string]string) func(string) string {
	return func(name string) string { return m[name] }
}

// mustWriteFile writes content to name in a fresh temporary directory and returns its path.
func mustWriteFile(tb testing.TB, name, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// mustLoadYAML loads yaml (written to a temporary file) with env as the environment.
func mustLoadYAML(tb testing.TB, yaml string, env map[string]string) *Config {
	tb.Helper()
	c, err := LoadConfig(mustWriteFile(tb, "config.yaml", yaml), envFunc(env))
	if err != nil {
		tb.Fatalf("LoadConfig: %v", err)
	}
	return c
}

// problemKeys is the list of keys in a Validate result; nil for a nil error.
func problemKeys(tb testing.TB, err error) []string {
	tb.Helper()
	if err == nil {
		return nil
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		tb.Fatalf("Validate error is %T (%v), want *ValidationError", err, err)
	}
	keys := make([]string, len(verr.Problems))
	for i, p := range verr.Problems {
		keys[i] = p.Key
	}
	return keys
}

// validYAML passes Validate(ModeServe) and is the base the rule tests break one key at a time.
const validYAML = `
issuer: https://sso.example.com
wecom:
  corp_id: ww0123456789abcdef
  agent_id: "1000002"
  secret: wecom-corp-secret
clients:
  - id: app
    secret: 0123456789abcdef
    redirect_uris: [https://app.example.com/cb]
`

func TestConfigExampleLoadsAndValidates(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"GRAFANA_CLIENT_SECRET":    "grafana-secret-0123456789",
		"WECOM_OIDC_WECOM__SECRET": "wecom-corp-secret",
	}
	c, err := LoadConfig(exampleConfigPath, envFunc(env))
	if err != nil {
		t.Fatalf("LoadConfig(%s): %v", exampleConfigPath, err)
	}
	if err := c.Validate(ModeServe); err != nil {
		t.Fatalf("Validate(ModeServe):\n%v", err)
	}
	if err := c.Validate(ModeDev); err != nil {
		t.Fatalf("Validate(ModeDev):\n%v", err)
	}
	if c.WeCom.Secret != "wecom-corp-secret" {
		t.Errorf("wecom.secret = %q, want it from the environment", c.WeCom.Secret)
	}
	if len(c.Clients) != 3 {
		t.Fatalf("got %d clients, want 3", len(c.Clients))
	}
	grafana, keycloak, spa := c.Clients[0], c.Clients[1], c.Clients[2]
	if keycloak.TokenEndpointAuthMethod != "private_key_jwt" || keycloak.JWKSURI == "" || keycloak.Secret != "" {
		t.Errorf("keycloak client = %+v", keycloak)
	}
	if grafana.ID != "grafana" || grafana.Secret != "grafana-secret-0123456789" || grafana.Public {
		t.Errorf("grafana client = %+v", grafana)
	}
	if !slices.Equal(grafana.RedirectURIs, []string{"https://grafana.example.com/login/generic_oauth"}) {
		t.Errorf("grafana redirect_uris = %q", grafana.RedirectURIs)
	}
	if !spa.Public || spa.Secret != "" || !spa.WantsIDTokenClaims() {
		t.Errorf("spa client = %+v", spa)
	}

	// Without the secrets the example names exactly what is missing.
	c, err = LoadConfig(exampleConfigPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"wecom.secret", "clients[0].secret_env"}
	if got := problemKeys(t, c.Validate(ModeServe)); !slices.Equal(got, want) {
		t.Errorf("without secrets: problem keys = %q, want %q", got, want)
	}
}

// TestConfigExampleDocumentsEveryKey keeps the example from drifting: every key of the format
// appears in it, and every environment-settable key has its variable named.
func TestConfigExampleDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(exampleConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	example := string(b)
	for _, k := range envKeys(reflect.TypeFor[Config](), "") {
		if name := envVar(k.path); !strings.Contains(example, name) {
			t.Errorf("%s: environment variable %s not documented", k.path, name)
		}
		leaf := k.path[strings.LastIndex(k.path, ".")+1:]
		if !strings.Contains(example, leaf+":") {
			t.Errorf("%s: key not shown", k.path)
		}
	}
	for f := range reflect.TypeFor[ClientConfig]().Fields() {
		if tag := f.Tag.Get("koanf"); tag != "" && !strings.Contains(example, tag+":") {
			t.Errorf("clients[].%s: key not shown", tag)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	want := Config{
		Listen:  "127.0.0.1:8080",
		Log:     LogConfig{Level: "info", Format: "text"},
		Storage: StorageConfig{Path: "./data/wecom-oidc.db"},
		WeCom: WeComConfig{
			Scope:        "snsapi_privateinfo",
			APIBaseURL:   "https://qyapi.weixin.qq.com",
			OAuthBaseURL: "https://open.weixin.qq.com",
			LoginBaseURL: "https://login.work.weixin.qq.com",
			Timeout:      10 * time.Second,
		},
		Tokens: TokensConfig{
			AccessTokenTTL:  time.Hour,
			IDTokenTTL:      time.Hour,
			RefreshTokenTTL: 720 * time.Hour,
			SessionTTL:      12 * time.Hour,
		},
		Claims: ClaimsConfig{Subject: "{userid}", EmailSources: []string{"biz_mail", "email"}},
	}
	for _, tc := range []struct {
		name string
		path string
	}{
		{"no file", ""},
		{"empty file", mustWriteFile(t, "empty.yaml", "")},
		{"comments only", mustWriteFile(t, "comments.yaml", "# nothing here\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := LoadConfig(tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("LoadConfig defaults:\n got %v\nwant %v", got, want)
			}
			// Defaults alone are a valid dev configuration.
			if err := got.Validate(ModeDev); err != nil {
				t.Errorf("Validate(ModeDev) on defaults:\n%v", err)
			}
		})
	}

	// A file sets some keys; the others keep their defaults, and a file list replaces the default list.
	c := mustLoadYAML(t, "tokens:\n  session_ttl: 8h\nclaims:\n  email_sources: [email]\n", nil)
	if c.Tokens.SessionTTL != 8*time.Hour || c.Tokens.AccessTokenTTL != time.Hour {
		t.Errorf("tokens = %+v, want session_ttl 8h from the file and the other defaults", c.Tokens)
	}
	if !slices.Equal(c.Claims.EmailSources, []string{"email"}) || c.Claims.Subject != "{userid}" {
		t.Errorf("claims = %+v", c.Claims)
	}
}

func TestConfigEnvOverridesFile(t *testing.T) {
	t.Parallel()
	const yaml = `
issuer: https://file.example.com
log:
  level: warn
wecom:
  secret: from-file
  timeout: 3s
tokens:
  session_ttl: 1h
claims:
  default_groups: [file-group]
  email_sources: [biz_mail]
`
	env := map[string]string{
		"WECOM_OIDC_ISSUER":                 "https://env.example.com",
		"WECOM_OIDC_WECOM__SECRET":          "from-env",
		"WECOM_OIDC_WECOM__AGENT_ID":        "1000005",
		"WECOM_OIDC_TOKENS__SESSION_TTL":    "8h",
		"WECOM_OIDC_CLAIMS__DEFAULT_GROUPS": "staff, sso,,",
		"WECOM_OIDC_CLAIMS__EMAIL_VERIFIED": "true",
		"WECOM_OIDC_DEV__AUTO_LOGIN":        "zhangsan",
		"WECOM_OIDC_LOG__LEVEL":             "", // empty counts as unset
	}
	c := mustLoadYAML(t, yaml, env)
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"issuer (top level)", c.Issuer, "https://env.example.com"},
		{"wecom.secret (nested)", c.WeCom.Secret, "from-env"},
		{"wecom.agent_id (not in the file)", c.WeCom.AgentID, "1000005"},
		{"tokens.session_ttl (duration)", c.Tokens.SessionTTL, 8 * time.Hour},
		{"claims.default_groups (list)", c.Claims.DefaultGroups, []string{"staff", "sso"}},
		{"claims.email_verified (bool)", c.Claims.EmailVerified, true},
		{"dev.auto_login", c.Dev.AutoLogin, "zhangsan"},
		{"log.level (empty variable keeps the file)", c.Log.Level, "warn"},
		{"wecom.timeout (file, no variable)", c.WeCom.Timeout, 3 * time.Second},
		{"claims.email_sources (file, no variable)", c.Claims.EmailSources, []string{"biz_mail"}},
		{"listen (default)", c.Listen, "127.0.0.1:8080"},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.key, tc.got, tc.want)
		}
	}
}

func TestConfigEnvKeys(t *testing.T) {
	t.Parallel()
	var names []string
	for _, k := range envKeys(reflect.TypeFor[Config](), "") {
		names = append(names, envVar(k.path))
	}
	for _, want := range []string{
		"WECOM_OIDC_ISSUER", "WECOM_OIDC_LOG__LEVEL", "WECOM_OIDC_WECOM__SECRET",
		"WECOM_OIDC_WECOM__API_BASE_URL", "WECOM_OIDC_TOKENS__REFRESH_TOKEN_TTL",
		"WECOM_OIDC_CLAIMS__DEFAULT_GROUPS", "WECOM_OIDC_DEV__AUTO_LOGIN",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing from %q", want, names)
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, "WECOM_OIDC_CLIENTS") {
			t.Errorf("clients must have no environment form, got %s", n)
		}
	}
	if len(names) != 24 {
		t.Errorf("got %d environment keys, want 24 (update this test when adding a key): %q", len(names), names)
	}
}

func TestConfigLoadErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string // written to a file unless path is set
		path string
		env  map[string]string
		want []string // substrings of the error
		is   error
	}{
		{
			name: "unknown top-level key",
			yaml: "isuer: https://sso.example.com\n",
			want: []string{"config.yaml", "unknown key(s): isuer"},
		},
		{
			name: "unknown nested keys",
			yaml: "wecom:\n  corpid: ww1\n  secrte: x\ntokens:\n  ttl: 1h\n",
			want: []string{"config.yaml", "wecom.corpid", "wecom.secrte", "tokens.ttl"},
		},
		{
			name: "unknown key in a client",
			yaml: "clients:\n  - id: a\n    client_secret: x\n",
			want: []string{"config.yaml", "unknown key(s): clients[0].client_secret"},
		},
		{
			name: "key in the wrong case",
			yaml: "Issuer: https://sso.example.com\n",
			want: []string{"unknown key(s): Issuer"},
		},
		{
			name: "malformed YAML",
			yaml: "issuer: [https://sso.example.com\nlisten: :8080\n",
			want: []string{"config.yaml", "malformed YAML"},
		},
		{
			name: "tab indentation",
			yaml: "wecom:\n\tcorp_id: ww1\n",
			want: []string{"config.yaml", "malformed YAML"},
		},
		{
			name: "top level is a list",
			yaml: "- issuer\n",
			want: []string{"config.yaml", "malformed YAML"},
		},
		{
			name: "missing file",
			path: filepath.Join(t.TempDir(), "nope.yaml"),
			want: []string{"nope.yaml", "no such file"},
			is:   fs.ErrNotExist,
		},
		{
			name: "invalid duration",
			yaml: "tokens:\n  session_ttl: 12 hours\n",
			want: []string{"config.yaml", "tokens.session_ttl", "unknown unit", "10s, 15m"},
		},
		{
			name: "duration without a unit",
			yaml: "wecom:\n  timeout: 10\n",
			want: []string{"config.yaml", "wecom.timeout", "has no unit"},
		},
		{
			name: "map where a string belongs",
			yaml: "issuer:\n  url: https://sso.example.com\n",
			want: []string{"config.yaml", "issuer"},
		},
		{
			name: "string where a block belongs",
			yaml: "log: debug\n",
			want: []string{"config.yaml", "log"},
		},
		{
			name: "invalid duration in the environment",
			env:  map[string]string{"WECOM_OIDC_TOKENS__SESSION_TTL": "forever"},
			want: []string{"WECOM_OIDC_TOKENS__SESSION_TTL", "invalid duration"},
		},
		{
			name: "invalid boolean in the environment",
			env:  map[string]string{"WECOM_OIDC_CLAIMS__EMAIL_VERIFIED": "yes please"},
			want: []string{"WECOM_OIDC_CLAIMS__EMAIL_VERIFIED", "invalid boolean"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := tc.path
			if path == "" {
				path = mustWriteFile(t, "config.yaml", tc.yaml)
			}
			c, err := LoadConfig(path, envFunc(tc.env))
			if err == nil {
				t.Fatalf("LoadConfig succeeded: %v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestConfigYAMLForms(t *testing.T) {
	t.Parallel()
	c := mustLoadYAML(t, `
wecom:
  agent_id: 1000002         # a YAML number for a string key
claims:
  email_sources: email      # a single string for a list
clients:
  - id: spa
    public: true
    redirect_uris: [https://app.example.com/cb]
    id_token_claims: false
  - id: other
    public: true
    redirect_uris: [https://other.example.com/cb]
`, nil)
	if c.WeCom.AgentID != "1000002" {
		t.Errorf("agent_id = %q", c.WeCom.AgentID)
	}
	if !slices.Equal(c.Claims.EmailSources, []string{"email"}) {
		t.Errorf("email_sources = %q", c.Claims.EmailSources)
	}
	if c.Clients[0].WantsIDTokenClaims() || !c.Clients[1].WantsIDTokenClaims() {
		t.Errorf("WantsIDTokenClaims = %v, %v; want false (set), true (default)",
			c.Clients[0].WantsIDTokenClaims(), c.Clients[1].WantsIDTokenClaims())
	}
}

// validateCase breaks one thing in validYAML and names the problem keys that must come out.
type validateCase struct {
	name   string
	mode   Mode
	mutate func(c *Config)
	want   []string // exact problem keys, in order; nil = valid
}

func (tc validateCase) run(t *testing.T) {
	t.Helper()
	t.Parallel()
	c := mustLoadYAML(t, validYAML, nil)
	tc.mutate(c)
	err := c.Validate(tc.mode)
	if got := problemKeys(t, err); !slices.Equal(got, tc.want) {
		t.Errorf("problem keys = %q, want %q\n%v", got, tc.want, err)
	}
}

func TestConfigValidateRules(t *testing.T) {
	t.Parallel()
	if err := mustLoadYAML(t, validYAML, nil).Validate(ModeServe); err != nil {
		t.Fatalf("the base configuration is invalid:\n%v", err)
	}
	issuer := func(s string) func(*Config) { return func(c *Config) { c.Issuer = s } }
	listen := func(s string) func(*Config) { return func(c *Config) { c.Listen = s } }
	client := func(f func(*ClientConfig)) func(*Config) { return func(c *Config) { f(&c.Clients[0]) } }
	redirect := func(s string) func(*Config) {
		return client(func(cl *ClientConfig) { cl.RedirectURIs = []string{s} })
	}
	cases := []validateCase{
		{"issuer required in serve mode", ModeServe, issuer(""), []string{"issuer"}},
		{"issuer optional in dev mode", ModeDev, issuer(""), nil},
		{"issuer with a path", ModeServe, issuer("https://example.com/sso"), nil},
		{"issuer http on localhost", ModeServe, issuer("http://localhost:8080"), nil},
		{"issuer http on 127.0.0.0/8", ModeServe, issuer("http://127.0.0.2:8080"), nil},
		{"issuer http on ::1", ModeServe, issuer("http://[::1]:8080"), nil},
		{"issuer http elsewhere", ModeServe, issuer("http://sso.example.com"), []string{"issuer"}},
		{"issuer http elsewhere in dev", ModeDev, issuer("http://192.168.1.2:8080"), []string{"issuer"}},
		{"issuer not absolute", ModeServe, issuer("sso.example.com"), []string{"issuer"}},
		{"issuer other scheme", ModeServe, issuer("ftp://sso.example.com"), []string{"issuer"}},
		{"issuer without host", ModeServe, issuer("https:///path"), []string{"issuer"}},
		{"issuer trailing slash", ModeServe, issuer("https://sso.example.com/"), []string{"issuer"}},
		{"issuer query", ModeServe, issuer("https://sso.example.com?tenant=1"), []string{"issuer"}},
		{"issuer fragment", ModeServe, issuer("https://sso.example.com#x"), []string{"issuer"}},
		{"issuer userinfo", ModeServe, issuer("https://admin@sso.example.com"), []string{"issuer"}},
		{"issuer not a URL", ModeServe, issuer("https://sso example.com"), []string{"issuer"}},

		{"listen required", ModeServe, listen(""), []string{"listen"}},
		{"listen without port", ModeServe, listen("localhost"), []string{"listen"}},
		{"listen with a named port", ModeServe, listen("127.0.0.1:http"), []string{"listen"}},
		{"listen port out of range", ModeServe, listen(":65536"), []string{"listen"}},
		{"listen any host, port 0", ModeServe, listen(":0"), nil},
		{"listen on IPv6", ModeServe, listen("[::1]:8080"), nil},

		{"log.level", ModeServe, func(c *Config) { c.Log.Level = "verbose" }, []string{"log.level"}},
		{"log.format", ModeServe, func(c *Config) { c.Log.Format = "xml" }, []string{"log.format"}},
		{"storage.path", ModeServe, func(c *Config) { c.Storage.Path = "" }, []string{"storage.path"}},

		{"wecom.corp_id required", ModeServe, func(c *Config) { c.WeCom.CorpID = "" }, []string{"wecom.corp_id"}},
		{"wecom.agent_id required", ModeServe, func(c *Config) { c.WeCom.AgentID = "" }, []string{"wecom.agent_id"}},
		{"wecom.agent_id digits", ModeServe, func(c *Config) { c.WeCom.AgentID = "10000x" }, []string{"wecom.agent_id"}},
		{"wecom.agent_id digits in dev", ModeDev, func(c *Config) { c.WeCom.AgentID = "x" }, []string{"wecom.agent_id"}},
		{"wecom.secret required", ModeServe, func(c *Config) { c.WeCom.Secret = "" }, []string{"wecom.secret"}},
		{"wecom secret and secret_file", ModeServe, func(c *Config) { c.WeCom.SecretFile = "/run/secrets/wecom" }, []string{"wecom.secret"}},
		{"wecom block optional in dev", ModeDev, func(c *Config) {
			c.WeCom = WeComConfig{Scope: "snsapi_base", APIBaseURL: "http://127.0.0.1:9000", OAuthBaseURL: "http://127.0.0.1:9000", LoginBaseURL: "http://127.0.0.1:9000", Timeout: time.Second}
		}, nil},
		{"wecom.scope", ModeServe, func(c *Config) { c.WeCom.Scope = "snsapi_userinfo" }, []string{"wecom.scope"}},
		{"wecom.scope base", ModeServe, func(c *Config) { c.WeCom.Scope = "snsapi_base" }, nil},
		{"wecom.api_base_url relative", ModeServe, func(c *Config) { c.WeCom.APIBaseURL = "qyapi.weixin.qq.com" }, []string{"wecom.api_base_url"}},
		{"wecom.oauth_base_url scheme", ModeServe, func(c *Config) { c.WeCom.OAuthBaseURL = "ftp://open.weixin.qq.com" }, []string{"wecom.oauth_base_url"}},
		{"wecom.login_base_url empty", ModeServe, func(c *Config) { c.WeCom.LoginBaseURL = "" }, []string{"wecom.login_base_url"}},
		{"wecom.api_base_url query", ModeServe, func(c *Config) { c.WeCom.APIBaseURL = "https://qyapi.weixin.qq.com?x=1" }, []string{"wecom.api_base_url"}},
		{"wecom base URL over http", ModeServe, func(c *Config) { c.WeCom.APIBaseURL = "http://127.0.0.1:9000/" }, nil},
		{"wecom.timeout", ModeServe, func(c *Config) { c.WeCom.Timeout = 0 }, []string{"wecom.timeout"}},

		{"tokens.access_token_ttl", ModeServe, func(c *Config) { c.Tokens.AccessTokenTTL = 0 }, []string{"tokens.access_token_ttl"}},
		{"tokens.id_token_ttl", ModeServe, func(c *Config) { c.Tokens.IDTokenTTL = -time.Second }, []string{"tokens.id_token_ttl"}},
		{"tokens.refresh_token_ttl", ModeServe, func(c *Config) { c.Tokens.RefreshTokenTTL = 0 }, []string{"tokens.refresh_token_ttl"}},
		{"tokens.session_ttl", ModeServe, func(c *Config) { c.Tokens.SessionTTL = 0 }, []string{"tokens.session_ttl"}},
		{"refresh shorter than access", ModeServe, func(c *Config) { c.Tokens.RefreshTokenTTL = 30 * time.Minute }, []string{"tokens.refresh_token_ttl"}},
		{"refresh equal to access", ModeServe, func(c *Config) { c.Tokens.RefreshTokenTTL = c.Tokens.AccessTokenTTL }, nil},

		{"subject required", ModeServe, func(c *Config) { c.Claims.Subject = "" }, []string{"claims.subject"}},
		{"subject without {userid}", ModeServe, func(c *Config) { c.Claims.Subject = "{corp_id}" }, []string{"claims.subject"}},
		{"subject with ':'", ModeServe, func(c *Config) { c.Claims.Subject = "wecom:{userid}" }, []string{"claims.subject"}},
		{"subject unknown placeholder", ModeServe, func(c *Config) { c.Claims.Subject = "{userid}.{name}" }, []string{"claims.subject"}},
		{"subject stray brace", ModeServe, func(c *Config) { c.Claims.Subject = "{userid}}" }, []string{"claims.subject"}},
		{"subject with corp_id", ModeServe, func(c *Config) { c.Claims.Subject = "{corp_id}.{userid}" }, nil},
		{"email_sources empty", ModeServe, func(c *Config) { c.Claims.EmailSources = nil }, []string{"claims.email_sources"}},
		{"email_sources unknown", ModeServe, func(c *Config) { c.Claims.EmailSources = []string{"email", "mobile"} }, []string{"claims.email_sources[1]"}},
		{"email_sources duplicate", ModeServe, func(c *Config) { c.Claims.EmailSources = []string{"email", "email"} }, []string{"claims.email_sources[1]"}},
		{"email_fallback without {userid}", ModeServe, func(c *Config) { c.Claims.EmailFallback = "nobody@corp.example" }, []string{"claims.email_fallback"}},
		{"email_fallback without @", ModeServe, func(c *Config) { c.Claims.EmailFallback = "{userid}.corp.example" }, []string{"claims.email_fallback"}},
		{"email_fallback unknown placeholder", ModeServe, func(c *Config) { c.Claims.EmailFallback = "{userid}@{domain}" }, []string{"claims.email_fallback"}},
		{"email_fallback valid", ModeServe, func(c *Config) { c.Claims.EmailFallback = "{userid}@{corp_id}.corp.example" }, nil},
		{"default_groups empty item", ModeServe, func(c *Config) { c.Claims.DefaultGroups = []string{"staff", " "} }, []string{"claims.default_groups[1]"}},

		{"client id required", ModeServe, client(func(cl *ClientConfig) { cl.ID = "" }), []string{"clients[0].id"}},
		{"client id characters", ModeServe, client(func(cl *ClientConfig) { cl.ID = "my app" }), []string{"clients[0].id"}},
		{"client id length", ModeServe, client(func(cl *ClientConfig) { cl.ID = strings.Repeat("a", 65) }), []string{"clients[0].id"}},
		{"client id longest", ModeServe, client(func(cl *ClientConfig) { cl.ID = strings.Repeat("a", 64) }), nil},
		{"client id unique", ModeServe, func(c *Config) { c.Clients = append(c.Clients, c.Clients[0]) }, []string{"clients[1].id"}},
		{"redirect_uris required", ModeServe, client(func(cl *ClientConfig) { cl.RedirectURIs = nil }), []string{"clients[0].redirect_uris"}},
		{"redirect http allowed", ModeServe, redirect("http://localhost:3000/cb?x=1"), nil},
		{"redirect javascript:", ModeServe, redirect("javascript:alert(1)"), []string{"clients[0].redirect_uris[0]"}},
		{"redirect data:", ModeServe, redirect("data:text/html,<script>"), []string{"clients[0].redirect_uris[0]"}},
		{"redirect custom scheme", ModeServe, redirect("com.example.app:/oauth2redirect"), []string{"clients[0].redirect_uris[0]"}},
		{"redirect relative", ModeServe, redirect("/callback"), []string{"clients[0].redirect_uris[0]"}},
		{"redirect without host", ModeServe, redirect("https:///cb"), []string{"clients[0].redirect_uris[0]"}},
		{"redirect fragment", ModeServe, redirect("https://app.example.com/cb#x"), []string{"clients[0].redirect_uris[0]"}},
		{"redirect userinfo", ModeServe, redirect("https://user:pw@app.example.com/cb"), []string{"clients[0].redirect_uris[0]"}},
		{"second redirect bad", ModeServe, client(func(cl *ClientConfig) { cl.RedirectURIs = append(cl.RedirectURIs, "ftp://x/") }), []string{"clients[0].redirect_uris[1]"}},
		{"post-logout redirect bad", ModeServe, client(func(cl *ClientConfig) {
			cl.PostLogoutRedirectURIs = []string{"https://app.example.com/", "myapp://out"}
		}), []string{"clients[0].post_logout_redirect_uris[1]"}},
		{"confidential without secret", ModeServe, client(func(cl *ClientConfig) { cl.Secret = "" }), []string{"clients[0].secret"}},
		{"confidential short secret", ModeServe, client(func(cl *ClientConfig) { cl.Secret = "fifteen-chars!!" }), []string{"clients[0].secret"}},
		{"confidential two sources", ModeServe, client(func(cl *ClientConfig) { cl.SecretEnv = "APP_SECRET" }), []string{"clients[0].secret"}},
		{"public without secret", ModeServe, client(func(cl *ClientConfig) { cl.Public, cl.Secret = true, "" }), nil},
		{"public with secret", ModeServe, client(func(cl *ClientConfig) { cl.Public = true }), []string{"clients[0].secret"}},
		{"public with secret_env and secret_file", ModeServe, client(func(cl *ClientConfig) {
			cl.Public, cl.Secret, cl.SecretEnv, cl.SecretFile = true, "", "APP_SECRET", "/run/secrets/app"
		}), []string{"clients[0].secret_env", "clients[0].secret_file"}},
		{"client rules in dev mode too", ModeDev, redirect("javascript:alert(1)"), []string{"clients[0].redirect_uris[0]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.run)
	}
}

// TestConfigValidateReportsEveryProblem is what `config check` relies on: one call lists every
// problem, in file order, not only the first.
func TestConfigValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := mustLoadYAML(t, `
issuer: http://sso.example.com/
listen: localhost
log:
  level: verbose
  format: xml
storage:
  path: ""
wecom:
  corp_id: ""
  agent_id: abc
  secret: inline
  secret_file: /nonexistent/wecom-secret
  scope: snsapi_userinfo
  api_base_url: ftp://qyapi.weixin.qq.com
  timeout: 0s
tokens:
  access_token_ttl: 2h
  refresh_token_ttl: 1h
  session_ttl: 0s
claims:
  subject: "user:{name}"
  email_sources: [biz_mail, phone, biz_mail]
  email_fallback: "{userid}"
  default_groups: ["", staff]
clients:
  - id: "bad id!"
    secret: 0123456789abcdef
  - id: dup
    public: true
    secret_env: DUP_SECRET
    redirect_uris: ["javascript:alert(1)"]
  - id: dup
    secret: short
    redirect_uris: ["https://u:p@app.example.com/cb#frag"]
    post_logout_redirect_uris: ["myapp://logged-out"]
  - id: envless
    secret_env: MISSING_SECRET
    redirect_uris: [https://ok.example.com/cb]
`, map[string]string{"DUP_SECRET": "0123456789abcdef"})
	err := c.Validate(ModeServe)
	want := []string{
		"issuer", "issuer", // http off loopback; trailing slash
		"listen",
		"log.level",
		"log.format",
		"storage.path",
		"wecom.corp_id",
		"wecom.agent_id",
		"wecom.secret", // secret and secret_file
		"wecom.scope",
		"wecom.api_base_url",
		"wecom.timeout",
		"tokens.session_ttl",
		"tokens.refresh_token_ttl",
		"claims.subject", "claims.subject", "claims.subject", // no {userid}; ':'; {name}
		"claims.email_sources[1]",
		"claims.email_sources[2]",
		"claims.email_fallback",
		"claims.default_groups[0]",
		"clients[0].id",
		"clients[0].redirect_uris",
		"clients[1].redirect_uris[0]",
		"clients[1].secret_env",
		"clients[2].redirect_uris[0]", "clients[2].redirect_uris[0]", // userinfo; fragment
		"clients[2].post_logout_redirect_uris[0]",
		"clients[2].secret",
		"clients[2].id", // duplicate of clients[1]
		"clients[3].secret_env",
	}
	if got := problemKeys(t, err); !slices.Equal(got, want) {
		t.Fatalf("problem keys:\n got %q\nwant %q\n%v", got, want, err)
	}
	// One line per problem, `key: message`.
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("Error() has %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i, line := range lines {
		if !strings.HasPrefix(line, want[i]+": ") || len(line) <= len(want[i])+2 {
			t.Errorf("line %d = %q, want %q followed by a message", i, line, want[i]+": ")
		}
	}
	if !strings.Contains(err.Error(), "clients[3].secret_env: environment variable MISSING_SECRET is empty or unset") {
		t.Errorf("missing the unresolved secret_env message:\n%v", err)
	}
}

func TestConfigSecretResolution(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeSecret := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	wecomFile := writeSecret("wecom", "wecom-secret-from-file\n")
	clientFile := writeSecret("client", "client-secret-from-file \r\n\n")
	emptyFile := writeSecret("empty", "\n")
	missingFile := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		name       string
		wecom      string // YAML lines under wecom:
		client     string // YAML lines of clients[0] besides id and redirect_uris
		env        map[string]string
		wantWeCom  string
		wantClient string
		wantKeys   []string
		wantMsg    string
	}{
		{
			name:       "files, trailing whitespace trimmed",
			wecom:      "secret_file: " + wecomFile,
			client:     "secret_file: " + clientFile,
			wantWeCom:  "wecom-secret-from-file",
			wantClient: "client-secret-from-file",
		},
		{
			name:       "client secret from the environment",
			wecom:      "secret: inline-wecom",
			client:     "secret_env: APP_SECRET",
			env:        map[string]string{"APP_SECRET": "env-secret-0123456789"},
			wantWeCom:  "inline-wecom",
			wantClient: "env-secret-0123456789",
		},
		{
			name:       "wecom secret from the environment",
			client:     "secret: inline-client-0123456789",
			env:        map[string]string{"WECOM_OIDC_WECOM__SECRET": "env-wecom"},
			wantWeCom:  "env-wecom",
			wantClient: "inline-client-0123456789",
		},
		{
			name:      "client secret_env unset",
			wecom:     "secret: w",
			wantWeCom: "w",
			client:    "secret_env: APP_SECRET",
			wantKeys:  []string{"clients[0].secret_env"},
			wantMsg:   "APP_SECRET is empty or unset",
		},
		{
			name:     "secret files missing",
			wecom:    "secret_file: " + missingFile,
			client:   "secret_file: " + missingFile,
			wantKeys: []string{"wecom.secret_file", "clients[0].secret_file"},
			wantMsg:  "cannot read",
		},
		{
			name:     "secret files empty",
			wecom:    "secret_file: " + emptyFile,
			client:   "secret_file: " + emptyFile,
			wantKeys: []string{"wecom.secret_file", "clients[0].secret_file"},
			wantMsg:  "is empty",
		},
		{
			name:       "an empty secret_env beside secret_file counts as unset",
			wecom:      "secret: w",
			client:     "secret_file: " + wecomFile + "\n    secret_env: \"\"",
			wantWeCom:  "w",
			wantClient: "wecom-secret-from-file",
		},
		{
			name:      "client secret_env and secret_file both set",
			wecom:     "secret: w",
			client:    "secret_env: APP_SECRET\n    secret_file: " + clientFile,
			env:       map[string]string{"APP_SECRET": "env-secret-0123456789"},
			wantWeCom: "w",
			wantKeys:  []string{"clients[0].secret"},
			wantMsg:   "set only one of secret_env, secret_file",
		},
		{
			name:       "wecom secret from the environment and secret_file",
			wecom:      "secret_file: " + wecomFile,
			client:     "secret: inline-client-0123456789",
			env:        map[string]string{"WECOM_OIDC_WECOM__SECRET": "env-wecom"},
			wantWeCom:  "env-wecom",
			wantClient: "inline-client-0123456789",
			wantKeys:   []string{"wecom.secret"},
			wantMsg:    "set only one of secret and secret_file",
		},
		{
			name:      "public client: the environment is not consulted",
			wecom:     "secret: w",
			client:    "public: true\n    secret_env: APP_SECRET",
			env:       map[string]string{"APP_SECRET": "env-secret-0123456789"},
			wantWeCom: "w",
			wantKeys:  []string{"clients[0].secret_env"},
			wantMsg:   "public client must not have a secret",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			yaml := fmt.Sprintf(`issuer: https://sso.example.com
wecom:
  corp_id: ww1
  agent_id: "1"
  %s
clients:
  - id: app
    redirect_uris: [https://app.example.com/cb]
    %s
`, tc.wecom, tc.client)
			c := mustLoadYAML(t, yaml, tc.env)
			if c.WeCom.Secret != tc.wantWeCom {
				t.Errorf("wecom.Secret = %q, want %q", c.WeCom.Secret, tc.wantWeCom)
			}
			if c.Clients[0].Secret != tc.wantClient {
				t.Errorf("clients[0].Secret = %q, want %q", c.Clients[0].Secret, tc.wantClient)
			}
			err := c.Validate(ModeServe)
			if got := problemKeys(t, err); !slices.Equal(got, tc.wantKeys) {
				t.Errorf("problem keys = %q, want %q\n%v", got, tc.wantKeys, err)
			}
			if tc.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMsg)) {
				t.Errorf("error %v does not contain %q", err, tc.wantMsg)
			}
		})
	}

	// A failed wecom lookup does not matter in dev mode: the simulated WeCom needs no secret.
	c := mustLoadYAML(t, "wecom:\n  secret_file: "+missingFile+"\n", nil)
	if err := c.Validate(ModeDev); err != nil {
		t.Errorf("Validate(ModeDev) with an unreadable wecom.secret_file:\n%v", err)
	}
}

func TestConfigRedaction(t *testing.T) {
	t.Parallel()
	secretFile := mustWriteFile(t, "s", "client-secret-from-file\n")
	c := mustLoadYAML(t, `
issuer: https://sso.example.com
wecom:
  corp_id: ww1
  agent_id: "1"
clients:
  - id: inline
    secret: inline-client-secret-1
    redirect_uris: [https://a.example.com/cb]
  - id: fromenv
    secret_env: APP_SECRET
    redirect_uris: [https://b.example.com/cb]
  - id: fromfile
    secret_file: `+secretFile+`
    redirect_uris: [https://c.example.com/cb]
`, map[string]string{
		"WECOM_OIDC_WECOM__SECRET": "wecom-corp-secret-1",
		"APP_SECRET":               "env-client-secret-1",
	})
	secrets := []string{"wecom-corp-secret-1", "inline-client-secret-1", "env-client-secret-1", "client-secret-from-file"}
	if c.WeCom.Secret != secrets[0] || c.Clients[0].Secret != secrets[1] ||
		c.Clients[1].Secret != secrets[2] || c.Clients[2].Secret != secrets[3] {
		t.Fatalf("secrets not loaded: %q %q %q %q", c.WeCom.Secret, c.Clients[0].Secret, c.Clients[1].Secret, c.Clients[2].Secret)
	}

	var outputs []struct{ how, out string }
	add := func(how, out string) { outputs = append(outputs, struct{ how, out string }{how, out}) }
	for _, verb := range []string{"%v", "%+v", "%s", "%#v", "%q"} {
		add(verb+" *Config", fmt.Sprintf(verb, c))
		add(verb+" Config", fmt.Sprintf(verb, *c))
		add(verb+" WeComConfig", fmt.Sprintf(verb, c.WeCom))
		add(verb+" []ClientConfig", fmt.Sprintf(verb, c.Clients))
		add(verb+" ClientConfig", fmt.Sprintf(verb, c.Clients[1]))
	}
	for _, h := range []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	} {
		var b bytes.Buffer
		log := slog.New(h.new(&b))
		log.Info("loaded", "config", c, "value", *c, "wecom", c.WeCom, "clients", c.Clients, "client", c.Clients[0])
		add("slog "+h.name, b.String())
	}

	for _, o := range outputs {
		for _, s := range secrets {
			if strings.Contains(o.out, s) {
				t.Errorf("%s leaks %q:\n%s", o.how, s, o.out)
			}
		}
		if !strings.Contains(o.out, redactedText) {
			t.Errorf("%s shows no %s:\n%s", o.how, redactedText, o.out)
		}
	}

	// Printing still shows the non-secret settings, keyed like the file.
	s := c.String()
	for _, want := range []string{"issuer=https://sso.example.com", "wecom.corp_id=ww1", "wecom.secret=" + redactedText,
		"clients[1].secret_env=APP_SECRET", "tokens.session_ttl=12h0m0s", "claims.email_sources=[biz_mail,email]"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "config", c)
	for _, want := range []string{`"clients":{"0":{"id":"inline"`, `"secret":"[REDACTED]"`, `"agent_id":"1"`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("JSON log lacks %s:\n%s", want, b.String())
		}
	}
}

func TestIssuerOrDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		issuer, listen, want string
	}{
		{"https://sso.example.com", "0.0.0.0:8080", "https://sso.example.com"},
		{"", "127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"", "0.0.0.0:8080", "http://127.0.0.1:8080"},
		{"", ":9000", "http://127.0.0.1:9000"},
		{"", "[::]:9000", "http://127.0.0.1:9000"},
		{"", "localhost:5556", "http://localhost:5556"},
		{"", "[::1]:5556", "http://[::1]:5556"},
	} {
		c := &Config{Issuer: tc.issuer, Listen: tc.listen}
		if got := c.IssuerOrDefault(); got != tc.want {
			t.Errorf("IssuerOrDefault(issuer %q, listen %q) = %q, want %q", tc.issuer, tc.listen, got, tc.want)
		}
	}
}

func TestWantsIDTokenClaims(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	for _, tc := range []struct {
		v    *bool
		want bool
	}{{nil, true}, {&yes, true}, {&no, false}} {
		if got := (ClientConfig{IDTokenClaims: tc.v}).WantsIDTokenClaims(); got != tc.want {
			t.Errorf("WantsIDTokenClaims(%v) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

// TestClientAuthMethodRules: the private_key_jwt and back-channel client keys.
func TestClientAuthMethodRules(t *testing.T) {
	const pub = `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`
	const priv = `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}]}`
	tests := []struct {
		name string
		cl   ClientConfig
		want []string
	}{
		{"private_key_jwt with inline public keys", ClientConfig{TokenEndpointAuthMethod: "private_key_jwt", JWKS: pub}, nil},
		{"private_key_jwt with jwks_uri", ClientConfig{TokenEndpointAuthMethod: "private_key_jwt", JWKSURI: "https://rp.example/jwks"}, nil},
		{"private_key_jwt without keys", ClientConfig{TokenEndpointAuthMethod: "private_key_jwt"}, []string{"clients[0].jwks"}},
		{"private_key_jwt with both", ClientConfig{TokenEndpointAuthMethod: "private_key_jwt", JWKS: pub, JWKSURI: "https://rp.example/jwks"}, []string{"clients[0].jwks"}},
		{"private key material refused", ClientConfig{TokenEndpointAuthMethod: "private_key_jwt", JWKS: priv}, []string{"clients[0].jwks"}},
		{"private_key_jwt with a secret", ClientConfig{TokenEndpointAuthMethod: "private_key_jwt", JWKS: pub, Secret: "0123456789abcdef0"}, []string{"clients[0].secret"}},
		{"jwks without private_key_jwt", ClientConfig{Secret: "0123456789abcdef0", JWKS: pub}, []string{"clients[0].token_endpoint_auth_method"}},
		{"unknown method", ClientConfig{Secret: "0123456789abcdef0", TokenEndpointAuthMethod: "tls_client_auth"}, []string{"clients[0].token_endpoint_auth_method"}},
		{"bad back-channel URI", ClientConfig{Secret: "0123456789abcdef0", BackchannelLogoutURI: "javascript:alert(1)"}, []string{"clients[0].backchannel_logout_uri"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cl.ID, tt.cl.RedirectURIs = "c", []string{"https://rp.example/cb"}
			var ps problems
			tt.cl.validate(&ps, "clients[0].")
			var got []string
			for _, p := range ps {
				got = append(got, p.Key)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("problems %v, want keys %v", ps, tt.want)
			}
		})
	}
}

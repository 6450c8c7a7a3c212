package main

import (
	"bytes"
	"encoding/json"
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
	if !slices.Equal(grafana.Groups, []string{"names"}) || spa.Groups != nil {
		t.Errorf("groups = %q (grafana), %q (spa); want [names], none", grafana.Groups, spa.Groups)
	}
	if want := map[string]string{"employee_id": "extattr.工号"}; !reflect.DeepEqual(c.Claims.Extra, want) {
		t.Errorf("claims.extra = %q, want %q", c.Claims.Extra, want)
	}
	if c.WeCom.Tags || c.WeCom.SecretEnv != "" || c.Tokens.RecheckInterval != 10*time.Minute || c.Tokens.RecheckGrace != 2*time.Hour {
		t.Errorf("wecom.tags %v, wecom.secret_env %q, tokens.recheck_* %v %v", c.WeCom.Tags, c.WeCom.SecretEnv,
			c.Tokens.RecheckInterval, c.Tokens.RecheckGrace)
	}
	if ups := c.EffectiveUpstreams(); len(c.Upstreams) != 0 || len(ups) != 1 || ups[0].ID != "wecom" {
		t.Errorf("the example uses the wecom block: upstreams %v, effective %v", c.Upstreams, ups)
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
	}
	keys := fileKeys(reflect.TypeFor[Config](), "")
	for _, want := range []string{"upstreams[].wecom.secret_env", "upstreams[].name_en", "claims.extra", "clients[].groups"} {
		if !slices.Contains(keys, want) {
			t.Fatalf("fileKeys misses %s: %q", want, keys)
		}
	}
	for _, path := range keys {
		leaf := path[strings.LastIndexAny(path, ".]")+1:]
		if !strings.Contains(example, leaf+":") {
			t.Errorf("%s: key not shown", path)
		}
	}
}

// fileKeys lists every key path of struct type t, with or without an environment form; the
// elements of a list of structs appear as "clients[].id".
func fileKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for f := range t.Fields() {
		tag := f.Tag.Get("koanf")
		if tag == "" || !f.IsExported() {
			continue
		}
		path := prefix + tag
		keys = append(keys, path)
		switch {
		case f.Type.Kind() == reflect.Struct && !isDuration(f.Type):
			keys = append(keys, fileKeys(f.Type, path+".")...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			keys = append(keys, fileKeys(f.Type.Elem(), path+"[].")...)
		}
	}
	return keys
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	want := Config{
		Listen:  "127.0.0.1:8080",
		Log:     LogConfig{Level: "info", Format: "text"},
		Storage: StorageConfig{Backend: BackendBolt, Path: "./data/wecom-oidc.db", SweepInterval: time.Minute},
		WeCom: WeComConfig{
			Scope:        "snsapi_privateinfo",
			APIBaseURL:   "https://qyapi.weixin.qq.com",
			OAuthBaseURL: "https://open.weixin.qq.com",
			LoginBaseURL: "https://login.work.weixin.qq.com",
			Timeout:      10 * time.Second,
			DesktopScan:  "off",
		},
		Tokens: TokensConfig{
			AccessTokenTTL:  time.Hour,
			IDTokenTTL:      time.Hour,
			RefreshTokenTTL: 720 * time.Hour,
			SessionTTL:      12 * time.Hour,
			RecheckInterval: 10 * time.Minute,
			RecheckGrace:    2 * time.Hour,
		},
		Claims: ClaimsConfig{Subject: "{userid}", EmailSources: []string{"biz_mail", "email"}},
		Keys:   KeysConfig{Algorithm: "RS256", RotationPeriod: 720 * time.Hour, Retention: 24 * time.Hour},
		HTTP: HTTPConfig{
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxConcurrentRequests: 512,
		},
		Dev: DevConfig{DesktopScan: "offer"},
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
		"WECOM_OIDC_WECOM__SECRET_ENV", "WECOM_OIDC_WECOM__TAGS",
		"WECOM_OIDC_TOKENS__RECHECK_INTERVAL", "WECOM_OIDC_TOKENS__RECHECK_GRACE",
		"WECOM_OIDC_KEYS__ALGORITHM", "WECOM_OIDC_KEYS__ROTATION_PERIOD", "WECOM_OIDC_KEYS__RETENTION",
		"WECOM_OIDC_HTTP__READ_HEADER_TIMEOUT", "WECOM_OIDC_HTTP__READ_TIMEOUT",
		"WECOM_OIDC_HTTP__WRITE_TIMEOUT", "WECOM_OIDC_HTTP__IDLE_TIMEOUT", "WECOM_OIDC_ADMIN__SOCKET",
		"WECOM_OIDC_HTTP__MAX_CONCURRENT_REQUESTS",
		"WECOM_OIDC_STORAGE__BACKEND", "WECOM_OIDC_STORAGE__ETCD__ENDPOINTS", "WECOM_OIDC_STORAGE__ETCD__PREFIX",
		"WECOM_OIDC_STORAGE__ETCD__USERNAME", "WECOM_OIDC_STORAGE__ETCD__PASSWORD",
		"WECOM_OIDC_STORAGE__ETCD__PASSWORD_FILE", "WECOM_OIDC_STORAGE__ETCD__PASSWORD_ENV",
		"WECOM_OIDC_STORAGE__ETCD__TLS__CA_FILE", "WECOM_OIDC_STORAGE__ETCD__TLS__CERT_FILE",
		"WECOM_OIDC_STORAGE__ETCD__TLS__KEY_FILE", "WECOM_OIDC_STORAGE__ETCD__TLS__SERVER_NAME",
		"WECOM_OIDC_STORAGE__ETCD__DIAL_TIMEOUT", "WECOM_OIDC_STORAGE__ETCD__REQUEST_TIMEOUT",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("%s missing from %q", want, names)
		}
	}
	for _, n := range names {
		for _, none := range []string{"WECOM_OIDC_CLIENTS", "WECOM_OIDC_UPSTREAMS", "WECOM_OIDC_CLAIMS__EXTRA"} {
			if strings.HasPrefix(n, none) {
				t.Errorf("lists of structs and maps must have no environment form, got %s", n)
			}
		}
	}
	if len(names) != 54 {
		t.Errorf("got %d environment keys, want 54 (update this test when adding a key): %q", len(names), names)
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
		{
			name: "invalid wecom.tags in the environment",
			env:  map[string]string{"WECOM_OIDC_WECOM__TAGS": "maybe"},
			want: []string{"WECOM_OIDC_WECOM__TAGS", "invalid boolean"},
		},
		{
			name: "invalid recheck interval in the environment",
			env:  map[string]string{"WECOM_OIDC_TOKENS__RECHECK_INTERVAL": "10"},
			want: []string{"WECOM_OIDC_TOKENS__RECHECK_INTERVAL", "invalid duration"},
		},
		{
			name: "unknown key in an upstream",
			yaml: "upstreams:\n  - id: a\n    corp_id: ww1\n    wecom:\n      secrte: x\n",
			want: []string{"config.yaml", "upstreams[0].corp_id", "upstreams[0].wecom.secrte"},
		},
		{
			name: "recheck duration without a unit",
			yaml: "tokens:\n  recheck_grace: 7200\n",
			want: []string{"config.yaml", "tokens.recheck_grace", "has no unit"},
		},
		{
			name: "claims.extra not a map",
			yaml: "claims:\n  extra: [alias]\n",
			want: []string{"config.yaml", "claims.extra"},
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
	extra := func(m map[string]string) func(*Config) { return func(c *Config) { c.Claims.Extra = m } }
	groups := func(g ...string) func(*Config) { return client(func(cl *ClientConfig) { cl.Groups = g }) }
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
		{"wecom secret and secret_env", ModeServe, func(c *Config) { c.WeCom.SecretEnv = "CORP_SECRET" }, []string{"wecom.secret"}},
		{"wecom secret, secret_env and secret_file", ModeServe, func(c *Config) {
			c.WeCom.SecretEnv, c.WeCom.SecretFile = "CORP_SECRET", "/run/secrets/wecom"
		}, []string{"wecom.secret"}},
		{"wecom secret_env not resolved", ModeServe, func(c *Config) { c.WeCom.Secret, c.WeCom.SecretEnv = "", "CORP_SECRET" }, []string{"wecom.secret_env"}},
		{"wecom.tags", ModeServe, func(c *Config) { c.WeCom.Tags = true }, nil},
		{"wecom block optional in dev", ModeDev, func(c *Config) {
			c.WeCom = WeComConfig{Scope: "snsapi_base", APIBaseURL: "http://127.0.0.1:9000", OAuthBaseURL: "http://127.0.0.1:9000", LoginBaseURL: "http://127.0.0.1:9000", Timeout: time.Second, DesktopScan: "off"}
		}, nil},
		{"wecom.scope", ModeServe, func(c *Config) { c.WeCom.Scope = "snsapi_userinfo" }, []string{"wecom.scope"}},
		{"wecom.scope base", ModeServe, func(c *Config) { c.WeCom.Scope = "snsapi_base" }, nil},
		{"wecom.desktop_scan prefer", ModeServe, func(c *Config) { c.WeCom.DesktopScan = "prefer" }, nil},
		{"wecom.desktop_scan unknown", ModeServe, func(c *Config) { c.WeCom.DesktopScan = "always" }, []string{"wecom.desktop_scan"}},
		{"dev.desktop_scan unknown", ModeDev, func(c *Config) { c.Dev.DesktopScan = "on" }, []string{"dev.desktop_scan"}},
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
		{"tokens.recheck_interval zero", ModeServe, func(c *Config) { c.Tokens.RecheckInterval = 0 }, []string{"tokens.recheck_interval"}},
		{"tokens.recheck_grace negative", ModeServe, func(c *Config) { c.Tokens.RecheckGrace = -time.Minute }, []string{"tokens.recheck_grace"}},
		{"recheck durations zero in dev", ModeDev, func(c *Config) { c.Tokens.RecheckInterval, c.Tokens.RecheckGrace = 0, 0 },
			[]string{"tokens.recheck_interval", "tokens.recheck_grace"}},
		{"recheck grace shorter than interval", ModeServe, func(c *Config) { c.Tokens.RecheckGrace = time.Minute }, nil},

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
		{"extra claims valid", ModeServe, extra(map[string]string{
			"employee_id": "extattr.工号", "nick": "alias", "title": "position", "dept": "main_department",
		}), nil},
		{"extra replaces a standard claim", ModeServe, extra(map[string]string{"email": "alias"}), []string{"claims.extra.email"}},
		{"extra replaces groups", ModeServe, extra(map[string]string{"groups": "position"}), []string{"claims.extra.groups"}},
		{"extra unknown source", ModeServe, extra(map[string]string{"phone": "mobile"}), []string{"claims.extra.phone"}},
		{"extra extattr without a name", ModeServe, extra(map[string]string{"x": "extattr."}), []string{"claims.extra.x"}},
		{"extra empty claim name", ModeServe, extra(map[string]string{"": "alias"}), []string{"claims.extra."}},
		{"extra problems in claim order", ModeServe, extra(map[string]string{"zz": "bad", "aa": "", "mm": "alias"}),
			[]string{"claims.extra.aa", "claims.extra.zz"}},
		{"extra in dev mode too", ModeDev, extra(map[string]string{"sub": "alias"}), []string{"claims.extra.sub"}},

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

		{"groups all shapes", ModeServe, groups("tags", "paths", "ids", "names"), nil},
		{"groups empty list", ModeServe, groups(), nil},
		{"groups unknown shape", ModeServe, groups("names", "departments"), []string{"clients[0].groups[1]"}},
		{"groups wrong case", ModeServe, groups("Names"), []string{"clients[0].groups[0]"}},
		{"groups empty item", ModeServe, groups(""), []string{"clients[0].groups[0]"}},
		{"groups duplicate", ModeServe, groups("ids", "paths", "ids"), []string{"clients[0].groups[2]"}},
		{"groups on a public client", ModeServe, client(func(cl *ClientConfig) {
			cl.Public, cl.Secret, cl.Groups = true, "", []string{"names", "names", "x"}
		}), []string{"clients[0].groups[1]", "clients[0].groups[2]"}},
		{"groups of the second client", ModeServe, func(c *Config) {
			c.Clients = append(c.Clients, ClientConfig{ID: "b", Public: true, RedirectURIs: []string{"https://b.example.com/cb"}, Groups: []string{"roles"}})
		}, []string{"clients[1].groups[0]"}},
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
			name:       "wecom secret from secret_env",
			wecom:      "secret_env: CORP_SECRET",
			client:     "secret: inline-client-0123456789",
			env:        map[string]string{"CORP_SECRET": "env-named-wecom"},
			wantWeCom:  "env-named-wecom",
			wantClient: "inline-client-0123456789",
		},
		{
			name:       "wecom secret_env unset",
			wecom:      "secret_env: CORP_SECRET",
			client:     "secret: inline-client-0123456789",
			wantClient: "inline-client-0123456789",
			wantKeys:   []string{"wecom.secret_env"},
			wantMsg:    "environment variable CORP_SECRET is empty or unset",
		},
		{
			name:       "wecom secret_env and secret_file",
			wecom:      "secret_env: CORP_SECRET\n  secret_file: " + wecomFile,
			client:     "secret: inline-client-0123456789",
			env:        map[string]string{"CORP_SECRET": "env-named-wecom"},
			wantClient: "inline-client-0123456789",
			wantKeys:   []string{"wecom.secret"},
			wantMsg:    "set only one of secret_env and secret_file",
		},
		{
			name:       "wecom secret from the environment and secret_env",
			wecom:      "secret_env: CORP_SECRET",
			client:     "secret: inline-client-0123456789",
			env:        map[string]string{"CORP_SECRET": "env-named-wecom", "WECOM_OIDC_WECOM__SECRET": "env-wecom"},
			wantWeCom:  "env-wecom",
			wantClient: "inline-client-0123456789",
			wantKeys:   []string{"wecom.secret"},
			wantMsg:    "set only one of secret and secret_env",
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

// upstreamsYAML has two upstreams behind one issuer: hq with its secret from secret_env and its
// own subject; sub with its secret from a file (%s) and claims.subject, its name and most of its
// wecom block from the defaults.
const upstreamsYAML = `
issuer: https://sso.example.com
wecom:
  timeout: 5s
upstreams:
  - id: hq
    name: 总部
    name_en: Headquarters
    wecom:
      corp_id: wwhq0123456789
      agent_id: "1000002"
      secret_env: HQ_SECRET
      tags: true
    subject: "{corp_id}.{userid}"
  - id: sub
    wecom:
      corp_id: wwsub0123456789
      agent_id: 1000005
      secret_file: %s
      api_base_url: http://127.0.0.1:9000
claims:
  subject: "{corp_id}.{userid}"
clients:
  - id: app
    secret: 0123456789abcdef
    redirect_uris: [https://app.example.com/cb]
    groups: [paths, tags]
`

// loadUpstreams loads upstreamsYAML with sub's secret in a file and env as the environment
// (nil: HQ_SECRET set).
func loadUpstreams(tb testing.TB, env map[string]string) *Config {
	tb.Helper()
	if env == nil {
		env = map[string]string{"HQ_SECRET": "hq-corp-secret"}
	}
	file := mustWriteFile(tb, "sub-secret", "sub-corp-secret\n")
	return mustLoadYAML(tb, fmt.Sprintf(upstreamsYAML, file), env)
}

func TestConfigUpstreamsLoad(t *testing.T) {
	t.Parallel()
	c := loadUpstreams(t, nil)
	for _, mode := range []Mode{ModeServe, ModeDev} {
		if err := c.Validate(mode); err != nil {
			t.Fatalf("Validate(%d):\n%v", mode, err)
		}
	}
	if len(c.Upstreams) != 2 {
		t.Fatalf("got %d upstreams, want 2", len(c.Upstreams))
	}
	hq, sub := c.Upstreams[0], c.Upstreams[1]
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"upstreams[0].id", hq.ID, "hq"},
		{"upstreams[0].name", hq.Name, "总部"},
		{"upstreams[0].name_en", hq.NameEN, "Headquarters"},
		{"upstreams[0].wecom.corp_id", hq.WeCom.CorpID, "wwhq0123456789"},
		{"upstreams[0].wecom.secret (secret_env)", hq.WeCom.Secret, "hq-corp-secret"},
		{"upstreams[0].wecom.tags", hq.WeCom.Tags, true},
		{"upstreams[0].subject", hq.Subject, "{corp_id}.{userid}"},
		{"upstreams[0].wecom.timeout (the wecom block's)", hq.WeCom.Timeout, 5 * time.Second},
		{"upstreams[1].name (default: id)", sub.Name, "sub"},
		{"upstreams[1].name_en (default: name)", sub.NameEN, "sub"},
		{"upstreams[1].wecom.agent_id (a YAML number)", sub.WeCom.AgentID, "1000005"},
		{"upstreams[1].wecom.secret (secret_file)", sub.WeCom.Secret, "sub-corp-secret"},
		{"upstreams[1].wecom.tags (default)", sub.WeCom.Tags, false},
		{"upstreams[1].wecom.api_base_url (own)", sub.WeCom.APIBaseURL, "http://127.0.0.1:9000"},
		{"upstreams[1].wecom.oauth_base_url (default)", sub.WeCom.OAuthBaseURL, "https://open.weixin.qq.com"},
		{"upstreams[1].wecom.login_base_url (default)", sub.WeCom.LoginBaseURL, "https://login.work.weixin.qq.com"},
		{"upstreams[1].wecom.scope (default)", sub.WeCom.Scope, "snsapi_privateinfo"},
		{"upstreams[1].wecom.timeout (the wecom block's)", sub.WeCom.Timeout, 5 * time.Second},
		{"upstreams[1].subject (claims.subject)", sub.Subject, ""},
		{"clients[0].groups", c.Clients[0].Groups, []string{"paths", "tags"}},
		{"wecom.secret (not resolved beside upstreams)", c.WeCom.Secret, ""},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.key, tc.got, tc.want)
		}
	}
	if got := c.EffectiveUpstreams(); !reflect.DeepEqual(got, c.Upstreams) {
		t.Errorf("EffectiveUpstreams() = %v, want the upstreams list %v", got, c.Upstreams)
	}
}

// TestConfigUpstreamsExample: the commented-out upstreams example in config.example.yaml, taken
// as it is, loads and validates.
func TestConfigUpstreamsExample(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(exampleConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n# upstreams:\n")
	if !ok {
		t.Fatal("config.example.yaml has no commented-out `# upstreams:` example")
	}
	yaml := "issuer: https://sso.example.com\nupstreams:\n"
	for line := range strings.Lines(rest) {
		item, ok := strings.CutPrefix(line, "# ")
		if !ok {
			break
		}
		yaml += item
	}
	env := map[string]string{"WECOM_HQ_SECRET": "hq-secret", "WECOM_SUB_SECRET": "sub-secret"}
	c := mustLoadYAML(t, yaml, env)
	if err := c.Validate(ModeServe); err != nil {
		t.Fatalf("Validate(ModeServe) of\n%s\n%v", yaml, err)
	}
	if len(c.Upstreams) != 2 || c.Upstreams[0].WeCom.Secret != "hq-secret" || c.Upstreams[1].WeCom.Secret != "sub-secret" {
		t.Errorf("upstreams = %v", c.Upstreams)
	}
	for _, u := range c.Upstreams {
		if u.Subject != "{corp_id}.{userid}" {
			t.Errorf("upstream %s subject = %q, want {corp_id}.{userid}", u.ID, u.Subject)
		}
	}
}

func TestConfigUpstreamsRules(t *testing.T) {
	t.Parallel()
	up := func(i int, f func(*UpstreamConfig)) func(*Config) {
		return func(c *Config) { f(&c.Upstreams[i]) }
	}
	id := func(i int, s string) func(*Config) { return up(i, func(u *UpstreamConfig) { u.ID = s }) }
	subjects := func(hq, sub string) func(*Config) {
		return func(c *Config) { c.Upstreams[0].Subject, c.Upstreams[1].Subject = hq, sub }
	}
	for _, tc := range []struct {
		name   string
		mode   Mode
		mutate func(*Config)
		want   []string
	}{
		{"valid", ModeServe, func(*Config) {}, nil},
		{"one upstream", ModeServe, func(c *Config) { c.Upstreams = c.Upstreams[:1] }, nil},
		{"one upstream with {userid}", ModeServe, func(c *Config) {
			c.Upstreams, c.Claims.Subject = c.Upstreams[1:], "{userid}"
		}, nil},

		{"wecom names a corp too", ModeServe, func(c *Config) { c.WeCom.CorpID = "ww1" }, []string{"wecom.corp_id"}},
		{"wecom names a corp too, dev", ModeDev, func(c *Config) { c.WeCom.CorpID = "ww1" }, []string{"wecom.corp_id"}},
		{"wecom names an app and a secret too", ModeServe, func(c *Config) {
			c.WeCom.AgentID, c.WeCom.Secret, c.WeCom.SecretEnv, c.WeCom.SecretFile, c.WeCom.Tags = "1", "s", "E", "/f", true
		}, []string{"wecom.agent_id", "wecom.secret", "wecom.secret_env", "wecom.secret_file", "wecom.tags"}},
		{"wecom endpoints still checked", ModeServe, func(c *Config) { c.WeCom.LoginBaseURL = "ftp://x" }, []string{"wecom.login_base_url"}},

		{"id required", ModeServe, id(1, ""), []string{"upstreams[1].id"}},
		{"id upper case", ModeServe, id(1, "Sub"), []string{"upstreams[1].id"}},
		{"id underscore", ModeServe, id(0, "h_q"), []string{"upstreams[0].id"}},
		{"id at sign", ModeServe, id(0, "hq@corp"), []string{"upstreams[0].id"}},
		{"id too long", ModeServe, id(1, strings.Repeat("a", 33)), []string{"upstreams[1].id"}},
		{"id longest", ModeServe, id(1, strings.Repeat("a", 32)), nil},
		{"id with digits and hyphens", ModeServe, id(1, "sub-2"), nil},
		{"id duplicate", ModeServe, id(1, "hq"), []string{"upstreams[1].id"}},
		{"ids duplicate in dev", ModeDev, id(1, "hq"), []string{"upstreams[1].id"}},

		{"corp_id required", ModeServe, up(1, func(u *UpstreamConfig) { u.WeCom.CorpID = "" }), []string{"upstreams[1].wecom.corp_id"}},
		{"corp_id optional in dev", ModeDev, up(1, func(u *UpstreamConfig) { u.WeCom.CorpID, u.WeCom.AgentID = "", "" }), nil},
		{"agent_id required", ModeServe, up(0, func(u *UpstreamConfig) { u.WeCom.AgentID = "" }), []string{"upstreams[0].wecom.agent_id"}},
		{"agent_id digits", ModeServe, up(0, func(u *UpstreamConfig) { u.WeCom.AgentID = "x1" }), []string{"upstreams[0].wecom.agent_id"}},
		{"secret required", ModeServe, up(0, func(u *UpstreamConfig) { u.WeCom.Secret, u.WeCom.SecretEnv = "", "" }), []string{"upstreams[0].wecom.secret"}},
		{"secret not needed in dev", ModeDev, up(0, func(u *UpstreamConfig) { u.WeCom.Secret, u.WeCom.SecretEnv = "", "" }), nil},
		{"secret_env and secret_file", ModeServe, up(0, func(u *UpstreamConfig) { u.WeCom.SecretFile = "/f" }), []string{"upstreams[0].wecom.secret"}},
		{"inline secret", ModeServe, up(1, func(u *UpstreamConfig) { u.WeCom.Secret, u.WeCom.SecretFile = "inline", "" }), nil},
		{"scope", ModeServe, up(1, func(u *UpstreamConfig) { u.WeCom.Scope = "snsapi_userinfo" }), []string{"upstreams[1].wecom.scope"}},
		{"base URL", ModeServe, up(1, func(u *UpstreamConfig) { u.WeCom.OAuthBaseURL = "open.weixin.qq.com" }), []string{"upstreams[1].wecom.oauth_base_url"}},
		{"timeout", ModeServe, up(1, func(u *UpstreamConfig) { u.WeCom.Timeout = 0 }), []string{"upstreams[1].wecom.timeout"}},
		{"problems of both, in order", ModeServe, func(c *Config) {
			c.Upstreams[0].ID, c.Upstreams[0].WeCom.CorpID = "HQ", ""
			c.Upstreams[1].WeCom.AgentID, c.Upstreams[1].WeCom.Timeout = "abc", -1
		}, []string{"upstreams[0].id", "upstreams[0].wecom.corp_id", "upstreams[1].wecom.agent_id", "upstreams[1].wecom.timeout"}},

		{"subject with ':'", ModeServe, subjects("hq:{userid}", "sub-{userid}"), []string{"upstreams[0].subject"}},
		{"subject without {userid}", ModeServe, subjects("hq-{corp_id}", "sub-{userid}"), []string{"upstreams[0].subject"}},
		{"subject unknown placeholder", ModeServe, subjects("hq-{userid}", "sub-{name}.{userid}"), []string{"upstreams[1].subject"}},
		{"subjects with distinct prefixes", ModeServe, subjects("hq-{userid}", "sub-{userid}"), nil},
		{"subjects both {userid}", ModeServe, subjects("{userid}", "{userid}"), []string{"upstreams"}},
		{"subject default collides", ModeServe, func(c *Config) {
			c.Upstreams[0].Subject, c.Claims.Subject = "", "{userid}"
		}, []string{"upstreams"}},
		{"subject one prefix of the other", ModeServe, subjects("a-{userid}", "a-b-{userid}"), []string{"upstreams"}},
		{"subjects {corp_id} with the same corp", ModeServe, up(1, func(u *UpstreamConfig) { u.WeCom.CorpID = "wwhq0123456789" }), []string{"upstreams"}},
		{"subjects {corp_id} without a separator", ModeServe, subjects("{corp_id}{userid}", "{corp_id}{userid}"), []string{"upstreams"}},
		{"subjects collide in dev too", ModeDev, subjects("{userid}", "{userid}"), []string{"upstreams"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := loadUpstreams(t, nil)
			tc.mutate(c)
			err := c.Validate(tc.mode)
			if got := problemKeys(t, err); !slices.Equal(got, tc.want) {
				t.Errorf("problem keys = %q, want %q\n%v", got, tc.want, err)
			}
		})
	}
}

func TestConfigUpstreamsSecrets(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name     string
		yaml     string // the upstreams list
		env      map[string]string
		want     []string
		wantMsg  string
		wantKeys []string // secrets as resolved, per upstream
	}{
		{
			name: "secret_env unset",
			yaml: "  - id: a\n    wecom: {corp_id: wwa, agent_id: '1', secret_env: A_SECRET}\n",
			want: []string{"upstreams[0].wecom.secret_env"}, wantMsg: "environment variable A_SECRET is empty or unset",
		},
		{
			name: "secret_file missing",
			yaml: "  - id: a\n    wecom: {corp_id: wwa, agent_id: '1', secret_file: " + missing + "}\n",
			want: []string{"upstreams[0].wecom.secret_file"}, wantMsg: "cannot read",
		},
		{
			name: "secret and secret_env",
			yaml: "  - id: a\n    wecom: {corp_id: wwa, agent_id: '1', secret: s, secret_env: A_SECRET}\n",
			env:  map[string]string{"A_SECRET": "from-env"},
			want: []string{"upstreams[0].wecom.secret"}, wantMsg: "set only one of secret and secret_env",
			wantKeys: []string{"s"},
		},
		{
			name: "no secret",
			yaml: "  - id: a\n    wecom: {corp_id: wwa, agent_id: '1'}\n",
			want: []string{"upstreams[0].wecom.secret"}, wantMsg: "required (set secret_env, secret_file or secret)",
		},
		{
			name: "each from its own variable",
			yaml: "  - id: a\n    wecom: {corp_id: wwa, agent_id: '1', secret_env: A_SECRET}\n    subject: a-{userid}\n" +
				"  - id: b\n    wecom: {corp_id: wwb, agent_id: '2', secret_env: B_SECRET}\n    subject: b-{userid}\n",
			env:      map[string]string{"A_SECRET": "secret-a", "B_SECRET": "secret-b"},
			wantKeys: []string{"secret-a", "secret-b"},
		},
		{
			name: "the top-level wecom secret from the environment beside upstreams",
			yaml: "  - id: a\n    wecom: {corp_id: wwa, agent_id: '1', secret_env: A_SECRET}\n",
			env:  map[string]string{"A_SECRET": "secret-a", "WECOM_OIDC_WECOM__SECRET": "stale"},
			want: []string{"wecom.secret"}, wantMsg: "use either wecom or upstreams",
			wantKeys: []string{"secret-a"},
		},
		{
			name: "the top-level wecom corp from the environment beside upstreams",
			yaml: "  - id: a\n    wecom: {corp_id: wwa, agent_id: '1', secret_env: A_SECRET}\n",
			env:  map[string]string{"A_SECRET": "secret-a", "WECOM_OIDC_WECOM__CORP_ID": "ww1"},
			want: []string{"wecom.corp_id"}, wantMsg: "wecom.corp_id: use either wecom or upstreams",
			wantKeys: []string{"secret-a"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := mustLoadYAML(t, "issuer: https://sso.example.com\nupstreams:\n"+tc.yaml, tc.env)
			err := c.Validate(ModeServe)
			if got := problemKeys(t, err); !slices.Equal(got, tc.want) {
				t.Errorf("problem keys = %q, want %q\n%v", got, tc.want, err)
			}
			if tc.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMsg)) {
				t.Errorf("error %v does not contain %q", err, tc.wantMsg)
			}
			for i, want := range tc.wantKeys {
				if got := c.Upstreams[i].WeCom.Secret; got != want {
					t.Errorf("upstreams[%d].wecom.secret = %q, want %q", i, got, want)
				}
			}
		})
	}
}

// TestConfigEnvNewKeys: the environment form of wecom.tags, wecom.secret_env and tokens.recheck_*.
func TestConfigEnvNewKeys(t *testing.T) {
	t.Parallel()
	c := mustLoadYAML(t, validYAML+"tokens:\n  recheck_interval: 1m\n", map[string]string{
		"WECOM_OIDC_WECOM__TAGS":              "true",
		"WECOM_OIDC_TOKENS__RECHECK_INTERVAL": "5m",
		"WECOM_OIDC_TOKENS__RECHECK_GRACE":    "90m",
	})
	if !c.WeCom.Tags || c.Tokens.RecheckInterval != 5*time.Minute || c.Tokens.RecheckGrace != 90*time.Minute {
		t.Errorf("wecom.tags = %v, tokens.recheck_interval = %v, recheck_grace = %v; want true, 5m, 1h30m",
			c.WeCom.Tags, c.Tokens.RecheckInterval, c.Tokens.RecheckGrace)
	}

	// secret_env from the environment names the variable that holds the secret.
	yaml := strings.Replace(validYAML, "  secret: wecom-corp-secret\n", "", 1)
	c = mustLoadYAML(t, yaml, map[string]string{
		"WECOM_OIDC_WECOM__SECRET_ENV": "CORP_SECRET",
		"CORP_SECRET":                  "named-corp-secret",
	})
	if c.WeCom.SecretEnv != "CORP_SECRET" || c.WeCom.Secret != "named-corp-secret" {
		t.Errorf("wecom.secret_env = %q, secret = %q", c.WeCom.SecretEnv, c.WeCom.Secret)
	}
	if err := c.Validate(ModeServe); err != nil {
		t.Errorf("Validate:\n%v", err)
	}
	// …and a variable it names that is unset is a problem under wecom.secret_env.
	c = mustLoadYAML(t, yaml, map[string]string{"WECOM_OIDC_WECOM__SECRET_ENV": "CORP_SECRET"})
	if got, want := problemKeys(t, c.Validate(ModeServe)), []string{"wecom.secret_env"}; !slices.Equal(got, want) {
		t.Errorf("problem keys = %q, want %q", got, want)
	}
}

func TestConfigRedactsUpstreamSecrets(t *testing.T) {
	t.Parallel()
	c := loadUpstreams(t, map[string]string{"HQ_SECRET": "hq-corp-secret-1"})
	c.Upstreams = append(c.Upstreams, UpstreamConfig{ID: "inline", WeCom: WeComConfig{CorpID: "wwi", Secret: "inline-corp-secret-1"}})
	secrets := []string{"hq-corp-secret-1", "sub-corp-secret", "inline-corp-secret-1", "0123456789abcdef"}
	if c.Upstreams[0].WeCom.Secret != secrets[0] || c.Upstreams[1].WeCom.Secret != secrets[1] {
		t.Fatalf("secrets not loaded: %q %q", c.Upstreams[0].WeCom.Secret, c.Upstreams[1].WeCom.Secret)
	}

	var outputs []struct{ how, out string }
	add := func(how, out string) { outputs = append(outputs, struct{ how, out string }{how, out}) }
	for _, verb := range []string{"%v", "%+v", "%s", "%#v", "%q"} {
		add(verb+" *Config", fmt.Sprintf(verb, c))
		add(verb+" Config", fmt.Sprintf(verb, *c))
		add(verb+" []UpstreamConfig", fmt.Sprintf(verb, c.Upstreams))
		add(verb+" UpstreamConfig", fmt.Sprintf(verb, c.Upstreams[0]))
		add(verb+" EffectiveUpstreams", fmt.Sprintf(verb, c.EffectiveUpstreams()))
	}
	for _, v := range []any{c, c.Upstreams, c.Upstreams[1]} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		add(fmt.Sprintf("json %T", v), string(b))
	}
	for _, h := range []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	} {
		var b bytes.Buffer
		slog.New(h.new(&b)).Info("loaded", "config", c, "upstreams", c.Upstreams, "upstream", c.Upstreams[2])
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

	s := c.String()
	for _, want := range []string{"upstreams[0].id=hq", "upstreams[0].wecom.secret=" + redactedText,
		"upstreams[0].wecom.secret_env=HQ_SECRET", "upstreams[1].wecom.secret=" + redactedText,
		"upstreams[2].wecom.secret=" + redactedText, "upstreams[0].subject={corp_id}.{userid}",
		"clients[0].groups=[paths,tags]", "tokens.recheck_interval=10m0s"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"upstreams":[{`, `"name":"总部"`, `"tags":true`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
}

// TestConfigPrintsClaimsExtra: the claims.extra map prints keyed like the file.
func TestConfigPrintsClaimsExtra(t *testing.T) {
	t.Parallel()
	c := mustLoadYAML(t, validYAML+"claims:\n  extra:\n    title: position\n    employee_id: extattr.工号\n", nil)
	if want := map[string]string{"title": "position", "employee_id": "extattr.工号"}; !reflect.DeepEqual(c.Claims.Extra, want) {
		t.Fatalf("claims.extra = %q, want %q", c.Claims.Extra, want)
	}
	if s, want := c.String(), "claims.extra.employee_id=extattr.工号 claims.extra.title=position"; !strings.Contains(s, want) {
		t.Errorf("String() lacks %q:\n%s", want, s)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"extra":{"employee_id":"extattr.工号","title":"position"}`; !strings.Contains(string(b), want) {
		t.Errorf("JSON lacks %s:\n%s", want, b)
	}
}

func TestEffectiveUpstreams(t *testing.T) {
	t.Parallel()
	// No upstreams list: the wecom block is the one upstream.
	c := mustLoadYAML(t, validYAML, nil)
	want := []UpstreamConfig{{ID: "wecom", Name: "企业微信", NameEN: "WeCom", WeCom: c.WeCom, Subject: ""}}
	if got := c.EffectiveUpstreams(); !reflect.DeepEqual(got, want) {
		t.Errorf("EffectiveUpstreams() = %v, want %v", got, want)
	}
	if got := c.EffectiveUpstreams()[0].WeCom.Secret; got != "wecom-corp-secret" {
		t.Errorf("the one upstream's secret = %q, want the wecom block's", got)
	}

	// A list: itself, defaults filled in, as a copy.
	c = loadUpstreams(t, nil)
	got := c.EffectiveUpstreams()
	if !reflect.DeepEqual(got, c.Upstreams) {
		t.Errorf("EffectiveUpstreams() = %v, want %v", got, c.Upstreams)
	}
	got[0].ID = "changed"
	if c.Upstreams[0].ID != "hq" {
		t.Error("EffectiveUpstreams returned the configuration's own slice")
	}

	// A Config not made by LoadConfig gets the same defaults.
	c = &Config{
		WeCom:     WeComConfig{Scope: "snsapi_base", APIBaseURL: "https://api", OAuthBaseURL: "https://oauth", LoginBaseURL: "https://login", Timeout: 3 * time.Second},
		Upstreams: []UpstreamConfig{{ID: "a", WeCom: WeComConfig{CorpID: "wwa", Timeout: time.Second}}, {ID: "b", Name: "乙"}},
	}
	got = c.EffectiveUpstreams()
	wantUps := []UpstreamConfig{
		{ID: "a", Name: "a", NameEN: "a", WeCom: WeComConfig{CorpID: "wwa", Scope: "snsapi_base", APIBaseURL: "https://api",
			OAuthBaseURL: "https://oauth", LoginBaseURL: "https://login", Timeout: time.Second}},
		{ID: "b", Name: "乙", NameEN: "乙", WeCom: WeComConfig{Scope: "snsapi_base", APIBaseURL: "https://api",
			OAuthBaseURL: "https://oauth", LoginBaseURL: "https://login", Timeout: 3 * time.Second}},
	}
	if !reflect.DeepEqual(got, wantUps) {
		t.Errorf("EffectiveUpstreams() =\n %v\nwant\n %v", got, wantUps)
	}
	if c.Upstreams[0].Name != "" {
		t.Error("EffectiveUpstreams changed the configuration")
	}
}

// TestConfigTrustedProxies: http.trusted_proxies reaches the provider as prefixes; anything that
// is not an address prefix is a problem named by its position.
func TestConfigTrustedProxies(t *testing.T) {
	t.Parallel()
	c := mustLoadYAML(t, `
http:
  trusted_proxies: [10.0.0.0/8, "2001:db8::1/128"]
`, nil)
	got := c.HTTP.trustedProxies()
	if len(got) != 2 || got[0].String() != "10.0.0.0/8" || got[1].String() != "2001:db8::1/128" {
		t.Fatalf("trustedProxies = %v", got)
	}
	if def := mustLoadYAML(t, "", nil).HTTP.trustedProxies(); def != nil {
		t.Fatalf("without the key: %v, want nil (the provider's loopback default)", def)
	}
	bad := mustLoadYAML(t, `
http:
  trusted_proxies: [10.0.0.0/8, 10.0.0.1, lb.example.com]
`, nil)
	err := bad.Validate(ModeDev)
	for _, key := range []string{"http.trusted_proxies[1]", "http.trusted_proxies[2]"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate: %v; want a problem at %s", err, key)
		}
	}
	if err != nil && strings.Contains(err.Error(), "http.trusted_proxies[0]") {
		t.Errorf("Validate flags a valid prefix: %v", err)
	}
}

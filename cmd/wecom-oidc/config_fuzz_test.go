package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/knadh/koanf/parsers/yaml"
)

// FuzzLoadConfig writes fuzzed YAML to a file and loads it with LoadConfig, then validates it.
// In the YAML, $SECRET_FILE becomes the path of a file holding a secret; the environment holds
// FUZZ_SECRET and GRAFANA_CLIENT_SECRET (and no WECOM_OIDC_ variable). Properties:
//   - LoadConfig and Validate (serve and dev rules) do not panic; a LoadConfig error says
//     something;
//   - Validate is deterministic: twice the same answer, for each mode;
//   - redaction: when LoadConfig succeeds, every rendering of the configuration — String,
//     GoString, fmt's %v %+v %#v %s of the Config and of its wecom, upstream and client values,
//     MarshalJSON, a slog JSON record — and the Validate answers are the same as for the same
//     configuration with every secret replaced by another of the same length. So no secret
//     value (inline, from secret_env or from secret_file) shows in any of them, except where the
//     same text is also the value of a key that is not a secret.
//
// Inputs whose secret_file names an existing file other than $SECRET_FILE are skipped: LoadConfig
// would read it (a device or /proc file could block or never end).
func FuzzLoadConfig(f *testing.F) {
	for _, s := range configSeeds {
		f.Add(s)
	}
	dir := f.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("file-secret-0123456789abcdef\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	configFile := filepath.Join(dir, "config.yaml")
	env := envFunc(map[string]string{
		"FUZZ_SECRET":           "env-secret-0123456789abcdef",
		"GRAFANA_CLIENT_SECRET": "grafana-secret-0123456789",
	})

	f.Fuzz(func(t *testing.T, input string) {
		input = strings.ReplaceAll(input, "$SECRET_FILE", secretFile)
		if !safeSecretFiles(t, input, secretFile) {
			t.Skip("secret_file names a file the fuzzer did not make")
		}
		if err := os.WriteFile(configFile, []byte(input), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(configFile, env)
		if err != nil {
			t.Logf("LoadConfig: %v", err)
			if err.Error() == "" {
				t.Fatal("LoadConfig failed with an empty error")
			}
			return
		}

		serve, dev := validation(c, ModeServe), validation(c, ModeDev)
		if again := validation(c, ModeServe); again != serve {
			t.Fatalf("Validate(ModeServe) changed between two calls:\n%s\n---\n%s", serve, again)
		}
		if again := validation(c, ModeDev); again != dev {
			t.Fatalf("Validate(ModeDev) changed between two calls:\n%s\n---\n%s", dev, again)
		}
		t.Logf("Validate(ModeServe): %s", serve)

		other := withOtherSecrets(c)
		for _, r := range []struct {
			what      string
			got, want string
		}{
			{"renderings", renderings(t, c), renderings(t, other)},
			{"Validate(ModeServe)", serve, validation(other, ModeServe)},
			{"Validate(ModeDev)", dev, validation(other, ModeDev)},
		} {
			if r.got != r.want {
				t.Fatalf("%s depend on the secrets %q:\nwith them:\n%s\nwith others of the same length:\n%s",
					r.what, secretsOf(c), r.got, r.want)
			}
		}
	})
}

// configSeeds are the same inputs as testdata/fuzz/FuzzLoadConfig.
var configSeeds = []string{
	// Valid: inline secrets; secrets from a file and the environment; several upstreams.
	validYAML,
	`issuer: https://sso.example.com
wecom: {corp_id: ww0123456789abcdef, agent_id: 1000002, secret_file: $SECRET_FILE}
clients:
  - {id: grafana, secret_env: GRAFANA_CLIENT_SECRET, redirect_uris: [https://grafana.example.com/login/generic_oauth], groups: [names, paths]}
  - {id: spa, public: true, redirect_uris: ["http://127.0.0.1:5173/callback"]}
claims: {subject: "{corp_id}.{userid}", extra: {employee_id: extattr.工号}, default_groups: [staff]}
`,
	`issuer: https://sso.example.com
upstreams:
  - {id: hq, name: 总部, wecom: {corp_id: wwhq, agent_id: "1", secret_env: FUZZ_SECRET}}
  - {id: sub, wecom: {corp_id: wwsub, agent_id: "2", secret: sub-corp-secret-value, tags: true}, subject: "sub.{userid}"}
clients:
  - {id: app, secret_file: $SECRET_FILE, redirect_uris: [https://app.example.com/cb], token_endpoint_auth_method: client_secret_post}
`,
	`issuer: https://sso.example.com
wecom: {corp_id: ww1, agent_id: "1", secret_env: FUZZ_SECRET}
storage: {backend: etcd, etcd: {endpoints: [https://etcd-1:2379], username: sso, password_file: $SECRET_FILE, tls: {ca_file: /etc/ca.pem}}}
`,
	// Near-valid: loads, but a trailing slash, two secret sources, a short client secret, a
	// fragment, letters in agent_id, an unset variable, a public client with a secret.
	`issuer: https://sso.example.com/
wecom: {corp_id: ww1, agent_id: "1", secret: s3cr3t-wecom, secret_env: FUZZ_SECRET}
clients: [{id: app, secret: short-secret, redirect_uris: [https://app.example.com/cb#frag]}]
`,
	`wecom: {corp_id: ww1, agent_id: x1, secret_env: UNSET_VARIABLE}
clients: [{id: app, secret: 0123456789abcdef-public, public: true, redirect_uris: [https://app.example.com/cb]}]
`,
	// Near-valid: does not load (a unitless duration, a typo).
	"issuer: https://sso.example.com\ntokens: {session_ttl: 10}\nwecom: {secret: unit-less-secret}\n",
	"issuer: https://sso.example.com\nlog: {levle: debug}\nwecom: {secret: typo-secret}\n",
	// Hostile: secrets that are also other keys' values or the redaction marker, non-string
	// secrets, dotted keys, anchors and merges, escapes, private keys inline.
	`log: {level: info}
issuer: https://sso.example.com
wecom: {corp_id: ww1, agent_id: "1", secret: info}
clients: [{id: app, secret: "[REDACTED]-[REDACTED]", redirect_uris: [https://app.example.com/cb]}]
`,
	`issuer: https://sso.example.com
wecom: {corp_id: ww1, agent_id: 1000002, secret: 12345678901234567890}
clients:
  - &c {id: a, secret: "same secret value 0123456789", redirect_uris: [https://a.example/cb]}
  - {<<: *c, id: b, name: "same secret value 0123456789"}
`,
	"wecom.secret: dotted-key-secret\nwecom.corp_id: ww1\n",
	`issuer: https://sso.example.com
wecom: {corp_id: ww1, agent_id: "1", secret: [not, a, string]}
clients: [{id: app, secret: {k: v}, redirect_uris: https://app.example.com/cb}]
`,
	"wecom:\n  secret: \"tab\\tand\\nnewline and \\\"quotes\\\" secret\"\n  secret_file: \"\"\nissuer: \"http://[::1]:8080\"\nlisten: \":0\"\n",
	`clients: [{id: k, token_endpoint_auth_method: private_key_jwt, jwks: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}', redirect_uris: [https://k.example/cb]}]`,
}

// validation is Validate's answer as text ("" for nil).
func validation(c *Config, mode Mode) string {
	if err := c.Validate(mode); err != nil {
		return err.Error()
	}
	return ""
}

// renderings is every way the configuration is printed or logged, one after the other.
func renderings(t *testing.T, c *Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "String: %s\nGoString: %s\n", c.String(), c.GoString())
	fmt.Fprintf(&b, "%%v: %v\n%%+v: %+v\n%%#v: %#v\n%%s: %s\n", *c, *c, *c, c)
	fmt.Fprintf(&b, "wecom: %v %+v %#v\n", c.WeCom, c.WeCom, c.WeCom)
	fmt.Fprintf(&b, "upstreams: %v %+v %#v\n", c.Upstreams, c.Upstreams, c.Upstreams)
	fmt.Fprintf(&b, "clients: %v %+v %#v\n", c.Clients, c.Clients, c.Clients)
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	fmt.Fprintf(&b, "json: %s\n", j)
	var record bytes.Buffer
	slog.New(slog.NewJSONHandler(&record, nil)).Info("config", "config", *c, "wecom", c.WeCom, "clients", c.Clients)
	// The record's time differs between calls; everything after it does not.
	_, rest, _ := strings.Cut(record.String(), `"level"`)
	b.WriteString("slog: " + rest)
	return b.String()
}

// withOtherSecrets is a copy of c with every secret (wecom, upstreams[].wecom, clients[], the etcd
// password) replaced by another of the same length in characters, so Validate's length rule
// still judges alike.
func withOtherSecrets(c *Config) *Config {
	o := *c
	o.WeCom.Secret = otherSecret(c.WeCom.Secret)
	o.Upstreams = slices.Clone(c.Upstreams)
	for i := range o.Upstreams {
		o.Upstreams[i].WeCom.Secret = otherSecret(o.Upstreams[i].WeCom.Secret)
	}
	o.Clients = slices.Clone(c.Clients)
	for i := range o.Clients {
		o.Clients[i].Secret = otherSecret(o.Clients[i].Secret)
	}
	o.Storage.Etcd.Password = otherSecret(c.Storage.Etcd.Password)
	return &o
}

func otherSecret(s string) string {
	if s == "" {
		return ""
	}
	n := utf8.RuneCountInString(s)
	if o := strings.Repeat("x", n); o != s {
		return o
	}
	return strings.Repeat("y", n)
}

// secretsOf lists c's non-empty secrets.
func secretsOf(c *Config) []string {
	var out []string
	add := func(s string) {
		if s != "" {
			out = append(out, s)
		}
	}
	add(c.WeCom.Secret)
	for _, u := range c.Upstreams {
		add(u.WeCom.Secret)
	}
	for _, cl := range c.Clients {
		add(cl.Secret)
	}
	add(c.Storage.Etcd.Password)
	return out
}

// safeSecretFiles reports whether every secret_file and password_file in the YAML (under any key
// path whose last part is one of them, as koanf splits keys at dots) names allowed, a file that
// does not exist, or nothing. YAML that does not parse is safe: LoadConfig rejects it before
// reading any file.
func safeSecretFiles(t *testing.T, input, allowed string) bool {
	t.Helper()
	doc, err := yaml.Parser().Unmarshal([]byte(input))
	if err != nil {
		return true
	}
	var paths []string
	var leaves func(v any)
	leaves = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, x := range v {
				leaves(x)
			}
		case map[any]any:
			for _, x := range v {
				leaves(x)
			}
		case []any:
			for _, x := range v {
				leaves(x)
			}
		case nil:
		default:
			paths = append(paths, fmt.Sprint(v))
		}
	}
	var walk func(v any)
	visit := func(key string, v any) {
		parts := strings.Split(key, ".")
		if last := parts[len(parts)-1]; last == "secret_file" || last == "password_file" {
			leaves(v)
		}
		walk(v)
	}
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				visit(k, x)
			}
		case map[any]any:
			for k, x := range v {
				visit(fmt.Sprint(k), x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	for _, p := range paths {
		if p == "" || p == allowed {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			return false
		}
	}
	return true
}

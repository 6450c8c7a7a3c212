package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"

	"github.com/wecom-oidc/wecom-oidc/provider"
)

// Config is the configuration file format (YAML). It belongs to the command: run() converts it
// into each package's own Config. LoadConfig fills it in layers; Validate checks it.
//
// Printing a Config (fmt's %v, %+v, %s, %#v) or logging it with slog redacts every secret.
type Config struct {
	Issuer  string        `koanf:"issuer"` // exact; no trailing slash
	Listen  string        `koanf:"listen"` // host:port
	Log     LogConfig     `koanf:"log"`
	Storage StorageConfig `koanf:"storage"`
	WeCom   WeComConfig   `koanf:"wecom"`
	// Upstreams puts several WeCom corps/apps behind one issuer; file only (no environment form).
	// Empty: the wecom block is the one upstream (EffectiveUpstreams).
	Upstreams []UpstreamConfig `koanf:"upstreams"`
	Tokens    TokensConfig     `koanf:"tokens"`
	Claims    ClaimsConfig     `koanf:"claims"`
	Clients   []ClientConfig   `koanf:"clients"` // static clients; file only (no environment form)
	Keys      KeysConfig       `koanf:"keys"`
	HTTP      HTTPConfig       `koanf:"http"`
	Admin     AdminConfig      `koanf:"admin"`
	Dev       DevConfig        `koanf:"dev"`
}

// KeysConfig governs the signing keys.
type KeysConfig struct {
	Algorithm string `koanf:"algorithm"` // RS256 (default), ES256 or EdDSA: for keys created from now on
	// RotationPeriod is how long a key signs before the next one (published a whole period ahead)
	// takes over; default 720h. Retention keeps a retired key published so tokens it signed still
	// verify; default 24h, and never less than the ID token lifetime.
	RotationPeriod time.Duration `koanf:"rotation_period"`
	Retention      time.Duration `koanf:"retention"`
}

// HTTPConfig bounds the HTTP server's connections (slow clients must not hold it).
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration `koanf:"read_header_timeout"` // default 10s
	ReadTimeout       time.Duration `koanf:"read_timeout"`        // default 30s
	WriteTimeout      time.Duration `koanf:"write_timeout"`       // default 30s
	IdleTimeout       time.Duration `koanf:"idle_timeout"`        // default 120s
	// MaxConcurrentRequests sheds load: requests beyond it get 503 at once. Default 512.
	MaxConcurrentRequests int `koanf:"max_concurrent_requests"`
	// TrustedProxies are the addresses (CIDR prefixes) of the reverse proxies and load balancers
	// whose X-Forwarded-For names the client, for the client-authentication failure limit.
	// Default: 127.0.0.1/32 and ::1/128, a proxy on the same host.
	TrustedProxies []string `koanf:"trusted_proxies"`
}

// trustedProxies parses TrustedProxies (validated); nil means the provider's default.
func (h HTTPConfig) trustedProxies() []netip.Prefix {
	if len(h.TrustedProxies) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(h.TrustedProxies))
	for _, p := range h.TrustedProxies {
		if pfx, err := netip.ParsePrefix(p); err == nil {
			out = append(out, pfx.Masked())
		}
	}
	return out
}

// AdminConfig is the management endpoint the CLI uses while the server runs.
type AdminConfig struct {
	// Socket is the Unix socket (created 0600) of the admin API; default: beside the database,
	// "wecom-oidc.sock" in storage.path's directory.
	Socket string `koanf:"socket"`
}

// AdminSocket is the admin API's socket path.
func (c *Config) AdminSocket() string {
	if c.Admin.Socket != "" {
		return c.Admin.Socket
	}
	return filepath.Join(filepath.Dir(c.Storage.Path), "wecom-oidc.sock")
}

// UpstreamConfig is one WeCom corp and app people may sign in with, when several share the issuer.
//
// LoadConfig fills in what an entry leaves empty: name from id, name_en from name, and the wecom
// block's scope, base URLs and timeout from the top-level wecom block (itself defaulted). Subject
// stays "" when unset, meaning claims.subject.
type UpstreamConfig struct {
	// ID is [a-z0-9-]{1,32}, unique; it names the upstream in idp_hint, in login_hint "user@id"
	// and on the chooser page.
	ID     string `koanf:"id"`
	Name   string `koanf:"name"`    // shown on the chooser (Chinese); default ID
	NameEN string `koanf:"name_en"` // shown on the chooser in English; default Name
	// WeCom is the corp and app, exactly like the top-level wecom block; its secret comes from
	// secret, secret_file or secret_env (an upstream has no environment form of its own).
	WeCom WeComConfig `koanf:"wecom"`
	// Subject is this upstream's subject template; "" means claims.subject.
	Subject string `koanf:"subject"`
}

// LogConfig selects the process logger.
type LogConfig struct {
	Level  string `koanf:"level"`  // debug|info|warn|error; default info
	Format string `koanf:"format"` // text|json; default text
}

// StorageConfig chooses and locates the store.
type StorageConfig struct {
	// Backend is "bolt" (the default: one process, an embedded database file at Path) or "etcd"
	// (any number of replicas sharing an etcd cluster; see Etcd).
	Backend string `koanf:"backend"`
	// Path is the bbolt database, default ./data/wecom-oidc.db, relative to the working
	// directory. With backend etcd it only places the default admin socket.
	Path string `koanf:"path"`
	// SweepInterval is how often expired records are deleted (default 1m). The database holds
	// what expired since the last sweep on top of what is live.
	SweepInterval time.Duration `koanf:"sweep_interval"`
	// Etcd is the cluster of backend etcd; every key of it is refused with another backend.
	Etcd EtcdConfig `koanf:"etcd"`
}

// Storage backends.
const (
	BackendBolt = "bolt"
	BackendEtcd = "etcd"
)

// EtcdConfig is the etcd cluster replicas share (storage.backend etcd). Zero values mean the
// etcd package's defaults: prefix /wecom-oidc/, 5s timeouts.
type EtcdConfig struct {
	// Endpoints are the cluster's client URLs (http:// or https://); at least one.
	Endpoints []string `koanf:"endpoints"`
	// Prefix is put before every key; replicas of one deployment share it. Default /wecom-oidc/.
	Prefix string `koanf:"prefix"`
	// Username and Password authenticate when etcd's auth is enabled. After LoadConfig Password
	// holds the value of PasswordEnv or the content of PasswordFile when one of those was the
	// source; at most one of password, password_file, password_env.
	Username     string `koanf:"username"`
	Password     string `koanf:"password"`
	PasswordFile string `koanf:"password_file"`
	PasswordEnv  string `koanf:"password_env"`
	// TLS secures the connections to https:// endpoints.
	TLS EtcdTLSConfig `koanf:"tls"`
	// DialTimeout bounds connecting to the cluster at start; default 5s.
	DialTimeout time.Duration `koanf:"dial_timeout"`
	// RequestTimeout bounds each request to etcd; default 5s.
	RequestTimeout time.Duration `koanf:"request_timeout"`

	resolved secretResolution
}

// EtcdTLSConfig is the TLS of the connections to etcd. Every key is optional: without ca_file
// the system's roots verify the servers; cert_file and key_file (both or neither) are the
// client certificate for etcd's --client-cert-auth.
type EtcdTLSConfig struct {
	CAFile     string `koanf:"ca_file"`
	CertFile   string `koanf:"cert_file"`
	KeyFile    string `koanf:"key_file"`
	ServerName string `koanf:"server_name"` // the name the servers' certificates must carry
}

// set reports whether any TLS key is set.
func (t EtcdTLSConfig) set() bool { return t != EtcdTLSConfig{} }

// WeComConfig is the WeCom self-built app that authenticates people.
type WeComConfig struct {
	CorpID  string `koanf:"corp_id"`
	AgentID string `koanf:"agent_id"` // digits
	// Secret is the app's corpsecret. After LoadConfig it holds the value of SecretEnv or the
	// content of SecretFile when one of those was the source.
	Secret     string `koanf:"secret"`
	SecretFile string `koanf:"secret_file"`
	// SecretEnv names an environment variable holding the secret (the only environment route for
	// upstreams[] entries, which have no environment form). Exactly one of secret, secret_file,
	// secret_env.
	SecretEnv string `koanf:"secret_env"`
	// Tags reads the person's WeCom tags (tag/list, tag/get) for the groups claim (clients[].groups
	// "tags"); default false. The app needs access to the tags.
	Tags         bool          `koanf:"tags"`
	Scope        string        `koanf:"scope"`          // snsapi_privateinfo (default) | snsapi_base
	APIBaseURL   string        `koanf:"api_base_url"`   // default https://qyapi.weixin.qq.com
	OAuthBaseURL string        `koanf:"oauth_base_url"` // default https://open.weixin.qq.com
	LoginBaseURL string        `koanf:"login_base_url"` // default https://login.work.weixin.qq.com
	Timeout      time.Duration `koanf:"timeout"`        // per WeCom API call; default 10s
	// DesktopScan offers the scan sign-in on computers: a QR code the person scans with the WeCom
	// app, which signs them in with consent and so brings mobile and email. off (default): the
	// computer goes straight to the web login; offer: the web login first, the QR code beside
	// it; prefer: the QR code first, the web login beside it.
	DesktopScan string `koanf:"desktop_scan"`

	resolved secretResolution
}

// TokensConfig holds token and session lifetimes.
type TokensConfig struct {
	AccessTokenTTL  time.Duration `koanf:"access_token_ttl"`  // default 1h
	IDTokenTTL      time.Duration `koanf:"id_token_ttl"`      // default 1h
	RefreshTokenTTL time.Duration `koanf:"refresh_token_ttl"` // default 720h; ≥ access_token_ttl
	SessionTTL      time.Duration `koanf:"session_ttl"`       // SSO session; default 12h
	// RecheckInterval: at a refresh, WeCom is asked again when its last confirmation of the person
	// is older than this. Default 10m.
	RecheckInterval time.Duration `koanf:"recheck_interval"`
	// RecheckGrace: while WeCom cannot answer, refreshes continue until the last confirmation is
	// this old. Default 2h.
	RecheckGrace time.Duration `koanf:"recheck_grace"`
}

// ClaimsConfig shapes the claims made from a WeCom profile (design §5).
type ClaimsConfig struct {
	// Subject is the `sub` template, default "{userid}". Placeholders: {userid}, {corp_id}. It must
	// contain {userid} and no ':' (the subject never contains ':').
	Subject string `koanf:"subject"`
	// EmailSources is the order in which WeCom fields fill `email`: biz_mail, email.
	EmailSources []string `koanf:"email_sources"`
	// EmailFallback is a template such as "{userid}@corp.example" used when no source has an
	// address; "" means none. The fallback is never reported as verified.
	EmailFallback string `koanf:"email_fallback"`
	// EmailVerified trusts addresses from WeCom as verified (default false).
	EmailVerified bool `koanf:"email_verified"`
	// DefaultGroups are added to every person's groups.
	DefaultGroups []string `koanf:"default_groups"`
	// Extra maps further claim names to their source: alias | position | main_department |
	// extattr.<name> (a WeCom 扩展属性). File only (no environment form).
	Extra map[string]string `koanf:"extra"`
}

// ClientConfig is a static relying party, reconciled into storage at start.
type ClientConfig struct {
	ID   string `koanf:"id"` // [A-Za-z0-9._-]{1,64}
	Name string `koanf:"name"`
	// Secret is the client secret. After LoadConfig it holds the value of SecretEnv or the content
	// of SecretFile when one of those was the source.
	Secret                 string   `koanf:"secret"`
	SecretEnv              string   `koanf:"secret_env"`
	SecretFile             string   `koanf:"secret_file"`
	RedirectURIs           []string `koanf:"redirect_uris"`
	PostLogoutRedirectURIs []string `koanf:"post_logout_redirect_uris"`
	Public                 bool     `koanf:"public"`          // true: no secret, PKCE required
	IDTokenClaims          *bool    `koanf:"id_token_claims"` // profile claims in the ID token too; nil = true
	// TokenEndpointAuthMethod is client_secret_basic (default; client_secret_post is accepted too),
	// client_secret_post, or private_key_jwt (then JWKS or JWKSURI, and no secret).
	TokenEndpointAuthMethod string `koanf:"token_endpoint_auth_method"`
	JWKS                    string `koanf:"jwks"`     // inline JSON Web Key Set (public keys)
	JWKSURI                 string `koanf:"jwks_uri"` // where the client publishes its keys
	// BackchannelLogoutURI receives a logout token when a session that signed in here ends.
	BackchannelLogoutURI             string `koanf:"backchannel_logout_uri"`
	BackchannelLogoutSessionRequired bool   `koanf:"backchannel_logout_session_required"`
	// Groups is what the `groups` claim holds, in this order: names (department names; the
	// default when empty), ids, paths (department paths), tags (WeCom tags; needs wecom.tags).
	Groups []string `koanf:"groups"`
	// DeviceFlow lets the client use the device authorization grant (RFC 8628): command-line
	// tools and devices without a browser; default false.
	DeviceFlow bool `koanf:"device_flow"`

	resolved secretResolution
}

// DevConfig is used by `wecom-oidc dev` only; serve ignores it.
type DevConfig struct {
	AutoLogin string `koanf:"auto_login"` // userid the simulated WeCom logs in without asking
	// DesktopScan is dev mode's wecom.desktop_scan (its wecom block is the simulator's): offer
	// by default, so the demo shows the scan sign-in.
	DesktopScan string `koanf:"desktop_scan"`
}

// secretResolution records what LoadConfig did with a secret indirection, so that Validate can
// tell an inline secret from one LoadConfig filled in, and report a lookup that failed.
type secretResolution struct {
	filled  bool   // Secret was filled in from secret_env or secret_file
	key     string // sub-key whose lookup failed ("secret_env", "secret_file"); "" if none failed
	problem string // what went wrong with that lookup
}

// Mode selects the rules Validate applies.
type Mode int

const (
	// ModeServe is `wecom-oidc serve`: a real WeCom app and a fixed issuer are required.
	ModeServe Mode = iota
	// ModeDev is `wecom-oidc dev`: WeCom is simulated, so the wecom block is optional, and the
	// issuer may be empty (IssuerOrDefault derives it from listen).
	ModeDev
)

// Problem is one thing wrong with a configuration: the key path (as in `clients[0].redirect_uris[1]`)
// and what is wrong with it.
type Problem struct {
	Key     string
	Message string
}

func (p Problem) String() string { return p.Key + ": " + p.Message }

// ValidationError lists every problem Validate found, in the order of the file format.
type ValidationError struct {
	Problems []Problem
}

// Error prints one line per problem, `key: message`.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

const (
	// envPrefix starts the environment variable of every config key: WECOM_OIDC_ + the upper-case
	// key path with "__" between levels.
	envPrefix = "WECOM_OIDC_"
	// redactedText replaces a non-empty secret when a Config is printed or logged.
	redactedText = "[REDACTED]"
	// minClientSecretLen is the shortest client secret Validate accepts, in characters.
	minClientSecretLen = 16
	// maxClientIDLen is the longest client id.
	maxClientIDLen = 64
	// maxUpstreamIDLen is the longest upstream id.
	maxUpstreamIDLen = 32
)

// groupShapes are the values of clients[].groups.
var groupShapes = []string{provider.GroupsNames, provider.GroupsIDs, provider.GroupsPaths, provider.GroupsTags}

// defaultValues is the lowest configuration layer. Keys are flat, "." between levels.
func defaultValues() map[string]any {
	return map[string]any{
		"listen":                       "127.0.0.1:8080",
		"log.level":                    "info",
		"log.format":                   "text",
		"storage.backend":              BackendBolt,
		"storage.path":                 "./data/wecom-oidc.db",
		"storage.sweep_interval":       time.Minute,
		"wecom.scope":                  "snsapi_privateinfo",
		"wecom.api_base_url":           "https://qyapi.weixin.qq.com",
		"wecom.oauth_base_url":         "https://open.weixin.qq.com",
		"wecom.login_base_url":         "https://login.work.weixin.qq.com",
		"wecom.timeout":                10 * time.Second,
		"wecom.desktop_scan":           provider.ScanOff,
		"dev.desktop_scan":             provider.ScanOffer,
		"tokens.access_token_ttl":      time.Hour,
		"tokens.id_token_ttl":          time.Hour,
		"tokens.refresh_token_ttl":     720 * time.Hour,
		"tokens.session_ttl":           12 * time.Hour,
		"tokens.recheck_interval":      10 * time.Minute,
		"tokens.recheck_grace":         2 * time.Hour,
		"keys.algorithm":               "RS256",
		"keys.rotation_period":         720 * time.Hour,
		"keys.retention":               24 * time.Hour,
		"http.read_header_timeout":     10 * time.Second,
		"http.read_timeout":            30 * time.Second,
		"http.write_timeout":           30 * time.Second,
		"http.idle_timeout":            120 * time.Second,
		"http.max_concurrent_requests": 512,
		"claims.subject":               "{userid}",
		"claims.email_sources":         []string{"biz_mail", "email"},
	}
}

// LoadConfig reads the configuration in layers, each overriding the one before: defaults, the YAML
// file at path (skipped when path is ""), then the environment read through getenv (nil means an
// empty environment).
//
// Every key except the clients and upstreams lists and the claims.extra map is settable as an
// environment variable: WECOM_OIDC_ + the
// upper-case key path with "__" between levels (WECOM_OIDC_WECOM__SECRET,
// WECOM_OIDC_TOKENS__SESSION_TTL=8h, WECOM_OIDC_CLAIMS__DEFAULT_GROUPS=a,b). getenv cannot tell an
// unset variable from an empty one, so an empty variable leaves the value from the layers below.
//
// LoadConfig fails on a file it cannot read, malformed YAML, a value of the wrong type, an unknown
// key (a typo must not silently become a default) and an environment value that does not parse.
// Upstream entries get their defaults (see UpstreamConfig). Secret indirections (secret_env and
// secret_file of wecom, upstreams[].wecom and clients[]; password_env and password_file of
// storage.etcd) are resolved into the Secret and Password fields; a lookup that fails is not an
// error here but a problem Validate reports,
// so that `config check` lists everything at once. Relative file paths are relative to the
// working directory.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaultValues(), "."), nil); err != nil {
		return nil, fmt.Errorf("config defaults: %w", err)
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			var pathErr *fs.PathError
			if errors.As(err, &pathErr) {
				return nil, fmt.Errorf("config file %s: %w", path, pathErr.Err)
			}
			return nil, fmt.Errorf("config file %s: malformed YAML: %w", path, err)
		}
	}
	env, err := envValues(getenv)
	if err != nil {
		return nil, err
	}
	if err := k.Load(confmap.Provider(env, "."), nil); err != nil {
		return nil, fmt.Errorf("config environment: %w", err)
	}

	var c Config
	if err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{DecoderConfig: decoderConfig()}); err != nil {
		source := "config"
		if path != "" {
			source = "config file " + path
		}
		return nil, fmt.Errorf("%s: %w", source, explainDecodeError(err))
	}
	for i := range c.Upstreams {
		c.Upstreams[i] = c.Upstreams[i].withDefaults(c.WeCom)
	}
	c.resolveSecrets(getenv)
	return &c, nil
}

// decoderConfig is the mapstructure setup for Unmarshal. Supplying it replaces koanf's own, so the
// hooks koanf would add (string → duration) are listed here again.
func decoderConfig() *mapstructure.DecoderConfig {
	return &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			rejectUnitlessDuration,
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
		ErrorUnused: true,
		// Keys match their koanf tag exactly: `Issuer:` is a typo, not `issuer:`.
		MatchName: func(mapKey, fieldName string) bool { return mapKey == fieldName },
		// `agent_id: 1000002` (a YAML number) must decode into the string field.
		WeaklyTypedInput: true,
	}
}

// rejectUnitlessDuration refuses a bare number for a duration: weak typing would otherwise read
// `timeout: 10` as ten nanoseconds.
func rejectUnitlessDuration(from, to reflect.Type, data any) (any, error) {
	if !isDuration(to) || isDuration(from) {
		return data, nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return nil, fmt.Errorf("duration %v has no unit (write e.g. 10s, 15m or 1h)", data)
	}
	return data, nil
}

// decodeError rewords mapstructure's errors (one line per key, full key paths, unknown keys
// gathered) and keeps the original in the chain.
type decodeError struct {
	msg string
	err error
}

func (e *decodeError) Error() string { return e.msg }
func (e *decodeError) Unwrap() error { return e.err }

// explainDecodeError walks the tree of mapstructure errors into one readable message.
func explainDecodeError(err error) error {
	var unknown, other []string
	var walk func(error)
	walk = func(err error) {
		if de, ok := err.(*mapstructure.DecodeError); ok {
			inner := errors.Unwrap(de)
			if inner == nil {
				other = append(other, de.Error())
				return
			}
			if keys, ok := strings.CutPrefix(inner.Error(), "has invalid keys: "); ok {
				for key := range strings.SplitSeq(keys, ", ") {
					if de.Name() != "" {
						key = de.Name() + "." + key
					}
					unknown = append(unknown, key)
				}
				return
			}
			msg := de.Name() + ": " + inner.Error()
			if strings.HasPrefix(inner.Error(), "time: ") {
				msg += " (durations look like 10s, 15m, 12h)"
			}
			other = append(other, msg)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		default:
			other = append(other, err.Error())
		}
	}
	walk(err)

	var parts []string
	if len(unknown) > 0 {
		slices.Sort(unknown)
		parts = append(parts, "unknown key(s): "+strings.Join(unknown, ", "))
	}
	parts = append(parts, other...)
	if len(parts) == 0 {
		return err
	}
	return &decodeError{msg: strings.Join(parts, "; "), err: err}
}

// isDuration reports whether t is time.Duration, which is an int64 to reflection but is written
// and parsed as "10s".
func isDuration(t reflect.Type) bool { return t == reflect.TypeFor[time.Duration]() }

// configKey is a leaf of the file format that the environment can set.
type configKey struct {
	path string // "wecom.secret"
	typ  reflect.Type
}

// envVar is the environment variable that sets the key at path ("wecom.secret" →
// WECOM_OIDC_WECOM__SECRET).
func envVar(path string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "__"))
}

// envKeys lists the environment-settable keys of struct type t, from the koanf tags. Lists of
// structs (clients, upstreams) and maps (claims.extra) have no environment form and are skipped.
func envKeys(t reflect.Type, prefix string) []configKey {
	var keys []configKey
	for f := range t.Fields() {
		tag := f.Tag.Get("koanf")
		if tag == "" || !f.IsExported() {
			continue
		}
		path := prefix + tag
		switch {
		case f.Type.Kind() == reflect.Struct && !isDuration(f.Type):
			keys = append(keys, envKeys(f.Type, path+".")...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct,
			f.Type.Kind() == reflect.Map:
			// no environment form
		default:
			keys = append(keys, configKey{path: path, typ: f.Type})
		}
	}
	return keys
}

// envValues builds the environment layer: a flat map of every key whose variable getenv reports
// non-empty, converted to the field's type so a bad value names its variable.
func envValues(getenv func(string) string) (map[string]any, error) {
	out := make(map[string]any)
	for _, k := range envKeys(reflect.TypeFor[Config](), "") {
		name := envVar(k.path)
		raw := getenv(name)
		if raw == "" {
			continue
		}
		v, err := parseEnvValue(raw, k.typ)
		if err != nil {
			return nil, fmt.Errorf("config environment: %s: %w", name, err)
		}
		out[k.path] = v
	}
	return out, nil
}

// parseEnvValue converts an environment string to a value of type t. String lists are
// comma-separated; blanks around items and empty items are dropped.
func parseEnvValue(raw string, t reflect.Type) (any, error) {
	switch {
	case isDuration(t):
		d, err := time.ParseDuration(raw)
		if err != nil {
			return nil, fmt.Errorf("invalid duration: %w", err)
		}
		return d, nil
	case t.Kind() == reflect.String:
		return raw, nil
	case t.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return nil, fmt.Errorf("invalid integer %q", raw)
		}
		return n, nil
	case t.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return nil, fmt.Errorf("invalid boolean %q", raw)
		}
		return b, nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		var items []string
		for item := range strings.SplitSeq(raw, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		return items, nil
	}
	return nil, fmt.Errorf("no environment form for type %s", t)
}

// resolveSecrets fills the Secret fields from their indirections. It only resolves a source that
// is the only one set (Validate reports conflicts), and records a failed lookup for Validate.
// The top-level wecom block is not resolved when upstreams are set (Validate reports its secret
// keys as misplaced then).
func (c *Config) resolveSecrets(getenv func(string) string) {
	if len(c.Upstreams) == 0 {
		c.WeCom.Secret, c.WeCom.resolved = resolveSecret(c.WeCom.Secret, c.WeCom.SecretEnv, c.WeCom.SecretFile, getenv)
	}
	for i := range c.Upstreams {
		w := &c.Upstreams[i].WeCom
		w.Secret, w.resolved = resolveSecret(w.Secret, w.SecretEnv, w.SecretFile, getenv)
	}
	for i := range c.Clients {
		cl := &c.Clients[i]
		if cl.Public {
			continue
		}
		cl.Secret, cl.resolved = resolveSecret(cl.Secret, cl.SecretEnv, cl.SecretFile, getenv)
	}
	if c.Storage.Backend == BackendEtcd { // with another backend every etcd key is a problem
		e := &c.Storage.Etcd
		e.Password, e.resolved = resolveSecret(e.Password, e.PasswordEnv, e.PasswordFile, getenv)
	}
}

// resolveSecret returns the secret from secretEnv or secretFile when that is its only source, and
// secret unchanged otherwise (an inline secret, none, or several sources for Validate to report).
func resolveSecret(secret, secretEnv, secretFile string, getenv func(string) string) (string, secretResolution) {
	if secret != "" {
		return secret, secretResolution{}
	}
	switch {
	case secretEnv != "" && secretFile == "":
		if s := getenv(secretEnv); s != "" {
			return s, secretResolution{filled: true}
		}
		return "", secretResolution{key: "secret_env",
			problem: fmt.Sprintf("environment variable %s is empty or unset", secretEnv)}
	case secretFile != "" && secretEnv == "":
		return resolveSecretFile(secretFile)
	}
	return "", secretResolution{}
}

// resolveSecretFile reads a secret from path, without trailing whitespace.
func resolveSecretFile(path string) (string, secretResolution) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", secretResolution{key: "secret_file", problem: fmt.Sprintf("cannot read: %v", err)}
	}
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" {
		return "", secretResolution{key: "secret_file", problem: fmt.Sprintf("file %s is empty", path)}
	}
	return s, secretResolution{filled: true}
}

// IssuerOrDefault is the issuer, or, when it is empty (dev mode), http:// + listen with an
// unspecified or empty host replaced by 127.0.0.1.
func (c *Config) IssuerOrDefault() string {
	if c.Issuer != "" {
		return c.Issuer
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "http://" + c.Listen
	}
	if host == "" || net.ParseIP(host).IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// withDefaults fills in what the entry leaves empty: name from id, name_en from name, and the
// wecom block's scope, base URLs and timeout from top (the top-level wecom block). It is
// idempotent.
func (u UpstreamConfig) withDefaults(top WeComConfig) UpstreamConfig {
	if u.Name == "" {
		u.Name = u.ID
	}
	if u.NameEN == "" {
		u.NameEN = u.Name
	}
	w := &u.WeCom
	for _, f := range []struct{ dst, src *string }{
		{&w.Scope, &top.Scope},
		{&w.APIBaseURL, &top.APIBaseURL},
		{&w.OAuthBaseURL, &top.OAuthBaseURL},
		{&w.LoginBaseURL, &top.LoginBaseURL},
		{&w.DesktopScan, &top.DesktopScan},
	} {
		if *f.dst == "" {
			*f.dst = *f.src
		}
	}
	if w.Timeout == 0 {
		w.Timeout = top.Timeout
	}
	return u
}

// EffectiveUpstreams is the list of upstreams to serve: the upstreams list (a copy, defaults
// filled in), or, when it is empty, the wecom block as the one upstream with id "wecom" and
// subject "" (claims.subject).
func (c *Config) EffectiveUpstreams() []UpstreamConfig {
	if len(c.Upstreams) == 0 {
		return []UpstreamConfig{{ID: "wecom", Name: "企业微信", NameEN: "WeCom", WeCom: c.WeCom, Subject: ""}}
	}
	ups := make([]UpstreamConfig, len(c.Upstreams))
	for i, u := range c.Upstreams {
		ups[i] = u.withDefaults(c.WeCom)
	}
	return ups
}

// WantsIDTokenClaims reports whether profile claims go into the ID token too (default true).
func (c ClientConfig) WantsIDTokenClaims() bool {
	return c.IDTokenClaims == nil || *c.IDTokenClaims
}

// problems accumulates Problems for Validate.
type problems []Problem

func (ps *problems) add(key, format string, args ...any) {
	*ps = append(*ps, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
}

// Validate checks the configuration for mode and returns nil or a *ValidationError listing every
// problem found (never only the first), including secret lookups that failed in LoadConfig. Any
// mode other than ModeDev gets the serve rules. Validate does no I/O.
func (c *Config) Validate(mode Mode) error {
	var ps problems
	serve := mode != ModeDev

	switch {
	case c.Issuer != "":
		checkIssuer(&ps, c.Issuer)
	case serve:
		ps.add("issuer", "required")
	}
	checkListen(&ps, c.Listen)
	checkEnum(&ps, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	checkEnum(&ps, "log.format", c.Log.Format, "text", "json")
	c.Storage.validate(&ps)
	if len(c.Upstreams) == 0 {
		c.WeCom.validate(&ps, "wecom.", serve,
			fmt.Sprintf("set secret, %s, secret_env or secret_file", envVar("wecom.secret")))
	} else {
		c.WeCom.validateBesideUpstreams(&ps)
		c.validateUpstreams(&ps, serve)
	}
	c.Tokens.validate(&ps)
	if !serve {
		checkEnum(&ps, "dev.desktop_scan", c.Dev.DesktopScan, provider.ScanOff, provider.ScanOffer, provider.ScanPrefer)
	}
	checkEnum(&ps, "keys.algorithm", c.Keys.Algorithm, "RS256", "ES256", "EdDSA")
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"keys.rotation_period", c.Keys.RotationPeriod},
		{"keys.retention", c.Keys.Retention},
		{"http.read_header_timeout", c.HTTP.ReadHeaderTimeout},
		{"http.read_timeout", c.HTTP.ReadTimeout},
		{"http.write_timeout", c.HTTP.WriteTimeout},
		{"http.idle_timeout", c.HTTP.IdleTimeout},
	} {
		if d.v <= 0 {
			ps.add(d.key, "must be > 0")
		}
	}
	if c.HTTP.MaxConcurrentRequests < 1 {
		ps.add("http.max_concurrent_requests", "must be ≥ 1")
	}
	for i, p := range c.HTTP.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			ps.add(fmt.Sprintf("http.trusted_proxies[%d]", i), "must be an address prefix such as 10.0.0.0/8 or 192.0.2.7/32 (got %q)", p)
		}
	}
	if c.Keys.Retention > 0 && c.Keys.Retention < c.Tokens.IDTokenTTL {
		ps.add("keys.retention", "must be ≥ tokens.id_token_ttl (%s): tokens must verify until they expire", c.Tokens.IDTokenTTL)
	}
	c.Claims.validate(&ps)

	seen := make(map[string]int)
	for i, cl := range c.Clients {
		prefix := fmt.Sprintf("clients[%d].", i)
		cl.validate(&ps, prefix)
		if cl.ID == "" {
			continue
		}
		if j, dup := seen[cl.ID]; dup {
			ps.add(prefix+"id", "duplicate of clients[%d].id %q", j, cl.ID)
		} else {
			seen[cl.ID] = i
		}
	}

	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// validate checks a wecom block that is an upstream: the top-level one ("wecom.") or
// upstreams[i].wecom ("upstreams[i].wecom."). serve requires the corp, app and secret (in dev mode
// WeCom is simulated); secretHint says how to set a missing secret.
func (w *WeComConfig) validate(ps *problems, prefix string, serve bool, secretHint string) {
	if serve && w.CorpID == "" {
		ps.add(prefix+"corp_id", "required")
	}
	switch {
	case w.AgentID == "":
		if serve {
			ps.add(prefix+"agent_id", "required")
		}
	case strings.Trim(w.AgentID, "0123456789") != "":
		ps.add(prefix+"agent_id", "must be digits, got %q", w.AgentID)
	}
	if serve {
		sources := w.secretSources()
		switch {
		case len(sources) > 1:
			ps.add(prefix+"secret", "set only one of %s", joinAnd(sources))
		case w.resolved.problem != "":
			ps.add(prefix+w.resolved.key, "%s", w.resolved.problem)
		case w.Secret == "" && len(sources) == 1:
			ps.add(prefix+sources[0], "not resolved (the configuration was not read by LoadConfig)")
		case w.Secret == "":
			ps.add(prefix+"secret", "required (%s)", secretHint)
		}
	}
	w.validateEndpoints(ps, prefix)
}

// secretSources lists the secret keys that are set: secret (inline, not filled in by LoadConfig),
// secret_env, secret_file.
func (w *WeComConfig) secretSources() []string {
	var sources []string
	if w.Secret != "" && !w.resolved.filled {
		sources = append(sources, "secret")
	}
	if w.SecretEnv != "" {
		sources = append(sources, "secret_env")
	}
	if w.SecretFile != "" {
		sources = append(sources, "secret_file")
	}
	return sources
}

// validateEndpoints checks the keys of a wecom block that say how to reach WeCom, not which app.
func (w *WeComConfig) validateEndpoints(ps *problems, prefix string) {
	checkEnum(ps, prefix+"scope", w.Scope, "snsapi_privateinfo", "snsapi_base")
	checkEnum(ps, prefix+"desktop_scan", w.DesktopScan, provider.ScanOff, provider.ScanOffer, provider.ScanPrefer)
	checkBaseURL(ps, prefix+"api_base_url", w.APIBaseURL)
	checkBaseURL(ps, prefix+"oauth_base_url", w.OAuthBaseURL)
	checkBaseURL(ps, prefix+"login_base_url", w.LoginBaseURL)
	if w.Timeout <= 0 {
		ps.add(prefix+"timeout", "must be > 0")
	}
}

// validateBesideUpstreams checks the top-level wecom block when upstreams are set: it must name no
// corp, app, secret or tags (each upstream does; they would be silently ignored), and its scope,
// base URLs and timeout are the upstreams' defaults.
func (w *WeComConfig) validateBesideUpstreams(ps *problems) {
	const msg = "use either wecom or upstreams: with upstreams, each upstream's wecom block names its corp, app and secret"
	for _, f := range []struct {
		key string
		set bool
	}{
		{"corp_id", w.CorpID != ""},
		{"agent_id", w.AgentID != ""},
		{"secret", w.Secret != "" && !w.resolved.filled},
		{"secret_env", w.SecretEnv != ""},
		{"secret_file", w.SecretFile != ""},
		{"tags", w.Tags},
	} {
		if f.set {
			ps.add("wecom."+f.key, "%s", msg)
		}
	}
	w.validateEndpoints(ps, "wecom.")
}

// validateUpstreams checks the upstreams list: ids, each wecom block (as the top-level one would
// be), subject templates, and that no two upstreams' subjects can collide.
func (c *Config) validateUpstreams(ps *problems, serve bool) {
	seen := make(map[string]int)
	templates := make([]string, len(c.Upstreams))
	corpIDs := make([]string, len(c.Upstreams))
	for i, u := range c.Upstreams {
		prefix := fmt.Sprintf("upstreams[%d].", i)
		switch {
		case u.ID == "":
			ps.add(prefix+"id", "required")
		case !validUpstreamID(u.ID):
			ps.add(prefix+"id", "must be 1 to %d characters of a-z 0-9 -, got %q", maxUpstreamIDLen, u.ID)
		default:
			if j, dup := seen[u.ID]; dup {
				ps.add(prefix+"id", "duplicate of upstreams[%d].id %q", j, u.ID)
			} else {
				seen[u.ID] = i
			}
		}
		u.WeCom.validate(ps, prefix+"wecom.", serve, "set secret_env, secret_file or secret")
		if u.Subject != "" {
			checkSubjectTemplate(ps, prefix+"subject", u.Subject)
		}
		templates[i] = cmp.Or(u.Subject, c.Claims.Subject)
		corpIDs[i] = u.WeCom.CorpID
	}
	if err := provider.CheckSubjectTemplates(templates, corpIDs); err != nil {
		ps.add("upstreams", "%v", err)
	}
}

// validUpstreamID reports whether id matches [a-z0-9-]{1,32}.
func validUpstreamID(id string) bool {
	if id == "" || len(id) > maxUpstreamIDLen {
		return false
	}
	for _, r := range id {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// joinAnd joins words as "a", "a and b", "a, b and c".
func joinAnd(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

func (t *TokensConfig) validate(ps *problems) {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"tokens.access_token_ttl", t.AccessTokenTTL},
		{"tokens.id_token_ttl", t.IDTokenTTL},
		{"tokens.refresh_token_ttl", t.RefreshTokenTTL},
		{"tokens.session_ttl", t.SessionTTL},
		{"tokens.recheck_interval", t.RecheckInterval},
		{"tokens.recheck_grace", t.RecheckGrace},
	} {
		if d.v <= 0 {
			ps.add(d.key, "must be > 0")
		}
	}
	if t.RefreshTokenTTL > 0 && t.RefreshTokenTTL < t.AccessTokenTTL {
		ps.add("tokens.refresh_token_ttl", "must be ≥ access_token_ttl (%s)", t.AccessTokenTTL)
	}
}

func (cl *ClaimsConfig) validate(ps *problems) {
	if cl.Subject == "" {
		ps.add("claims.subject", "required")
	} else {
		checkSubjectTemplate(ps, "claims.subject", cl.Subject)
	}

	if len(cl.EmailSources) == 0 {
		ps.add("claims.email_sources", "must list at least one of biz_mail, email")
	}
	seen := make(map[string]bool)
	for i, s := range cl.EmailSources {
		key := fmt.Sprintf("claims.email_sources[%d]", i)
		switch {
		case s != "biz_mail" && s != "email":
			ps.add(key, "must be biz_mail or email, got %q", s)
		case seen[s]:
			ps.add(key, "duplicate %q", s)
		}
		seen[s] = true
	}

	if f := cl.EmailFallback; f != "" {
		if !strings.Contains(f, "{userid}") {
			ps.add("claims.email_fallback", "must contain {userid}")
		}
		if !strings.Contains(f, "@") {
			ps.add("claims.email_fallback", "must contain '@'")
		}
		checkPlaceholders(ps, "claims.email_fallback", f)
	}

	for i, g := range cl.DefaultGroups {
		if strings.TrimSpace(g) == "" {
			ps.add(fmt.Sprintf("claims.default_groups[%d]", i), "must not be empty")
		}
	}

	for _, claim := range slices.Sorted(maps.Keys(cl.Extra)) {
		if err := provider.CheckExtraClaim(claim, cl.Extra[claim]); err != nil {
			ps.add("claims.extra."+claim, "%v", err)
		}
	}
}

// checkSubjectTemplate applies the rules of a subject template (claims.subject,
// upstreams[].subject): it contains {userid}, no ':', and no unknown placeholder.
func checkSubjectTemplate(ps *problems, key, tmpl string) {
	if !strings.Contains(tmpl, "{userid}") {
		ps.add(key, "must contain {userid}")
	}
	if strings.Contains(tmpl, ":") {
		ps.add(key, "must not contain ':'")
	}
	checkPlaceholders(ps, key, tmpl)
}

// validate checks one client; prefix is "clients[i].". Uniqueness is Config.Validate's job.
func (cl *ClientConfig) validate(ps *problems, prefix string) {
	switch {
	case cl.ID == "":
		ps.add(prefix+"id", "required")
	case !validClientID(cl.ID):
		ps.add(prefix+"id", "must be 1 to %d characters of A-Z a-z 0-9 . _ -, got %q", maxClientIDLen, cl.ID)
	}

	if len(cl.RedirectURIs) == 0 {
		ps.add(prefix+"redirect_uris", "at least one is required")
	}
	for i, u := range cl.RedirectURIs {
		checkRedirectURI(ps, fmt.Sprintf("%sredirect_uris[%d]", prefix, i), u)
	}
	for i, u := range cl.PostLogoutRedirectURIs {
		checkRedirectURI(ps, fmt.Sprintf("%spost_logout_redirect_uris[%d]", prefix, i), u)
	}
	seenGroups := make(map[string]bool)
	for i, g := range cl.Groups {
		key := fmt.Sprintf("%sgroups[%d]", prefix, i)
		switch {
		case !slices.Contains(groupShapes, g):
			ps.add(key, "must be one of %s, got %q", strings.Join(groupShapes, ", "), g)
		case seenGroups[g]:
			ps.add(key, "duplicate %q", g)
		}
		seenGroups[g] = true
	}

	inline := cl.Secret != "" && !cl.resolved.filled
	var sources []string
	for _, s := range []struct {
		key string
		set bool
	}{{"secret", inline}, {"secret_env", cl.SecretEnv != ""}, {"secret_file", cl.SecretFile != ""}} {
		if s.set {
			sources = append(sources, s.key)
		}
	}
	if cl.BackchannelLogoutURI != "" {
		checkRedirectURI(ps, prefix+"backchannel_logout_uri", cl.BackchannelLogoutURI)
	}
	if cl.Public {
		for _, s := range sources {
			ps.add(prefix+s, "a public client must not have a secret")
		}
		if cl.TokenEndpointAuthMethod != "" && cl.TokenEndpointAuthMethod != "none" {
			ps.add(prefix+"token_endpoint_auth_method", "a public client authenticates with none (PKCE)")
		}
		return
	}
	switch cl.TokenEndpointAuthMethod {
	case "", "client_secret_basic", "client_secret_post":
		if cl.JWKS != "" || cl.JWKSURI != "" {
			ps.add(prefix+"token_endpoint_auth_method", "jwks and jwks_uri need private_key_jwt")
		}
	case "private_key_jwt":
		for _, s := range sources {
			ps.add(prefix+s, "a private_key_jwt client has no secret")
		}
		switch {
		case cl.JWKS == "" && cl.JWKSURI == "":
			ps.add(prefix+"jwks", "private_key_jwt needs jwks or jwks_uri")
		case cl.JWKS != "" && cl.JWKSURI != "":
			ps.add(prefix+"jwks", "set only one of jwks, jwks_uri")
		case cl.JWKS != "":
			if msg := checkPublicJWKS(cl.JWKS); msg != "" {
				ps.add(prefix+"jwks", "%s", msg)
			}
		default:
			checkBaseURL(ps, prefix+"jwks_uri", cl.JWKSURI)
		}
		return
	default:
		ps.add(prefix+"token_endpoint_auth_method", "must be client_secret_basic, client_secret_post or private_key_jwt, got %q", cl.TokenEndpointAuthMethod)
	}
	switch {
	case len(sources) == 0:
		ps.add(prefix+"secret", "required for a confidential client (set secret, secret_env or secret_file, or public: true)")
	case len(sources) > 1:
		ps.add(prefix+"secret", "set only one of %s", strings.Join(sources, ", "))
	case cl.resolved.problem != "":
		ps.add(prefix+cl.resolved.key, "%s", cl.resolved.problem)
	case cl.Secret == "":
		ps.add(prefix+sources[0], "not resolved (the configuration was not read by LoadConfig)")
	case utf8.RuneCountInString(cl.Secret) < minClientSecretLen:
		ps.add(prefix+sources[0], "the secret must be at least %d characters", minClientSecretLen)
	}
}

// checkPublicJWKS returns why raw is not a usable JSON Web Key Set of public signing keys, or "".
func checkPublicJWKS(raw string) string {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(raw), &set); err != nil {
		return "not a JSON Web Key Set: " + err.Error()
	}
	if len(set.Keys) == 0 {
		return "has no keys"
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return "must hold public keys only (a private key " + k.KeyID + " was found)"
		}
	}
	return ""
}

// validClientID reports whether id matches [A-Za-z0-9._-]{1,64}.
func validClientID(id string) bool {
	if id == "" || len(id) > maxClientIDLen {
		return false
	}
	for _, r := range id {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._-", r)) {
			return false
		}
	}
	return true
}

// checkIssuer applies the issuer rules: an absolute https URL (http only for a loopback host)
// with a host and no trailing slash, query, fragment or userinfo.
func checkIssuer(ps *problems, raw string) {
	const key = "issuer"
	u, err := url.Parse(raw)
	if err != nil {
		ps.add(key, "not a URL: %v", err)
		return
	}
	if !u.IsAbs() {
		ps.add(key, "must be an absolute URL such as https://sso.example.com")
		return
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopback(u.Hostname()):
	case u.Scheme == "http":
		ps.add(key, "must use https (http only for localhost, 127.0.0.0/8 or ::1)")
	default:
		ps.add(key, "must use https, got scheme %q", u.Scheme)
	}
	if u.Host == "" {
		ps.add(key, "must have a host")
	}
	if u.User != nil {
		ps.add(key, "must not contain userinfo")
	}
	if strings.HasSuffix(raw, "/") {
		ps.add(key, "must not end with a slash")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#") {
		ps.add(key, "must not have a query or fragment")
	}
}

// isLoopback reports whether host is localhost, in 127.0.0.0/8 or ::1.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkListen(ps *problems, listen string) {
	if listen == "" {
		ps.add("listen", "required")
		return
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		ps.add("listen", "must be host:port, such as 127.0.0.1:8080: %v", err)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		ps.add("listen", "port must be a number from 0 to 65535, got %q", port)
	}
}

func checkEnum(ps *problems, key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	ps.add(key, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
}

// checkBaseURL requires an absolute http(s) URL with a host, no userinfo, query or fragment.
func checkBaseURL(ps *problems, key, raw string) {
	u, ok := parseHTTPURL(ps, key, raw)
	if !ok {
		return
	}
	if u.RawQuery != "" || u.Fragment != "" {
		ps.add(key, "must not have a query or fragment")
	}
}

// checkRedirectURI requires an absolute http(s) URL with a host, no fragment and no userinfo.
// Whether http is acceptable for a given client is the OIDC library's decision.
func checkRedirectURI(ps *problems, key, raw string) {
	u, ok := parseHTTPURL(ps, key, raw)
	if !ok {
		return
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		ps.add(key, "must not have a fragment")
	}
}

// parseHTTPURL reports the problems shared by base and redirect URLs: not a URL, not http(s),
// no host, userinfo. ok is false when raw is not an http(s) URL at all, so the caller's further
// checks would only add noise.
func parseHTTPURL(ps *problems, key, raw string) (u *url.URL, ok bool) {
	if raw == "" {
		ps.add(key, "required")
		return nil, false
	}
	u, err := url.Parse(raw)
	if err != nil {
		ps.add(key, "not a URL: %v", err)
		return nil, false
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		ps.add(key, "must be an absolute http or https URL, got %q", raw)
		return nil, false
	}
	if u.Host == "" {
		ps.add(key, "must have a host")
	}
	if u.User != nil {
		ps.add(key, "must not contain userinfo")
	}
	return u, true
}

// checkPlaceholders rejects braces other than the known placeholders {userid} and {corp_id}.
func checkPlaceholders(ps *problems, key, tmpl string) {
	rest := strings.NewReplacer("{userid}", "", "{corp_id}", "").Replace(tmpl)
	if strings.ContainsAny(rest, "{}") {
		ps.add(key, "unknown placeholder or stray brace in %q (known: {userid}, {corp_id})", tmpl)
	}
}

// The types that hold secrets (Config, WeComConfig, UpstreamConfig, ClientConfig, EtcdConfig)
// render themselves with secrets redacted for fmt (String, GoString), slog (LogValue) and
// encoding/json (MarshalJSON): they are not a wire format, and a configuration must never leak
// into logs. Read a secret through its field.

// LogValue is the configuration as a slog group keyed like the file, secrets redacted.
func (c Config) LogValue() slog.Value { return structLogValue(reflect.ValueOf(c)) }

// String is the configuration as `key=value` pairs keyed like the file, secrets redacted.
func (c Config) String() string { return flatString(c.LogValue()) }

// GoString keeps %#v from printing secrets.
func (c Config) GoString() string { return "main.Config{" + c.String() + "}" }

// MarshalJSON encodes the configuration keyed like the file, secrets redacted.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(plainValue(c.LogValue())) }

// LogValue is the WeCom block as a slog group, the secret redacted.
func (w WeComConfig) LogValue() slog.Value { return structLogValue(reflect.ValueOf(w)) }

// String is the WeCom block as `key=value` pairs, the secret redacted.
func (w WeComConfig) String() string { return flatString(w.LogValue()) }

// GoString keeps %#v from printing the secret.
func (w WeComConfig) GoString() string { return "main.WeComConfig{" + w.String() + "}" }

// MarshalJSON encodes the WeCom block keyed like the file, the secret redacted.
func (w WeComConfig) MarshalJSON() ([]byte, error) { return json.Marshal(plainValue(w.LogValue())) }

// LogValue is the upstream as a slog group, its secret redacted.
func (u UpstreamConfig) LogValue() slog.Value { return structLogValue(reflect.ValueOf(u)) }

// String is the upstream as `key=value` pairs, its secret redacted.
func (u UpstreamConfig) String() string { return flatString(u.LogValue()) }

// GoString keeps %#v from printing the secret.
func (u UpstreamConfig) GoString() string { return "main.UpstreamConfig{" + u.String() + "}" }

// MarshalJSON encodes the upstream keyed like the file, its secret redacted.
func (u UpstreamConfig) MarshalJSON() ([]byte, error) {
	return json.Marshal(plainValue(u.LogValue()))
}

// LogValue is the etcd block as a slog group, the password redacted.
func (e EtcdConfig) LogValue() slog.Value { return structLogValue(reflect.ValueOf(e)) }

// String is the etcd block as `key=value` pairs, the password redacted.
func (e EtcdConfig) String() string { return flatString(e.LogValue()) }

// GoString keeps %#v from printing the password.
func (e EtcdConfig) GoString() string { return "main.EtcdConfig{" + e.String() + "}" }

// MarshalJSON encodes the etcd block keyed like the file, the password redacted.
func (e EtcdConfig) MarshalJSON() ([]byte, error) { return json.Marshal(plainValue(e.LogValue())) }

// LogValue is the client as a slog group, the secret redacted.
func (c ClientConfig) LogValue() slog.Value { return structLogValue(reflect.ValueOf(c)) }

// String is the client as `key=value` pairs, the secret redacted.
func (c ClientConfig) String() string { return flatString(c.LogValue()) }

// GoString keeps %#v from printing the secret.
func (c ClientConfig) GoString() string { return "main.ClientConfig{" + c.String() + "}" }

// MarshalJSON encodes the client keyed like the file, the secret redacted.
func (c ClientConfig) MarshalJSON() ([]byte, error) { return json.Marshal(plainValue(c.LogValue())) }

// structLogValue renders a config struct as a group of its koanf-tagged fields; nil pointers (an
// unset optional value) are left out. A non-empty field tagged `secret` or `password` becomes
// redactedText. Fields are read by reflection, never through their
// String or LogValue methods, so nothing recurses and no secret slips through a nested value.
func structLogValue(v reflect.Value) slog.Value {
	var attrs []slog.Attr
	for f, fv := range v.Fields() {
		tag := f.Tag.Get("koanf")
		if tag == "" || !f.IsExported() || fv.Kind() == reflect.Pointer && fv.IsNil() {
			continue
		}
		attrs = append(attrs, slog.Attr{Key: tag, Value: fieldLogValue(tag, fv)})
	}
	return slog.GroupValue(attrs...)
}

func fieldLogValue(tag string, v reflect.Value) slog.Value {
	switch {
	case (tag == "secret" || tag == "password") && v.Kind() == reflect.String:
		if v.String() == "" {
			return slog.StringValue("")
		}
		return slog.StringValue(redactedText)
	case isDuration(v.Type()):
		return slog.DurationValue(time.Duration(v.Int()))
	case v.Kind() == reflect.Struct:
		return structLogValue(v)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if v.Len() == 0 {
			return slog.AnyValue([]string{})
		}
		attrs := make([]slog.Attr, v.Len())
		for i := range v.Len() {
			attrs[i] = slog.Attr{Key: strconv.Itoa(i), Value: structLogValue(v.Index(i))}
		}
		return slog.GroupValue(attrs...)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		return slog.AnyValue(append([]string{}, v.Interface().([]string)...))
	case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String:
		// A group keyed by the map's keys, in order: claims.extra.employee_id=extattr.工号.
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		attrs := make([]slog.Attr, len(keys))
		for i, k := range keys {
			attrs[i] = slog.Attr{Key: k.String(), Value: fieldLogValue("", v.MapIndex(k))}
		}
		return slog.GroupValue(attrs...)
	case v.Kind() == reflect.Pointer:
		return fieldLogValue(tag, v.Elem())
	case v.Kind() == reflect.String:
		return slog.StringValue(v.String())
	case v.Kind() == reflect.Bool:
		return slog.BoolValue(v.Bool())
	}
	return slog.AnyValue(v.Interface())
}

// plainValue turns a value made by structLogValue into plain data for encoding/json: groups
// become objects, except list groups (keys "0", "1", ...) which become arrays; durations become
// strings such as "1h0m0s".
func plainValue(v slog.Value) any {
	switch v.Kind() {
	case slog.KindGroup:
	case slog.KindDuration:
		return v.Duration().String()
	default:
		return v.Any()
	}
	attrs := v.Group()
	if len(attrs) > 0 && isIndex(attrs[0].Key) {
		list := make([]any, len(attrs))
		for i, a := range attrs {
			list[i] = plainValue(a.Value)
		}
		return list
	}
	m := make(map[string]any, len(attrs))
	for _, a := range attrs {
		m[a.Key] = plainValue(a.Value)
	}
	return m
}

// isIndex reports whether a group key is a list index made by structLogValue.
func isIndex(key string) bool { return key != "" && strings.Trim(key, "0123456789") == "" }

// flatString writes a group as space-separated `a.b=value` pairs; struct list elements appear as
// `clients[0].id`, string lists as `[a,b]`. Values with blanks or quotes (and list
// items with commas or brackets) are quoted.
func flatString(v slog.Value) string {
	var b strings.Builder
	var walk func(prefix string, v slog.Value)
	walk = func(prefix string, v slog.Value) {
		for _, a := range v.Group() {
			key := a.Key
			switch {
			case prefix == "":
			case isIndex(key):
				key = prefix + "[" + key + "]"
			default:
				key = prefix + "." + key
			}
			if a.Value.Kind() == slog.KindGroup {
				walk(key, a.Value)
				continue
			}
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			var s string
			if list, ok := a.Value.Any().([]string); ok {
				items := make([]string, len(list))
				for i, item := range list {
					items[i] = quoteIfNeeded(item, ",[]")
				}
				s = "[" + strings.Join(items, ",") + "]"
			} else {
				s = quoteIfNeeded(a.Value.String(), "")
			}
			b.WriteString(key + "=" + s)
		}
	}
	walk("", v)
	return b.String()
}

// quoteIfNeeded quotes s when it has blanks, quotes or any of extra, so that it reads back as
// one value in flatString's output.
func quoteIfNeeded(s, extra string) string {
	if strings.ContainsAny(s, " \"\t\n\r"+extra) {
		return strconv.Quote(s)
	}
	return s
}

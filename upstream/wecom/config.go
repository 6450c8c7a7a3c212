package wecom

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Scopes of WeCom's in-client web authorization.
const (
	// ScopeBase authorizes silently and yields the member's identity only.
	ScopeBase = "snsapi_base"
	// ScopePrivateInfo asks the member to consent and yields a user_ticket (in-client door only)
	// that unlocks the sensitive profile fields.
	ScopePrivateInfo = "snsapi_privateinfo"
)

// Defaults for Config fields left zero.
const (
	DefaultAPIBaseURL    = "https://qyapi.weixin.qq.com"
	DefaultOAuthBaseURL  = "https://open.weixin.qq.com"
	DefaultLoginBaseURL  = "https://login.work.weixin.qq.com"
	DefaultTimeout       = 10 * time.Second
	DefaultDepartmentTTL = 10 * time.Minute
	// DefaultRateLimitCooldown is how long an endpoint is left alone after WeCom answered 45009
	// (frequency limit): WeCom blocks a per-minute limit for 60 s.
	DefaultRateLimitCooldown = 60 * time.Second
)

// Observer is told of every WeCom API call and token refresh (for metrics). Implementations must
// be quick and safe for concurrent use.
type Observer interface {
	// Call: endpoint like "user/get"; errcode as WeCom answered (0 success), or -2 when there was
	// no usable answer (transport error, HTTP status, undecodable body, timeout); d is the call's
	// duration.
	Call(endpoint string, errcode int, d time.Duration)
	// TokenRefresh: one gettoken attempt and its outcome (nil on success).
	TokenRefresh(err error)
}

// NoAnswer is the errcode an Observer is given for a call that got no usable answer.
const NoAnswer = -2

// Config configures a Connector. CorpID, AgentID, Secret, RedirectURL and Tokens are required.
type Config struct {
	CorpID  string
	AgentID string // the self-built app's agent id (digits)
	Secret  string // the app's secret; never logged
	// Scope of the in-client door: ScopeBase or ScopePrivateInfo (default ScopeBase).
	Scope string
	// Base URLs without a path; the endpoints' paths are appended. Defaults: WeCom's own hosts.
	APIBaseURL   string // cgi-bin/… is appended
	OAuthBaseURL string // connect/oauth2/authorize is appended
	LoginBaseURL string // wwlogin/sso/login is appended
	// RedirectURL is our callback, e.g. https://sso.example.com/login/wecom/callback. Its host
	// must be the app's trusted domain (可信域名) in the WeCom admin console.
	RedirectURL string
	// HTTPClient makes the API calls; nil means a client whose Timeout is Timeout, keeping up to
	// 64 idle connections to WeCom (net/http's default of 2 reconnects for most concurrent logins).
	HTTPClient *http.Client
	// Timeout bounds each WeCom call (applied through the request context). Default 10s.
	Timeout time.Duration
	// Tokens persists the access token so every request and process shares one.
	Tokens TokenStore
	// DepartmentTTL is how long a department (name and parent) is cached, and with Tags the tag
	// list and each tag's members. Default 10m.
	DepartmentTTL time.Duration
	// Tags makes logins and rechecks read the person's tags (标签) into Identity.Tags: tag/list
	// plus one tag/get per tag, cached for DepartmentTTL. Off by default because it costs calls.
	Tags bool
	// RateLimitCooldown is how long an endpoint is not called after WeCom answered 45009
	// (frequency limit); calls meanwhile fail at once with upstream.ErrUnavailable. Default 60s.
	RateLimitCooldown time.Duration
	// Observer is told of every call and token refresh (metrics); nil means none.
	Observer Observer
	// Sleep waits d between retries (-1 system busy, 45033 concurrency limit), or returns early
	// with ctx's error. nil means a timer; tests inject their own.
	Sleep func(ctx context.Context, d time.Duration) error
	// Logger receives operator-facing messages; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// LogValue describes the configuration without the secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("corp_id", c.CorpID),
		slog.String("agent_id", c.AgentID),
		slog.Bool("secret_set", c.Secret != ""),
		slog.String("scope", c.Scope),
		slog.String("api_base_url", c.APIBaseURL),
		slog.String("oauth_base_url", c.OAuthBaseURL),
		slog.String("login_base_url", c.LoginBaseURL),
		slog.String("redirect_url", c.RedirectURL),
		slog.Bool("tags", c.Tags),
	)
}

// TokenStore persists the corp access token so every request and process shares one (the caller
// adapts its storage to it). Implementations must be safe for concurrent use. A store that fails
// degrades to per-process caching: errors are logged, never fatal to a login.
type TokenStore interface {
	// LoadToken returns the token saved under key. ok is false when none is saved; a token past
	// expiresAt may be returned or withheld.
	LoadToken(ctx context.Context, key string) (token string, expiresAt time.Time, ok bool, err error)
	// SaveToken replaces the token saved under key.
	SaveToken(ctx context.Context, key, token string, expiresAt time.Time) error
	// ForgetToken removes the token saved under key; a missing token is not an error.
	ForgetToken(ctx context.Context, key string) error
}

// TokenClaimer is a TokenStore shared by several processes that can also grant one of them at a
// time the right to fetch a new token. When the store implements it, a process that finds no
// usable token claims the refresh before calling gettoken, and one that finds the claim held
// waits for the token the holder saves, so the replicas of a deployment call gettoken once, not
// once each.
type TokenClaimer interface {
	// ClaimRefresh returns true when the caller may fetch a new token for key: no other claim is
	// held until it expires at until. Of concurrent claims exactly one returns true.
	ClaimRefresh(ctx context.Context, key string, until time.Time) (bool, error)
}

// withDefaults validates cfg and fills in defaults. It reports every problem at once.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.CorpID == "" {
		bad("corp id is required")
	}
	if c.AgentID == "" {
		bad("agent id is required")
	} else if !isDigits(c.AgentID) {
		bad("agent id %q must be digits", c.AgentID)
	}
	if c.Secret == "" {
		bad("secret is required")
	}
	switch c.Scope {
	case "":
		c.Scope = ScopeBase
	case ScopeBase, ScopePrivateInfo:
	default:
		bad("scope %q must be %s or %s", c.Scope, ScopeBase, ScopePrivateInfo)
	}
	for _, f := range []struct {
		name string
		v    *string
		def  string
	}{
		{"api base URL", &c.APIBaseURL, DefaultAPIBaseURL},
		{"oauth base URL", &c.OAuthBaseURL, DefaultOAuthBaseURL},
		{"login base URL", &c.LoginBaseURL, DefaultLoginBaseURL},
	} {
		if *f.v == "" {
			*f.v = f.def
		}
		*f.v = strings.TrimRight(*f.v, "/")
		if err := checkAbsURL(*f.v); err != nil {
			bad("%s: %w", f.name, err)
		}
	}
	if c.RedirectURL == "" {
		bad("redirect URL is required")
	} else if err := checkAbsURL(c.RedirectURL); err != nil {
		bad("redirect URL: %w", err)
	} else if strings.Contains(c.RedirectURL, "#") {
		bad("redirect URL must not contain a fragment (WeCom does not return it)")
	}
	if c.Tokens == nil {
		bad("a token store is required")
	}
	if c.Timeout < 0 {
		bad("timeout must not be negative")
	} else if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.DepartmentTTL < 0 {
		bad("department TTL must not be negative")
	} else if c.DepartmentTTL == 0 {
		c.DepartmentTTL = DefaultDepartmentTTL
	}
	if c.RateLimitCooldown < 0 {
		bad("rate-limit cool-down must not be negative")
	} else if c.RateLimitCooldown == 0 {
		c.RateLimitCooldown = DefaultRateLimitCooldown
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: c.Timeout, Transport: newTransport()}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("wecom: invalid config: %w", err)
	}
	return c, nil
}

// sleep waits d, or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func checkAbsURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// maxIdleConnsPerHost is how many idle connections to WeCom's API are kept: a login makes two or
// three calls, and with net/http's default of two, concurrent logins open a new TLS connection
// for most of them (and leave the old ones in TIME_WAIT).
const maxIdleConnsPerHost = 64

// newTransport is http.DefaultTransport's setup (proxy from the environment, timeouts) with more
// idle connections per host.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = maxIdleConnsPerHost
	return t
}

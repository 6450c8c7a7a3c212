package wecom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream"
)

// maxResponseBytes bounds how much of a WeCom response is read. WeCom's answers are a few KiB.
const maxResponseBytes = 1 << 20

// Errcodes the connector acts on. WeCom documents hundreds; these are the ones with a policy (the
// package documentation has the table).
const (
	CodeSystemBusy         = -1     // WeCom is busy: retry with backoff
	CodeInvalidSecret      = 40001  // wrong secret, secret reset, or the app is disabled
	CodeInvalidCorpID      = 40013  // wrong corp id
	CodeInvalidToken       = 40014  // access token invalid, or expired (WeCom reports expiry so)
	CodeInvalidCode        = 40029  // login code unknown, already used, or older than 5 minutes
	CodeInvalidAgentID     = 40056  // wrong agent id
	CodeInvalidSuiteToken  = 40082  // suite token invalid: a third-party token kind, wrong for a self-built app
	CodeTokenExpired       = 42001  // access token expired
	CodeSuiteTokenExpired  = 42009  // suite token expired: a third-party token kind, wrong for a self-built app
	CodeFrequencyLimit     = 45009  // API frequency limit: WeCom blocks the caller for a while
	CodeConcurrencyLimit   = 45033  // API concurrency limit
	CodeAPIForbidden       = 48002  // the app may not call this API
	CodeUntrustedDomain    = 50001  // redirect URI not in the app's trusted domain, or another app's code
	CodeOutOfRange         = 50002  // member outside the app's visible range
	CodeAppDisabled        = 50003  // the app is disabled
	CodeNoPrivilege        = 60011  // no privilege to see the member/department/tag
	CodeUntrustedIP        = 60020  // this server's IP is not a trusted IP of the app
	CodeUserNotInRange     = 60021  // userid outside the app's visible range
	CodeUserNotFound       = 60111  // userid unknown (or left, or outside the visible range)
	CodeDomainICP          = 80001  // trusted domain invalid or without a matching ICP filing
	CodeDomainQuota        = 85004  // trusted-domain changes exceeded the monthly quota
	CodeDomainUnverified   = 85005  // trusted domain's ownership not verified
	CodeAgentNotAuthorized = 301002 // the token is not authorized for this agent id
)

// configHint names the likely cause of a configuration errcode for the operator, or returns ""
// when code is not a configuration fault.
func configHint(code int) string {
	switch code {
	case CodeInvalidSecret:
		return "WeCom rejected the secret: check wecom.secret is the current secret of this app (agent_id), not reset since, and that the app is enabled"
	case CodeInvalidCorpID:
		return "WeCom rejected the corp id: check wecom.corp_id (admin console: 我的企业 → 企业ID)"
	case CodeInvalidAgentID:
		return "WeCom rejected the agent id: check wecom.agent_id is the AgentId of the self-built app"
	case CodeInvalidSuiteToken, CodeSuiteTokenExpired:
		return "WeCom expected a third-party suite token: this connector serves a self-built (or 代开发) app with gettoken and the app's own secret; check wecom.secret and wecom.agent_id belong to such an app"
	case CodeAPIForbidden:
		return "WeCom forbids this API to the app: check the app type and its API permissions (a contact-sync or third-party secret will not do)"
	case CodeUntrustedDomain:
		return "the redirect URL's host is not the app's trusted domain (可信域名), or the code was issued for another app: set the trusted domain to the issuer's host[:port] exactly"
	case CodeAppDisabled:
		return "the WeCom app is disabled: enable it in the admin console"
	case CodeUntrustedIP:
		return "this server's egress IP is not among the app's trusted IPs (企业可信IP): add it in the admin console (takes about a minute)"
	case CodeDomainICP:
		return "WeCom rejects the trusted domain: it must be a full domain name (no IP address, port or short link) with an ICP filing by the corp or a related entity"
	case CodeDomainQuota:
		return "the corp has used up WeCom's trusted-domain change quota (20 per month): the trusted domain cannot be changed again this month"
	case CodeDomainUnverified:
		return "the trusted domain's ownership is not verified: upload WeCom's WW_verify_….txt file to the domain's root and verify it in the admin console"
	case CodeAgentNotAuthorized:
		return "the access token is not authorized for this agent id: the secret belongs to another app"
	}
	return ""
}

// APIError is an errcode WeCom answered (with HTTP 200). Callers use errors.As; Msg is WeCom's
// errmsg, for humans only — never branch on it.
type APIError struct {
	Endpoint string // e.g. "user/get"
	Code     int
	Msg      string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("wecom: %s: errcode %d: %s", e.Endpoint, e.Code, e.Msg)
}

// TokenRejected reports whether WeCom refused the access token (40014, 42001): refresh and retry.
func (e *APIError) TokenRejected() bool {
	return e.Code == CodeInvalidToken || e.Code == CodeTokenExpired
}

// ConfigFault reports whether the errcode means the deployment is misconfigured (wrong secret,
// corp id, agent id, trusted domain, trusted IP, …). Retrying cannot help.
func (e *APIError) ConfigFault() bool {
	return configHint(e.Code) != ""
}

// Hint is an operator-facing explanation of a configuration errcode, or "".
func (e *APIError) Hint() string { return configHint(e.Code) }

// Transient reports whether the errcode means WeCom is busy or limiting us (-1, 45009, 45033):
// trying again later may work.
func (e *APIError) Transient() bool {
	switch e.Code {
	case CodeSystemBusy, CodeFrequencyLimit, CodeConcurrencyLimit:
		return true
	}
	return false
}

// class is the upstream error class of the errcode, or nil when it depends on the call (a refusal
// of the person, a degraded lookup) or has no policy.
func (e *APIError) class() error {
	switch {
	case e.ConfigFault():
		return upstream.ErrMisconfigured
	case e.Transient(), e.TokenRejected(): // a token rejected even after a refresh
		return upstream.ErrUnavailable
	}
	return nil
}

// ErrCode returns the errcode of the *APIError in err's chain, or 0.
func ErrCode(err error) int {
	var e *APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// IsConfigFault reports whether err's chain holds an *APIError that is a configuration fault.
func IsConfigFault(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.ConfigFault()
}

// envelope is the part every WeCom answer shares.
type envelope struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// classError puts err in an upstream error class (upstream.ErrUnavailable or
// upstream.ErrMisconfigured) for errors.Is, keeping err's message and chain.
type classError struct {
	err   error
	class error
}

func (e *classError) Error() string   { return e.err.Error() }
func (e *classError) Unwrap() []error { return []error{e.err, e.class} }

// withClass returns err in class; nil stays nil.
func withClass(class, err error) error {
	if err == nil {
		return nil
	}
	return &classError{err: err, class: class}
}

// classify makes sure a failure the connector returns is a refusal or has an upstream error
// class: a *upstream.DeniedError and an error already classed pass unchanged, anything else
// (an errcode without a policy, an answer that makes no sense, a caller's cancelled context) is
// upstream.ErrUnavailable.
func classify(err error) error {
	if err == nil || upstream.IsDenied(err) || errors.Is(err, upstream.ErrUnavailable) || errors.Is(err, upstream.ErrMisconfigured) {
		return err
	}
	return withClass(upstream.ErrUnavailable, err)
}

// Backoffs between retries: -1 (system busy) is retried at most 3 times, 45033 (concurrency
// limit) at most twice.
var (
	busyBackoff        = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	concurrencyBackoff = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}
)

// retrying runs attempt, one request to endpoint, under the policy for WeCom's transient
// errcodes: -1 is retried after each of busyBackoff, 45033 after each of concurrencyBackoff, and
// 45009 starts the endpoint's cool-down (no retry). While the endpoint cools down, attempt is not
// run at all. Only errcodes of endpoint itself count: a failed gettoken inside attempt has been
// through its own retrying already.
func (c *Connector) retrying(ctx context.Context, endpoint string, attempt func() error) error {
	var busy, concurrent int
	for {
		if err := c.cooldown.check(endpoint); err != nil {
			return err
		}
		err := attempt()
		var apiErr *APIError
		if !errors.As(err, &apiErr) || apiErr.Endpoint != endpoint {
			return err
		}
		var wait time.Duration
		switch {
		case apiErr.Code == CodeSystemBusy && busy < len(busyBackoff):
			wait = busyBackoff[busy]
			busy++
		case apiErr.Code == CodeConcurrencyLimit && concurrent < len(concurrencyBackoff):
			wait = concurrencyBackoff[concurrent]
			concurrent++
		case apiErr.Code == CodeFrequencyLimit:
			c.cooldown.trip(ctx, apiErr)
			return err
		default:
			return err
		}
		c.log.InfoContext(ctx, "wecom: WeCom is busy; retrying",
			slog.String("endpoint", endpoint), slog.Int("errcode", apiErr.Code), slog.Duration("backoff", wait))
		if c.cfg.Sleep(ctx, wait) != nil {
			return err
		}
	}
}

// call makes an authenticated API call under the errcode policy: it adds the access token, and
// when WeCom rejects the token (40014/42001) it refreshes it and retries exactly once; -1, 45033
// and 45009 are handled by retrying. body non-nil means POST JSON.
func (c *Connector) call(ctx context.Context, endpoint string, q url.Values, body, out any) error {
	tokenRetried := false
	return c.retrying(ctx, endpoint, func() error {
		tok, err := c.tokens.get(ctx, "")
		if err != nil {
			return err
		}
		err = c.do(ctx, endpoint, withToken(q, tok), body, out)
		var apiErr *APIError
		if tokenRetried || !errors.As(err, &apiErr) || !apiErr.TokenRejected() {
			return err
		}
		tokenRetried = true
		c.log.InfoContext(ctx, "wecom: access token rejected; refreshing it and retrying once",
			slog.String("endpoint", endpoint), slog.Int("errcode", apiErr.Code))
		c.tokens.reject(tok)
		tok, err = c.tokens.get(ctx, tok)
		if err != nil {
			return err
		}
		return c.do(ctx, endpoint, withToken(q, tok), body, out)
	})
}

// cooldown remembers the endpoints WeCom answered 45009 (frequency limit) for, and until when
// they are left alone.
type cooldown struct {
	window time.Duration
	now    func() time.Time
	log    *slog.Logger

	mu    sync.Mutex
	until map[string]time.Time
	cause map[string]*APIError
}

// check returns an upstream.ErrUnavailable error while endpoint cools down, else nil.
func (cd *cooldown) check(endpoint string) error {
	cd.mu.Lock()
	defer cd.mu.Unlock()
	until, ok := cd.until[endpoint]
	if !ok {
		return nil
	}
	if !cd.now().Before(until) {
		delete(cd.until, endpoint)
		delete(cd.cause, endpoint)
		return nil
	}
	return withClass(upstream.ErrUnavailable, fmt.Errorf("wecom: %s: not called until %s after WeCom's frequency limit: %w",
		endpoint, until.Format(time.RFC3339), cd.cause[endpoint]))
}

// trip starts the cool-down of apiErr's endpoint, unless one is running, and then warns once.
func (cd *cooldown) trip(ctx context.Context, apiErr *APIError) {
	cd.mu.Lock()
	now := cd.now()
	if until, ok := cd.until[apiErr.Endpoint]; ok && now.Before(until) {
		cd.mu.Unlock()
		return
	}
	until := now.Add(cd.window)
	cd.until[apiErr.Endpoint], cd.cause[apiErr.Endpoint] = until, apiErr
	cd.mu.Unlock()
	cd.log.WarnContext(ctx, "wecom: WeCom's frequency limit (45009) hit; calls to this endpoint fail at once until the cool-down ends. "+
		"If it recurs, check that the access token is cached and shared, and look for the corp or IP at open.work.weixin.qq.com/wwopen/devtool/checkCorpSpamBlock",
		slog.String("endpoint", apiErr.Endpoint), slog.Time("until", until), slog.Duration("cooldown", cd.window))
}

func withToken(q url.Values, tok string) url.Values {
	out := make(url.Values, len(q)+1)
	for k, v := range q {
		out[k] = v
	}
	out.Set("access_token", tok)
	return out
}

// do makes one request to {APIBaseURL}/cgi-bin/{endpoint} and decodes the answer into out. It
// returns an *APIError for a non-zero errcode (in upstream.ErrMisconfigured for configuration
// errcodes, upstream.ErrUnavailable for -1, 45009, 45033, 40014 and 42001) and an error naming the
// endpoint in upstream.ErrUnavailable for anything else. It tells the Observer of the call.
// Errors never contain the URL, which carries the secret, token or code.
func (c *Connector) do(ctx context.Context, endpoint string, q url.Values, body, out any) (err error) {
	start := time.Now()
	defer func() { c.observe(endpoint, err, time.Since(start)) }()
	err = c.doOnce(ctx, endpoint, q, body, out)
	var apiErr *APIError
	switch {
	case err == nil:
	case !errors.As(err, &apiErr):
		err = withClass(upstream.ErrUnavailable, err) // no usable answer
	case apiErr.class() != nil:
		err = withClass(apiErr.class(), err)
	}
	return err
}

// observe tells the Observer of one call.
func (c *Connector) observe(endpoint string, err error, d time.Duration) {
	if c.cfg.Observer == nil {
		return
	}
	code := 0
	if err != nil {
		code = NoAnswer
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			code = apiErr.Code
		}
	}
	c.cfg.Observer.Call(endpoint, code, d)
}

// doOnce is do without the classes and the Observer.
func (c *Connector) doOnce(ctx context.Context, endpoint string, q url.Values, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	u := c.cfg.APIBaseURL + "/cgi-bin/" + endpoint
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	method, reqBody := http.MethodGet, io.Reader(nil)
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("wecom: %s: encoding request: %w", endpoint, err)
		}
		method, reqBody = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, reqBody)
	if err != nil {
		return fmt.Errorf("wecom: %s: building request: %w", endpoint, stripURL(err))
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}

	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return c.transportError(ctx, endpoint, err)
	}
	defer func() { _ = resp.Body.Close() }() // read-only body: a close error changes nothing
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return c.transportError(ctx, endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("wecom: %s: unexpected HTTP status %s", endpoint, resp.Status)
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("wecom: %s: response larger than %d bytes", endpoint, maxResponseBytes)
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return fmt.Errorf("wecom: %s: response is not WeCom JSON: %w", endpoint, err)
	}
	if env.ErrCode != 0 {
		apiErr := &APIError{Endpoint: endpoint, Code: env.ErrCode, Msg: env.ErrMsg}
		if apiErr.ConfigFault() {
			c.log.ErrorContext(ctx, "wecom: CONFIGURATION PROBLEM: "+apiErr.Hint(),
				slog.String("endpoint", endpoint), slog.Int("errcode", env.ErrCode), slog.String("errmsg", env.ErrMsg))
		}
		return apiErr
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("wecom: %s: decoding response: %w", endpoint, err)
		}
	}
	return nil
}

// transportError wraps a failed exchange, naming the endpoint and dropping the URL.
func (c *Connector) transportError(ctx context.Context, endpoint string, err error) error {
	err = stripURL(err)
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return fmt.Errorf("wecom: %s: no answer within %s: %w", endpoint, c.cfg.Timeout, err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("wecom: %s: %w", endpoint, context.Cause(ctx))
	}
	return fmt.Errorf("wecom: %s: %w", endpoint, err)
}

// stripURL unwraps *url.Error, whose message quotes the request URL (and with it the secret,
// access token or code).
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

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
)

// maxResponseBytes bounds how much of a WeCom response is read. WeCom's answers are a few KiB.
const maxResponseBytes = 1 << 20

// Errcodes the connector acts on. WeCom documents hundreds; these are the ones with a policy.
const (
	CodeInvalidSecret      = 40001  // wrong secret, secret reset, or the app is disabled
	CodeInvalidCorpID      = 40013  // wrong corp id
	CodeInvalidToken       = 40014  // access token invalid, or expired (WeCom reports expiry so)
	CodeInvalidCode        = 40029  // login code unknown, already used, or older than 5 minutes
	CodeInvalidAgentID     = 40056  // wrong agent id
	CodeTokenExpired       = 42001  // access token expired
	CodeAPIForbidden       = 48002  // the app may not call this API
	CodeUntrustedDomain    = 50001  // redirect URI not in the app's trusted domain, or another app's code
	CodeOutOfRange         = 50002  // member outside the app's visible range
	CodeAppDisabled        = 50003  // the app is disabled
	CodeNoPrivilege        = 60011  // no privilege to see the member/department
	CodeUntrustedIP        = 60020  // this server's IP is not a trusted IP of the app
	CodeUserNotInRange     = 60021  // userid outside the app's visible range
	CodeUserNotFound       = 60111  // userid unknown (or left, or outside the visible range)
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
	case CodeAPIForbidden:
		return "WeCom forbids this API to the app: check the app type and its API permissions (a contact-sync or third-party secret will not do)"
	case CodeUntrustedDomain:
		return "the redirect URL's host is not the app's trusted domain (可信域名), or the code was issued for another app: set the trusted domain to the issuer's host[:port] exactly"
	case CodeAppDisabled:
		return "the WeCom app is disabled: enable it in the admin console"
	case CodeUntrustedIP:
		return "this server's egress IP is not among the app's trusted IPs (企业可信IP): add it in the admin console (takes about a minute)"
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

// call makes an authenticated API call: it adds the access token, and when WeCom rejects the token
// (40014/42001) it refreshes it and retries exactly once. body non-nil means POST JSON.
func (c *Connector) call(ctx context.Context, endpoint string, q url.Values, body, out any) error {
	tok, err := c.tokens.get(ctx, "")
	if err != nil {
		return err
	}
	err = c.do(ctx, endpoint, withToken(q, tok), body, out)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || !apiErr.TokenRejected() {
		return err
	}
	c.log.InfoContext(ctx, "wecom: access token rejected; refreshing it and retrying once",
		slog.String("endpoint", endpoint), slog.Int("errcode", apiErr.Code))
	c.tokens.reject(tok)
	tok, err = c.tokens.get(ctx, tok)
	if err != nil {
		return err
	}
	return c.do(ctx, endpoint, withToken(q, tok), body, out)
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
// returns an *APIError for a non-zero errcode and a wrapped error naming the endpoint for anything
// else. Errors never contain the URL, which carries the secret, token or code.
func (c *Connector) do(ctx context.Context, endpoint string, q url.Values, body, out any) error {
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

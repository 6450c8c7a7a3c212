package wecom

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestDefaultHTTPClientKeepsConnections: without a client of the caller's, the connector keeps
// enough idle connections for concurrent logins, and keeps http.DefaultTransport's proxy setting.
func TestDefaultHTTPClientKeepsConnections(t *testing.T) {
	c, err := Config{
		CorpID: "ww1", AgentID: "1000002", Secret: "s", RedirectURL: "https://sso.example.com/login/wecom/callback",
		Tokens: noTokens{},
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := c.HTTPClient.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("default transport is %T", c.HTTPClient.Transport)
	}
	if tr.MaxIdleConnsPerHost < 32 || tr.Proxy == nil || c.HTTPClient.Timeout != c.Timeout {
		t.Fatalf("default client: %d idle connections per host, proxy %v, timeout %s (want ≥ 32, from the environment, %s)",
			tr.MaxIdleConnsPerHost, tr.Proxy != nil, c.HTTPClient.Timeout, c.Timeout)
	}
}

// noTokens is a TokenStore that keeps nothing.
type noTokens struct{}

func (noTokens) LoadToken(context.Context, string) (string, time.Time, bool, error) {
	return "", time.Time{}, false, nil
}
func (noTokens) SaveToken(context.Context, string, string, time.Time) error { return nil }
func (noTokens) ForgetToken(context.Context, string) error                  { return nil }

package wecom

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream"
)

// tokenMargin is how long before its expiry a token is replaced, so no call races the expiry.
const tokenMargin = 5 * time.Minute

// defaultTokenTTL applies when gettoken omits expires_in.
const defaultTokenTTL = 7200 * time.Second

// tokenCache holds the corp access token of one app: in memory, backed by a shared TokenStore.
// At most one refresh runs at a time; concurrent callers wait for it.
type tokenCache struct {
	key   string // corp_id + "/" + agent_id
	store TokenStore
	// fetch calls gettoken; it returns the token and its lifetime.
	fetch   func(ctx context.Context) (string, time.Duration, error)
	timeout time.Duration // bounds each store operation
	now     func() time.Time
	log     *slog.Logger

	mu        sync.Mutex
	token     string
	expiresAt time.Time
	// rejected is the last token WeCom refused. A refresh never takes it back from the store.
	rejected string
	// claimedUntil is when this process's refresh claim (TokenClaimer) expires: until then it is
	// this process that fetches, again if a fetch failed or WeCom rejected what it fetched.
	claimedUntil time.Time
	inflight     *tokenRefresh // non-nil while a refresh runs
}

// tokenRefresh is one refresh; done is closed when token or err is set.
type tokenRefresh struct {
	done  chan struct{}
	token string
	err   error
}

// usable reports whether a token expiring at exp may still be used (it is not within the margin).
func (tc *tokenCache) usable(exp time.Time) bool {
	return tc.now().Before(exp.Add(-tokenMargin))
}

// get returns an access token other than avoid (pass "" to accept any). It returns the memory copy
// while usable; otherwise it starts a refresh, or joins the one running, and waits for it.
func (tc *tokenCache) get(ctx context.Context, avoid string) (string, error) {
	for attempt := 0; ; attempt++ {
		tc.mu.Lock()
		if tc.token != "" && tc.token != avoid && tc.usable(tc.expiresAt) {
			tok := tc.token
			tc.mu.Unlock()
			return tok, nil
		}
		r, started := tc.inflight, false
		if r == nil {
			r, started = &tokenRefresh{done: make(chan struct{})}, true
			tc.inflight = r
			// The refresh outlives this caller's cancellation: others may be waiting for it.
			go tc.run(context.WithoutCancel(ctx), r)
		}
		tc.mu.Unlock()

		select {
		case <-r.done:
		case <-ctx.Done():
			return "", fmt.Errorf("wecom: waiting for the access token: %w", context.Cause(ctx))
		}
		if r.err != nil {
			return "", r.err
		}
		// A refresh we merely joined may have begun before avoid was rejected and read it back
		// from the store; then run one of our own (which skips the rejected token). A token
		// gettoken itself hands out again is taken as valid.
		if r.token != avoid || started || attempt > 0 {
			return r.token, nil
		}
	}
}

// reject records that WeCom refused tok: the memory copy is dropped if it is still tok, and the
// next refresh will not take tok back from the store (and forgets it there).
func (tc *tokenCache) reject(tok string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.rejected = tok
	if tc.token == tok {
		tc.token, tc.expiresAt = "", time.Time{}
	}
}

func (tc *tokenCache) run(ctx context.Context, r *tokenRefresh) {
	tok, exp, err := tc.refresh(ctx)
	tc.mu.Lock()
	if err == nil {
		tc.token, tc.expiresAt = tok, exp
	}
	r.token, r.err = tok, err
	tc.inflight = nil
	tc.mu.Unlock()
	close(r.done)
}

// refresh reloads the token from the store (another process may have refreshed it) and calls
// gettoken only when the store has nothing usable. Store failures are logged, not returned: the
// store is a cache.
func (tc *tokenCache) refresh(ctx context.Context) (string, time.Time, error) {
	tc.mu.Lock()
	rejected := tc.rejected
	tc.mu.Unlock()

	sctx, cancel := context.WithTimeout(ctx, tc.timeout)
	tok, exp, ok, err := tc.store.LoadToken(sctx, tc.key)
	cancel()
	switch {
	case err != nil:
		tc.log.WarnContext(ctx, "wecom: loading the access token from the store failed; fetching a new one",
			slog.String("key", tc.key), slog.Any("error", err))
	case ok && tok != "" && tok != rejected && tc.usable(exp):
		return tok, exp, nil
	case ok && tok != "" && tok == rejected:
		// Still the token WeCom refused: forget it so no other process picks it up.
		sctx, cancel := context.WithTimeout(ctx, tc.timeout)
		if err := tc.store.ForgetToken(sctx, tc.key); err != nil {
			tc.log.WarnContext(ctx, "wecom: forgetting the rejected access token failed",
				slog.String("key", tc.key), slog.Any("error", err))
		}
		cancel()
	}

	// The claim serves the routine refresh, which every replica reaches at about the same time.
	// After WeCom rejected a token this process fetches at once: the claim may be a previous
	// incarnation's, or another process's that is waiting for the very token WeCom refused.
	if claimer, ok := tc.store.(TokenClaimer); ok && rejected == "" {
		if tok, exp, ok := tc.awaitOtherRefresh(ctx, claimer, rejected); ok {
			return tok, exp, nil
		}
	}
	tok, ttl, err := tc.fetch(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	exp = tc.now().Add(ttl)
	tc.mu.Lock()
	if tok == tc.rejected {
		tc.rejected = "" // WeCom handed it out again, so it is valid after all
	}
	tc.mu.Unlock()

	sctx, cancel = context.WithTimeout(ctx, tc.timeout)
	defer cancel()
	if err := tc.store.SaveToken(sctx, tc.key, tok, exp); err != nil {
		tc.log.WarnContext(ctx, "wecom: saving the access token to the store failed; other processes will fetch their own",
			slog.String("key", tc.key), slog.Any("error", err))
	}
	tc.log.InfoContext(ctx, "wecom: fetched a new access token",
		slog.String("key", tc.key), slog.Time("expires_at", exp))
	return tok, exp, nil
}

// claimPoll is how often a process that lost the refresh claim looks for the holder's token.
const claimPoll = 50 * time.Millisecond

// awaitOtherRefresh claims the refresh for this process. When another process holds the claim it
// polls the store, for as long as a fetch may take (twice the call timeout: gettoken is retried),
// for the token that process saves; ok is true with it. false means: fetch yourself — the claim
// is ours, the store could not be asked, or the holder saved nothing usable in time (it may have
// died; liveness beats saving a call).
func (tc *tokenCache) awaitOtherRefresh(ctx context.Context, claimer TokenClaimer, rejected string) (string, time.Time, bool) {
	tc.mu.Lock()
	held := tc.now().Before(tc.claimedUntil)
	tc.mu.Unlock()
	if held {
		return "", time.Time{}, false
	}
	wait := 2 * tc.timeout
	until := tc.now().Add(wait)
	sctx, cancel := context.WithTimeout(ctx, tc.timeout)
	won, err := claimer.ClaimRefresh(sctx, tc.key, until)
	cancel()
	if err != nil {
		tc.log.WarnContext(ctx, "wecom: claiming the access-token refresh failed; fetching without the claim",
			slog.String("key", tc.key), slog.Any("error", err))
		return "", time.Time{}, false
	}
	if won {
		tc.mu.Lock()
		tc.claimedUntil = until
		tc.mu.Unlock()
		return "", time.Time{}, false
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(claimPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", time.Time{}, false
		case <-deadline.C:
			tc.log.WarnContext(ctx, "wecom: the process refreshing the access token saved none in time; fetching one",
				slog.String("key", tc.key))
			return "", time.Time{}, false
		case <-tick.C:
		}
		sctx, cancel := context.WithTimeout(ctx, tc.timeout)
		tok, exp, ok, err := tc.store.LoadToken(sctx, tc.key)
		cancel()
		if err == nil && ok && tok != "" && tok != rejected && tc.usable(exp) {
			return tok, exp, true
		}
	}
}

// gettokenResponse is gettoken's answer.
type gettokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// fetchToken calls gettoken under the errcode policy (-1 and 45033 retried, 45009 cools gettoken
// down). Configuration errcodes (40001, 40013, …) are logged by do and returned; they are never
// retried. The Observer hears of every attempt.
func (c *Connector) fetchToken(ctx context.Context) (string, time.Duration, error) {
	q := url.Values{"corpid": {c.cfg.CorpID}, "corpsecret": {c.cfg.Secret}}
	var resp gettokenResponse
	err := c.retrying(ctx, "gettoken", func() error {
		resp = gettokenResponse{}
		err := c.do(ctx, "gettoken", q, nil, &resp)
		if err == nil && resp.AccessToken == "" {
			err = withClass(upstream.ErrUnavailable, errors.New("wecom: gettoken: answer has no access_token"))
		}
		if c.cfg.Observer != nil {
			c.cfg.Observer.TokenRefresh(err)
		}
		return err
	})
	if err != nil {
		return "", 0, err
	}
	ttl := time.Duration(resp.ExpiresIn) * time.Second
	if ttl <= 0 {
		ttl = defaultTokenTTL
	}
	return resp.AccessToken, ttl, nil
}

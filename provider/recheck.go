package provider

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream"
)

// errNoLongerAllowed: the upstream says the person may no longer sign in.
var errNoLongerAllowed = errors.New("provider: the upstream no longer lets this person sign in")

// stillAllowed decides, at a refresh, whether the person may go on: when the upstream last
// confirmed them longer ago than RecheckInterval it is asked again (one call per person however
// many refreshes arrive together). A refusal revokes the refresh family; an upstream that cannot
// answer is tolerated until the last confirmation is RecheckGrace old, then refreshes fail closed.
func (p *Provider) stillAllowed(ctx context.Context, u storage.User, familyID string) error {
	now := p.now()
	if now.Sub(u.LastChecked) <= p.cfg.RecheckInterval {
		return nil
	}
	up, ok := p.upstreamByID(u.Upstream)
	if !ok {
		return fmt.Errorf("provider: user %q belongs to upstream %q, which is no longer configured", u.Subject, u.Upstream)
	}
	rc, ok := up.Connector.(upstream.Rechecker)
	if !ok {
		return nil // this upstream cannot be asked without the person
	}
	err := p.rechecks.do(u.Subject, func() error { return p.recheck(ctx, up, rc, u) })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNoLongerAllowed):
		if rerr := p.store.RevokeRefreshFamily(ctx, familyID); rerr != nil {
			p.log.ErrorContext(ctx, "recheck: revoke refresh family", "error", rerr)
		}
		return err
	case now.Sub(u.LastChecked) <= p.cfg.RecheckGrace:
		p.log.WarnContext(ctx, "recheck: upstream unavailable; refresh allowed within the grace period",
			"sub", u.Subject, "last_checked", u.LastChecked, "error", err)
		return nil
	default:
		p.log.ErrorContext(ctx, "recheck: upstream unavailable past the grace period; refresh refused",
			"sub", u.Subject, "last_checked", u.LastChecked, "error", err)
		return fmt.Errorf("provider: cannot confirm the account with the upstream: %w", err)
	}
}

// recheck asks the upstream and records the answer: a fresh profile and LastChecked on success.
func (p *Provider) recheck(ctx context.Context, up Upstream, rc upstream.Rechecker, u storage.User) error {
	id, err := rc.Recheck(ctx, u.UserID)
	var denied *upstream.DeniedError
	if errors.As(err, &denied) {
		p.log.InfoContext(ctx, "recheck: access withdrawn", "sub", u.Subject, "kind", denied.Kind, "reason", denied.Reason)
		return fmt.Errorf("%w: %s", errNoLongerAllowed, denied.Reason)
	}
	if err != nil {
		return err
	}
	_, err = p.store.UpdateUser(ctx, u.Subject, func(cur *storage.User, _ bool) error {
		fresh, err := p.claims.user(up, id, *cur, p.now())
		if err != nil {
			return err
		}
		*cur = fresh
		return nil
	})
	return err
}

// recheckGroup runs one re-check per person at a time; concurrent callers share its result.
type recheckGroup struct {
	mu       sync.Mutex
	inflight map[string]*recheckCall
}

type recheckCall struct {
	done chan struct{}
	err  error
}

func (g *recheckGroup) do(key string, fn func() error) error {
	g.mu.Lock()
	if c, ok := g.inflight[key]; ok {
		g.mu.Unlock()
		<-c.done
		return c.err
	}
	if g.inflight == nil {
		g.inflight = make(map[string]*recheckCall)
	}
	c := &recheckCall{done: make(chan struct{})}
	g.inflight[key] = c
	g.mu.Unlock()

	c.err = fn()
	g.mu.Lock()
	delete(g.inflight, key)
	g.mu.Unlock()
	close(c.done)
	return c.err
}

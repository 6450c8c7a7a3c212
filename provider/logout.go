package provider

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// Back-channel logout delivery (OpenID Connect Back-Channel Logout 1.0).
const (
	backchannelEvent = "http://schemas.openid.net/event/backchannel-logout"
	// logoutTokenTTL: a logout token is acted on at once; a short life limits replay.
	logoutTokenTTL = 2 * time.Minute
	// backchannelAttempts bounds delivery to one client; backchannelBackoff doubles between tries.
	backchannelAttempts = 3
	backchannelBackoff  = 500 * time.Millisecond
	backchannelTimeout  = 5 * time.Second
)

// TerminateSessionFromRequest ends the SSO session at end_session (the library has validated the
// id_token_hint and the post-logout redirect URI already). The session is the requesting
// browser's, or else the one the hint's sid names; a hint for someone else ends nothing. Its
// refresh families are revoked with it, and every client it signed in to is told through the
// back channel, without holding up the person's redirect.
func (s *opStorage) TerminateSessionFromRequest(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	p := s.p
	id, _ := ctx.Value(sessionCtxKey{}).(string)
	if id == "" && req.IDTokenHintClaims != nil {
		id = req.IDTokenHintClaims.SessionID
	}
	if id != "" {
		sess, err := p.store.GetSession(ctx, id)
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			return "", err
		case req.UserID != "" && sess.Subject != req.UserID:
			p.log.InfoContext(ctx, "logout: id_token_hint names another person; session kept")
		default:
			ended, err := p.store.EndSession(ctx, id)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return "", err
			}
			if err == nil {
				p.log.InfoContext(ctx, "logout", "sub", ended.Subject, "clients", len(ended.Clients))
				p.notifyLogout(ended)
			}
		}
	}
	return req.RedirectURI, nil
}

// TerminateSession is the library's older hook; TerminateSessionFromRequest replaces it.
func (s *opStorage) TerminateSession(context.Context, string, string) error { return nil }

// notifyLogout sends logout tokens to the session's clients that registered a back-channel URI,
// in the background. Close waits for deliveries in flight.
func (p *Provider) notifyLogout(sess storage.Session) {
	for _, clientID := range sess.Clients {
		c, err := p.store.GetClient(p.bg, clientID)
		if err != nil || c.BackchannelLogoutURI == "" {
			continue
		}
		p.deliveries.Add(1)
		go func() {
			defer p.deliveries.Done()
			if err := p.deliverLogout(p.bg, c, sess); err != nil {
				p.metrics.delivery("failed")
				p.log.Warn("back-channel logout not delivered", "client_id", c.ID, "error", err)
				return
			}
			p.metrics.delivery("delivered")
		}()
	}
}

// deliverLogout POSTs a logout token to the client, retrying transient failures a bounded number
// of times. A 4xx answer means the client refused the token: not retried.
func (p *Provider) deliverLogout(ctx context.Context, c storage.Client, sess storage.Session) error {
	token, err := p.logoutToken(c.ID, sess)
	if err != nil {
		return err
	}
	body := url.Values{"logout_token": {token}}.Encode()
	wait := backchannelBackoff
	var last error
	for attempt := 1; attempt <= backchannelAttempts; attempt++ {
		if attempt > 1 {
			select {
			case <-time.After(wait):
				wait *= 2
			case <-ctx.Done():
				return fmt.Errorf("back-channel logout: %w", ctx.Err())
			}
		}
		status, err := p.postLogout(ctx, c.BackchannelLogoutURI, body)
		switch {
		case err == nil && status >= 200 && status < 300:
			return nil
		case err == nil && status >= 400 && status < 500 && status != http.StatusTooManyRequests:
			return fmt.Errorf("back-channel logout: the client answered %d", status)
		case err == nil:
			last = fmt.Errorf("the client answered %d", status)
		default:
			last = err
		}
	}
	return fmt.Errorf("back-channel logout: %d attempts failed, last: %w", backchannelAttempts, last)
}

func (p *Provider) postLogout(ctx context.Context, target, body string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, backchannelTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := p.httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

// logoutToken is the signed JWT of Back-Channel Logout §2.4: iss, aud, iat, exp, jti, sub, sid and
// the logout event, never a nonce; typ logout+jwt.
func (p *Provider) logoutToken(clientID string, sess storage.Session) (string, error) {
	key := p.cfg.Keys.SigningKey()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: key.SignatureAlgorithm(), Key: &jose.JSONWebKey{Key: key.Key(), KeyID: key.ID()}},
		(&jose.SignerOptions{}).WithType("logout+jwt"),
	)
	if err != nil {
		return "", fmt.Errorf("logout token: %w", err)
	}
	now := time.Now()
	claims, err := json.Marshal(map[string]any{
		"iss":    p.cfg.Issuer,
		"aud":    []string{clientID},
		"iat":    now.Unix(),
		"exp":    now.Add(logoutTokenTTL).Unix(),
		"jti":    rand.Text(),
		"sub":    sess.Subject,
		"sid":    sess.ID,
		"events": map[string]any{backchannelEvent: map[string]any{}},
	})
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(claims)
	if err != nil {
		return "", fmt.Errorf("logout token: %w", err)
	}
	return jws.CompactSerialize()
}

// Close waits, up to ctx's deadline, for back-channel deliveries in flight, then abandons them.
func (p *Provider) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.deliveries.Wait(); close(done) }()
	select {
	case <-done:
		p.stopBG()
		return nil
	case <-ctx.Done():
		p.stopBG()
		<-done
		return fmt.Errorf("provider: back-channel deliveries abandoned: %w", ctx.Err())
	}
}

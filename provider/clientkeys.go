package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// AuthMethodPrivateKeyJWT is storage.Client.AuthMethod for clients that authenticate with a JWT
// signed by one of their keys (RFC 7523 §2.2).
const AuthMethodPrivateKeyJWT = "private_key_jwt"

// A client's key set fetched from its jwks_uri is kept for jwksTTL, and fetched again sooner —
// but not more than once per jwksMinRefetch — when an assertion names a key it lacks (rotation).
const (
	jwksTTL        = 5 * time.Minute
	jwksMinRefetch = 30 * time.Second
	jwksMaxBytes   = 1 << 20
)

// GetKeyByIDAndClientID returns the public key a client signed an assertion with. Only clients
// registered for private_key_jwt have keys; for anyone else every client-signed JWT is refused.
func (s *opStorage) GetKeyByIDAndClientID(ctx context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	c, err := s.p.store.GetClient(ctx, clientID)
	if err != nil {
		return nil, err
	}
	if c.AuthMethod != AuthMethodPrivateKeyJWT {
		return nil, fmt.Errorf("provider: client %q does not authenticate with private_key_jwt", clientID)
	}
	set, err := s.p.clientKeys.keySet(ctx, c, keyID, s.p.httpClient)
	if err != nil {
		return nil, err
	}
	return pickKey(set, keyID)
}

// pickKey selects the signing key named keyID, or the only signing key when the JWT names none.
func pickKey(set jose.JSONWebKeySet, keyID string) (*jose.JSONWebKey, error) {
	var candidates []jose.JSONWebKey
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if keyID == "" || k.KeyID == keyID {
			candidates = append(candidates, k)
		}
	}
	if len(candidates) != 1 {
		return nil, fmt.Errorf("provider: %d client keys match kid %q, want exactly 1", len(candidates), keyID)
	}
	k := candidates[0]
	if !k.IsPublic() {
		pub := k.Public()
		k = pub
	}
	return &k, nil
}

// jwksCache holds key sets fetched from clients' jwks_uri.
type jwksCache struct {
	mu      sync.Mutex
	entries map[string]jwksEntry
}

type jwksEntry struct {
	set     jose.JSONWebKeySet
	fetched time.Time
}

func (jc *jwksCache) keySet(ctx context.Context, c storage.Client, keyID string, hc *http.Client) (jose.JSONWebKeySet, error) {
	if c.JWKS != "" {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal([]byte(c.JWKS), &set); err != nil {
			return set, fmt.Errorf("provider: client %q: registered JWKS does not parse: %w", c.ID, err)
		}
		return set, nil
	}
	if c.JWKSURI == "" {
		return jose.JSONWebKeySet{}, fmt.Errorf("provider: client %q has neither jwks nor jwks_uri", c.ID)
	}
	jc.mu.Lock()
	e, ok := jc.entries[c.JWKSURI]
	jc.mu.Unlock()
	now := time.Now()
	stale := !ok || now.Sub(e.fetched) > jwksTTL
	missing := ok && keyID != "" && len(e.set.Key(keyID)) == 0 && now.Sub(e.fetched) > jwksMinRefetch
	if !stale && !missing {
		return e.set, nil
	}
	set, err := fetchJWKS(ctx, hc, c.JWKSURI)
	if err != nil {
		if ok {
			return e.set, nil // keep serving the last good set through an outage
		}
		return set, fmt.Errorf("provider: client %q: %w", c.ID, err)
	}
	jc.mu.Lock()
	if jc.entries == nil {
		jc.entries = make(map[string]jwksEntry)
	}
	jc.entries[c.JWKSURI] = jwksEntry{set: set, fetched: now}
	jc.mu.Unlock()
	return set, nil
}

func fetchJWKS(ctx context.Context, hc *http.Client, uri string) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	ctx, cancel := context.WithTimeout(ctx, backchannelTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return set, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return set, fmt.Errorf("fetch jwks_uri: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return set, fmt.Errorf("fetch jwks_uri: status %d", res.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(res.Body, jwksMaxBytes+1))
	if err != nil {
		return set, fmt.Errorf("fetch jwks_uri: %w", err)
	}
	if len(raw) > jwksMaxBytes {
		return set, errors.New("fetch jwks_uri: larger than 1 MiB")
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		return set, fmt.Errorf("jwks_uri does not parse: %w", err)
	}
	return set, nil
}

package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wecom-oidc/wecom-oidc/keys"
	"github.com/wecom-oidc/wecom-oidc/storage"
)

// KeyStore persists the keys package's records in a storage.Store.
func KeyStore(s storage.Store) keys.Store { return keyStore{s} }

type keyStore struct{ s storage.Store }

func (k keyStore) ListKeys(ctx context.Context) ([]keys.Record, error) {
	recs, err := k.s.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]keys.Record, len(recs))
	for i, r := range recs {
		out[i] = keys.Record{ID: r.ID, Algorithm: r.Algorithm, Private: r.Private, CreatedAt: r.CreatedAt, ActivatesAt: r.ActivatesAt, NotAfter: r.NotAfter}
	}
	return out, nil
}

func (k keyStore) PutKey(ctx context.Context, r keys.Record) error {
	return k.s.PutKey(ctx, keyRecord(r))
}

// CreateKey maps the storage sentinel onto the keys package's, keeping both in the chain.
func (k keyStore) CreateKey(ctx context.Context, r keys.Record) error {
	err := k.s.CreateKey(ctx, keyRecord(r))
	if errors.Is(err, storage.ErrAlreadyExists) {
		return fmt.Errorf("%w: %w", keys.ErrAlreadyExists, err)
	}
	return err
}

func keyRecord(r keys.Record) storage.KeyRecord {
	return storage.KeyRecord{ID: r.ID, Algorithm: r.Algorithm, Private: r.Private, CreatedAt: r.CreatedAt, ActivatesAt: r.ActivatesAt, NotAfter: r.NotAfter}
}

func (k keyStore) DeleteKey(ctx context.Context, id string) error { return k.s.DeleteKey(ctx, id) }

// UpstreamTokens shares an upstream connector's access token through a storage.Store, so every
// request and every process using the database reuses one token, and one process at a time
// fetches a new one. It has the method sets of wecom.TokenStore and wecom.TokenClaimer.
type UpstreamTokens struct{ Store storage.Store }

// LoadToken returns the cached token; ok is false when none is cached or it has expired.
func (u UpstreamTokens) LoadToken(ctx context.Context, key string) (string, time.Time, bool, error) {
	t, err := u.Store.GetUpstreamToken(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, err
	}
	return t.Token, t.ExpiresAt, true, nil
}

// SaveToken replaces the cached token.
func (u UpstreamTokens) SaveToken(ctx context.Context, key, token string, expiresAt time.Time) error {
	return u.Store.PutUpstreamToken(ctx, storage.UpstreamToken{Key: key, Token: token, ExpiresAt: expiresAt})
}

// ForgetToken drops the cached token (the upstream invalidated it).
func (u UpstreamTokens) ForgetToken(ctx context.Context, key string) error {
	return u.Store.DeleteUpstreamToken(ctx, key)
}

// ClaimRefresh grants one process of those sharing the store the right to fetch a new token.
func (u UpstreamTokens) ClaimRefresh(ctx context.Context, key string, until time.Time) (bool, error) {
	return u.Store.ClaimUpstreamRefresh(ctx, key, until)
}

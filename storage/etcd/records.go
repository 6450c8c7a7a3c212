package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// The internal records. They are the bolt backend's records of the same name, field for field
// and with the same JSON; they belong in a package both backends import, with the expiry helpers
// below.

// codeRecord is the value of codes/<hash>. A redeemed code is kept, with Used set, until its own
// expiry so that a replay is told apart (ErrAlreadyUsed) from a wrong code.
type codeRecord struct {
	AuthRequestID string    `json:"auth_request_id"`
	ExpiresAt     time.Time `json:"expires_at"`
	Used          bool      `json:"used,omitempty"`
}

// accessRecord is the value of access_tokens/<id>: the token plus its own revocation flag
// (revocation through the family lives in the family record). The embedded token's fields are
// flattened, so "expires_at" sits at the top level like in every expiring record.
type accessRecord struct {
	storage.AccessToken
	Revoked bool `json:"revoked,omitempty"`
}

// familyRecord is the value of refresh_families/<id>. Revoking a family is one write here; every
// lookup of a token of the family reads it. ExpiresAt is the latest expiry of any refresh or
// access token issued in the family, so the record outlives all of them.
type familyRecord struct {
	Revoked   bool      `json:"revoked,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// SessionID and AuthRequestID say which links lead to the family (session_families,
	// auth_request_tokens); extendFamily moves their expiry along with the family's.
	SessionID     string `json:"session_id,omitempty"`
	AuthRequestID string `json:"auth_request_id,omitempty"`
}

// linkRecord is the value of the link kinds: only an expiry, so that links are swept like every
// other expiring record.
type linkRecord struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// tokenOwner is the part of a refresh- or access-token record RevokeUserTokens and Stats read.
type tokenOwner struct {
	Subject   string     `json:"subject"`
	FamilyID  string     `json:"family_id"`
	ExpiresAt time.Time  `json:"expires_at"`
	RotatedAt *time.Time `json:"rotated_at"` // refresh tokens only
	Revoked   bool       `json:"revoked"`    // access tokens only
}

// expired reports whether a record expiring at exp is dead at now: ExpiresAt <= Now.
func expired(exp, now time.Time) bool { return !exp.After(now) }

// expiryNanos maps a time onto the index's unsigned ordered axis. Times before 1970 (the zero
// time included) map to 0, so they are swept at once; times beyond what UnixNano can represent
// (year 2262) map to the end of the axis.
func expiryNanos(t time.Time) uint64 {
	sec := t.Unix()
	switch {
	case sec < 0:
		return 0
	case sec >= math.MaxInt64/int64(time.Second)-1:
		return math.MaxUint64
	default:
		return uint64(t.UnixNano())
	}
}

// expiryOf reads the expiry of any stored expiring record: all of them keep it in "expires_at".
func expiryOf(raw []byte) (time.Time, error) {
	var v struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return time.Time{}, fmt.Errorf("decode expiry: %w", err)
	}
	return v.ExpiresAt, nil
}

func encode(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return raw, nil
}

func decode[T any](key string, raw []byte) (T, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("decode record %q: %w", key, err)
	}
	return v, nil
}

// --- reads outside transactions ---

// get reads one key with a linearizable read; ok is false when it is absent.
func (s *Store) get(ctx context.Context, key string) (raw []byte, ok bool, err error) {
	ctx, cancel := s.rctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, false, err
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	return resp.Kvs[0].Value, true, nil
}

// viewRecord reads the record id of a kind. It returns ErrNotFound when the key is absent or
// when dead (nil for records without expiry) says the record has expired at now.
func viewRecord[T any](s *Store, ctx context.Context, kind, id string, dead func(v T, now time.Time) bool) (v T, err error) {
	if err := s.usable(ctx); err != nil {
		return v, err
	}
	if id == "" {
		return v, storage.ErrNotFound
	}
	now := s.now()
	key := s.key(kind, id)
	raw, ok, err := s.get(ctx, key)
	if err != nil {
		return v, err
	}
	if !ok {
		return v, storage.ErrNotFound
	}
	got, err := decode[T](key, raw)
	if err != nil {
		return v, err
	}
	if dead != nil && dead(got, now) {
		return v, storage.ErrNotFound
	}
	return got, nil
}

// viewAll reads every record of a kind, in key order.
func viewAll[T any](s *Store, ctx context.Context, kind string) ([]T, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	out := []T{}
	_, err := s.scan(ctx, s.kindPrefix(kind), 0, func(key string, raw []byte) error {
		v, err := decode[T](key, raw)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scanPage is how many keys one range request of scan returns.
const scanPage = 500

// scan calls fn for every key under prefix, in key order, as the keys all were at one revision:
// rev, or the current revision when rev is 0. The range is read in pages of scanPage keys, each
// pinned to that revision, so a large kind is neither read in one response nor seen torn. It
// returns the revision read. A revision compacted away meanwhile fails with etcd's
// ErrCompacted.
func (s *Store) scan(ctx context.Context, prefix string, rev int64, fn func(key string, raw []byte) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		if err := s.usable(ctx); err != nil {
			return rev, err
		}
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(scanPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := s.rctx(ctx)
		resp, err := s.cli.Get(rctx, from, opts...)
		cancel()
		if err != nil {
			return rev, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(string(kv.Key), kv.Value); err != nil {
				return rev, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// countOnly are the options of a range that counts the keys under a prefix, server-side.
func countOnly() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}

package etcd

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

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
	got, err := record.Decode[T](key, raw)
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
		v, err := record.Decode[T](key, raw)
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

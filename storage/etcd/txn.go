package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// txn is one attempt of an optimistic read-modify-write (Store.update). Its reads all see the
// store at one revision (the first read's); its writes are buffered; commit sends them in one
// etcd Txn guarded by the compares the reads registered:
//
//   - get registers ModRevision(key) == the revision read (0 when the key was absent): the
//     commit fails if the key was written or deleted since;
//   - peek registers nothing, for reads whose outcome cannot be invalidated (a revoked family
//     stays revoked) or that only locate what is then read with get; guard upgrades a peek;
//   - scan registers that no key under the prefix was created or written since (it does not
//     notice deletions, which the callers' decisions tolerate).
//
// Keys written without being read are blind writes: the index entries and links, whose keys
// encode what they say.
type txn struct {
	s    *Store
	ctx  context.Context
	rev  int64 // the snapshot revision; 0 until the first read
	keys map[string]*entry
	// order lists the written keys in the order of their first write.
	order []string
	cmps  []clientv3.Cmp
	// ranges are the prefixes deleted wholesale; no put may fall under them.
	ranges []string
}

// entry is what the transaction knows of one key.
type entry struct {
	val    []byte
	exists bool
	// read: the key was read at the snapshot, where it had modRev (0: absent) and lease.
	read    bool
	modRev  int64
	lease   int64
	guarded bool
	// written: the commit puts val (exists) or deletes the key (!exists), with opts for a put.
	written bool
	opts    []clientv3.OpOption
}

// maxAttempts bounds how often update retries a read-modify-write that keeps meeting concurrent
// writes; each retry waits a little longer (up to maxBackoff), with jitter.
const (
	maxAttempts = 100
	maxBackoff  = 100 * time.Millisecond
)

// errContention is returned when a read-modify-write lost maxAttempts times in a row.
var errContention = errors.New("too many concurrent writes to the same records")

// update runs fn as an optimistic transaction until its commit succeeds: fn reads through t,
// buffers its writes in t, and returns nil to commit or an error to abort (returned as is). When
// a key fn relied on changed before the commit, fn runs again on fresh reads. fn must therefore
// keep its results in variables it resets at its start.
func (s *Store) update(ctx context.Context, fn func(t *txn) error) error {
	backoff := time.Millisecond
	leaseRetried := false
	for attempt := 1; ; attempt++ {
		if err := s.usable(ctx); err != nil {
			return err
		}
		t := &txn{s: s, ctx: ctx, keys: map[string]*entry{}}
		err := fn(t)
		if err == nil {
			var committed bool
			committed, err = t.commit()
			if err == nil && committed {
				return nil
			}
		}
		switch {
		case err == nil: // the compares failed: someone wrote in between
		case errors.Is(err, rpctypes.ErrCompacted): // a read met a revision compacted away
		case errors.Is(err, rpctypes.ErrLeaseNotFound) && !leaseRetried:
			// A cached lease is gone (revoked by hand, or the cluster was restored from an older
			// snapshot): forget them all and try once more with fresh ones.
			s.leases.forget()
			leaseRetried = true
		default:
			return err
		}
		if attempt >= maxAttempts {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, errContention)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// load reads key at the snapshot (or returns what the transaction already knows of it).
func (t *txn) load(key string) (*entry, error) {
	if e, ok := t.keys[key]; ok {
		return e, nil
	}
	if t.inDeletedRange(key) {
		e := &entry{} // deleted by this transaction
		t.keys[key] = e
		return e, nil
	}
	if err := t.s.usable(t.ctx); err != nil {
		return nil, err
	}
	var opts []clientv3.OpOption
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	ctx, cancel := t.s.rctx(t.ctx)
	defer cancel()
	resp, err := t.s.cli.Get(ctx, key, opts...)
	if err != nil {
		return nil, err
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	e := &entry{read: true}
	if len(resp.Kvs) == 1 {
		kv := resp.Kvs[0]
		e.val, e.exists, e.modRev, e.lease = kv.Value, true, kv.ModRevision, kv.Lease
	}
	t.keys[key] = e
	return e, nil
}

// prefetch loads the keys the transaction is about to read, in one read-only etcd transaction
// (served without a raft write) instead of one round trip each. Nothing is guarded yet: get and
// peek then find the keys loaded.
func (t *txn) prefetch(keys ...string) error {
	var ops []clientv3.Op
	var want []string
	for _, key := range keys {
		if _, known := t.keys[key]; known || t.inDeletedRange(key) || slices.Contains(want, key) {
			continue
		}
		var opts []clientv3.OpOption
		if t.rev != 0 {
			opts = append(opts, clientv3.WithRev(t.rev))
		}
		ops = append(ops, clientv3.OpGet(key, opts...))
		want = append(want, key)
	}
	if len(ops) == 0 {
		return nil
	}
	if err := t.s.usable(t.ctx); err != nil {
		return err
	}
	ctx, cancel := t.s.rctx(t.ctx)
	defer cancel()
	resp, err := t.s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	for i, r := range resp.Responses {
		e := &entry{read: true}
		if kvs := r.GetResponseRange().GetKvs(); len(kvs) == 1 {
			e.val, e.exists, e.modRev, e.lease = kvs[0].Value, true, kvs[0].ModRevision, kvs[0].Lease
		}
		t.keys[want[i]] = e
	}
	return nil
}

// get reads key and makes the commit depend on it being unchanged.
func (t *txn) get(key string) ([]byte, bool, error) {
	e, err := t.load(key)
	if err != nil {
		return nil, false, err
	}
	t.guard(key)
	return e.val, e.exists, nil
}

// peek reads key without making the commit depend on it.
func (t *txn) peek(key string) ([]byte, bool, error) {
	e, err := t.load(key)
	if err != nil {
		return nil, false, err
	}
	return e.val, e.exists, nil
}

// guard makes the commit depend on key being as it was at the snapshot. It does nothing for a
// key the transaction has not read (a blind write has nothing to compare with).
func (t *txn) guard(key string) {
	e, ok := t.keys[key]
	if !ok || !e.read || e.guarded {
		return
	}
	e.guarded = true
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(key), "=", e.modRev))
}

// kv is one key and value of a scan.
type kv struct {
	key string
	val []byte
}

// scan reads every key under prefix at the snapshot, merged with the transaction's own writes,
// in key order, and makes the commit depend on no key under prefix having been created or
// written since. The keys read are known to later peeks and gets, as of the snapshot.
func (t *txn) scan(prefix string) ([]kv, error) {
	if err := t.s.usable(t.ctx); err != nil {
		return nil, err
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	ctx, cancel := t.s.rctx(t.ctx)
	defer cancel()
	resp, err := t.s.cli.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, err
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(prefix), "<", t.rev+1).WithPrefix())
	var out []kv
	for _, r := range resp.Kvs {
		key := string(r.Key)
		if _, known := t.keys[key]; !known {
			if t.inDeletedRange(key) {
				t.keys[key] = &entry{}
				continue
			}
			t.keys[key] = &entry{read: true, val: r.Value, exists: true, modRev: r.ModRevision, lease: r.Lease}
		}
	}
	for key, e := range t.keys {
		if strings.HasPrefix(key, prefix) && e.exists {
			out = append(out, kv{key, e.val})
		}
	}
	slices.SortFunc(out, func(a, b kv) int { return strings.Compare(a.key, b.key) })
	return out, nil
}

// put buffers a write of val at key.
func (t *txn) put(key string, val []byte, opts ...clientv3.OpOption) {
	e := t.entry(key)
	e.val, e.exists, e.written, e.opts = val, true, true, opts
}

// del buffers the deletion of key.
func (t *txn) del(key string) {
	if t.inDeletedRange(key) {
		return // deleted already, with its range
	}
	e := t.entry(key)
	e.val, e.exists, e.written, e.opts = nil, false, true, nil
}

// inDeletedRange reports whether key falls under a prefix this transaction deletes.
func (t *txn) inDeletedRange(key string) bool {
	for _, r := range t.ranges {
		if strings.HasPrefix(key, r) {
			return true
		}
	}
	return false
}

// keysIn returns up to limit keys of the range [from, end) at the snapshot, without making the
// commit depend on them (the sweep guards the records the keys lead to instead).
func (t *txn) keysIn(from, end string, limit int64) ([]string, error) {
	if err := t.s.usable(t.ctx); err != nil {
		return nil, err
	}
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit), clientv3.WithKeysOnly()}
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	ctx, cancel := t.s.rctx(t.ctx)
	defer cancel()
	resp, err := t.s.cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, err
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	keys := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		keys[i] = string(kv.Key)
	}
	return keys, nil
}

// delPrefix buffers the deletion of every key under prefix. Keys under it must not be put in the
// same transaction (etcd refuses a put inside a deleted range).
func (t *txn) delPrefix(prefix string) {
	t.ranges = append(t.ranges, prefix)
	for key, e := range t.keys {
		if strings.HasPrefix(key, prefix) {
			e.val, e.exists, e.written, e.opts = nil, false, false, nil
		}
	}
}

// entry returns the key's entry, creating an unread one, and records the order of first writes.
func (t *txn) entry(key string) *entry {
	e, ok := t.keys[key]
	if !ok {
		e = &entry{}
		t.keys[key] = e
	}
	if !e.written {
		t.order = append(t.order, key)
	}
	return e
}

// writes is the number of operations the commit will carry.
func (t *txn) writes() int {
	n := len(t.ranges)
	for _, key := range t.order {
		if t.keys[key].written {
			n++
		}
	}
	return n
}

// commit sends the buffered writes under the registered compares. It reports whether they were
// applied; a transaction without writes has nothing to commit and reports true.
func (t *txn) commit() (bool, error) {
	var ops []clientv3.Op
	for _, key := range t.order {
		e := t.keys[key]
		if !e.written {
			continue // dropped by a later delPrefix
		}
		for _, r := range t.ranges {
			if e.exists && strings.HasPrefix(key, r) {
				return false, fmt.Errorf("internal error: put of %q inside the deleted range %q", key, r)
			}
		}
		if e.exists {
			ops = append(ops, clientv3.OpPut(key, string(e.val), e.opts...))
		} else {
			ops = append(ops, clientv3.OpDelete(key))
		}
	}
	for _, r := range t.ranges {
		ops = append(ops, clientv3.OpDelete(r, clientv3.WithPrefix()))
	}
	if len(ops) == 0 {
		return true, nil
	}
	if len(ops) > maxTxnOps || len(t.cmps) > maxTxnOps {
		return false, fmt.Errorf("internal error: transaction of %d operations and %d compares exceeds etcd's limit of %d",
			len(ops), len(t.cmps), maxTxnOps)
	}
	ctx, cancel := t.s.rctx(t.ctx)
	defer cancel()
	resp, err := t.s.cli.Txn(ctx).If(t.cmps...).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// --- typed helpers over txn ---

// getJSON reads and decodes the record id of a kind, guarded; ok is false when it is absent.
func getJSON[T any](t *txn, kind, id string) (v T, ok bool, err error) {
	return readJSON[T](t, kind, id, true)
}

// peekJSON is getJSON without the guard.
func peekJSON[T any](t *txn, kind, id string) (v T, ok bool, err error) {
	return readJSON[T](t, kind, id, false)
}

func readJSON[T any](t *txn, kind, id string, guard bool) (v T, ok bool, err error) {
	key := t.s.key(kind, id)
	read := t.peek
	if guard {
		read = t.get
	}
	raw, ok, err := read(key)
	if err != nil || !ok {
		return v, false, err
	}
	v, err = record.Decode[T](key, raw)
	return v, err == nil, err
}

// putPlain writes a record without expiry (and without lease).
func (t *txn) putPlain(kind, id string, v any) error {
	raw, err := record.Encode(v)
	if err != nil {
		return err
	}
	t.put(t.s.key(kind, id), raw)
	return nil
}

// putExpiring writes the record id of a kind, which must carry expires_at == exp, with a lease
// for exp, and keeps the expiry index in step. When the transaction knows the record's previous
// value: an unchanged expiry keeps the record's lease and index entry; a changed one drops the
// old entry. Otherwise the old entry, if any, is left stale for the sweep, which ignores
// entries that no longer match their record.
func (t *txn) putExpiring(kind, id string, v any, exp time.Time) error {
	if id == "" {
		return fmt.Errorf("empty %s key", kind)
	}
	raw, err := record.Encode(v)
	if err != nil {
		return err
	}
	key := t.s.key(kind, id)
	if old, known := t.keys[key]; known && old.exists {
		// The decisions below rest on the old value: it must still be the stored one.
		t.guard(key)
		if oldExp, err := record.ExpiryOf(old.val); err == nil {
			if record.ExpiryNanos(oldExp) == record.ExpiryNanos(exp) {
				switch {
				case old.written: // written earlier in this transaction: keep those options
					t.put(key, raw, old.opts...)
					return nil
				case old.lease != 0:
					t.put(key, raw, clientv3.WithIgnoreLease())
					return nil
				}
			} else {
				t.del(t.s.key(kindExpiry, indexID(oldExp, kind, id)))
			}
		}
	}
	opts, err := t.s.leaseOpts(t.ctx, exp)
	if err != nil {
		return err
	}
	t.put(key, raw, opts...)
	t.put(t.s.key(kindExpiry, indexID(exp, kind, id)), nil, opts...)
	return nil
}

// leaseOpts returns the put options attaching the lease for a record expiring at exp: none
// beyond maxLeaseLife (a put without a lease also detaches the key from the one it had).
func (s *Store) leaseOpts(ctx context.Context, exp time.Time) ([]clientv3.OpOption, error) {
	id, ok, err := s.leases.leaseFor(ctx, exp)
	if err != nil || !ok {
		return nil, err
	}
	return []clientv3.OpOption{clientv3.WithLease(id)}, nil
}

// putNew is putExpiring for a create: it fails with ErrAlreadyExists when the key is taken,
// whether or not the existing record has expired (ids are random; a clash is a bug worth
// seeing). The absence is guarded.
func (t *txn) putNew(kind, id string, v any, exp time.Time, what string) error {
	if id == "" {
		return fmt.Errorf("empty %s key", what)
	}
	_, ok, err := t.get(t.s.key(kind, id))
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("%s: %w", what, storage.ErrAlreadyExists)
	}
	return t.putExpiring(kind, id, v, exp)
}

// deleteExpiring deletes the record id of a kind and, when its value is known to the
// transaction, its index entry. A missing record is not an error.
func (t *txn) deleteExpiring(kind, id string) error {
	key := t.s.key(kind, id)
	raw, ok, err := t.peek(key)
	if err != nil || !ok {
		return err
	}
	if exp, err := record.ExpiryOf(raw); err == nil {
		t.del(t.s.key(kindExpiry, indexID(exp, kind, id)))
	}
	t.del(key)
	return nil
}

// create stores a new record in one transaction, without a prior read: it fails with
// ErrAlreadyExists when the key is taken. Records of an expiring kind must carry expires_at ==
// exp and get a lease and an index entry; the others get neither.
func (s *Store) create(ctx context.Context, kind, id string, v any, exp time.Time, what string) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("empty %s key", what)
	}
	raw, err := record.Encode(v)
	if err != nil {
		return err
	}
	key := s.key(kind, id)
	for attempt := 0; ; attempt++ {
		ops := []clientv3.Op{}
		if !expiringKind(kind) {
			ops = append(ops, clientv3.OpPut(key, string(raw)))
		} else {
			opts, err := s.leaseOpts(ctx, exp)
			if err != nil {
				return err
			}
			ops = append(ops,
				clientv3.OpPut(key, string(raw), opts...),
				clientv3.OpPut(s.key(kindExpiry, indexID(exp, kind, id)), "", opts...))
		}
		rctx, cancel := s.rctx(ctx)
		resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(ops...).Commit()
		cancel()
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && attempt == 0 {
			s.leases.forget()
			continue
		}
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return fmt.Errorf("%s: %w", what, storage.ErrAlreadyExists)
		}
		return nil
	}
}

package etcd

import (
	"context"
	"fmt"
	"math"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// gcChunk bounds how many due index entries one sweep transaction handles: each costs at most a
// compare and three operations, which keeps the transaction well inside maxTxnOps.
const gcChunk = 24

// DeleteExpired sweeps the expiry index from its start up to now (by the Store's clock), in
// transactions of at most gcChunk entries. Each due entry is deleted; the record it names is
// deleted with it — guarded, so that a record rewritten meanwhile is left alone and that, when
// several replicas sweep at once, each record is removed, and counted, by exactly one of them.
// An entry whose record is gone (a lease fired, or it was deleted) or now carries another expiry
// (it was replaced) is stale and only dropped.
//
// What the leases removed before the sweep came is not counted: GCResult counts what this call
// removed. Families, links, tombstone markers and upstream tokens are removed too but not
// counted: GCResult has no field for them (families and links are internal bookkeeping; the
// upstream token is a cache).
func (s *Store) DeleteExpired(ctx context.Context) (res storage.GCResult, err error) {
	defer wrap(&err, "delete expired")
	if err := s.usable(ctx); err != nil {
		return res, err
	}
	nowN := record.ExpiryNanos(s.now())
	idxPrefix := s.kindPrefix(kindExpiry)
	end := clientv3.GetPrefixRangeEnd(idxPrefix)
	if nowN < math.MaxUint64 {
		end = idxPrefix + fmt.Sprintf("%016x", nowN+1)
	}
	for {
		var chunk storage.GCResult
		var seen int
		err := s.update(ctx, func(t *txn) error {
			chunk, seen = storage.GCResult{}, 0 // reset: only the committed attempt counts
			keys, err := t.keysIn(idxPrefix, end, gcChunk)
			if err != nil {
				return err
			}
			seen = len(keys)
			for _, k := range keys {
				if err := sweep(t, k, &chunk); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, err
		}
		record.AddSwept(&res, chunk)
		if seen < gcChunk {
			return res, nil
		}
	}
}

// sweep deletes one due index entry and, unless the entry is stale, the record it names, with
// what goes with the record: a code's link, a session's family links.
func sweep(t *txn, indexKey string, res *storage.GCResult) error {
	s := t.s
	t.del(indexKey)
	nanos, kind, id, ok := parseIndexID(strings.TrimPrefix(indexKey, s.kindPrefix(kindExpiry)))
	if !ok || !expiringKind(kind) {
		return nil // malformed entry: dropping it is all there is to do
	}
	key := s.key(kind, id)
	raw, exists, err := t.get(key)
	if err != nil || !exists {
		return err
	}
	exp, err := record.ExpiryOf(raw)
	if err != nil || record.ExpiryNanos(exp) != nanos {
		// Stale entry, or an undecodable record: never destroy data on a doubtful index entry.
		return nil
	}
	if kind == kindCodes {
		if code, err := record.Decode[record.Code](key, raw); err == nil {
			t.del(s.key(kindARCodes, arCodeID(code.AuthRequestID, id)))
		}
	}
	t.del(key)
	if kind == kindSessions {
		// An expired session can no longer be ended, so its family links have no reader left.
		t.delPrefix(s.key(kindSessionFamilies, sessionFamiliesPrefix(id)))
	}
	record.Swept(res, kind)
	return nil
}

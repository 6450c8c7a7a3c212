package etcd

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Leases are etcd's way to forget keys after a time, and here they are only a backstop: every
// read still checks ExpiresAt against the Store's clock, and DeleteExpired still sweeps by it.
// What leases add is that an expired record goes away although no replica ran the sweeper.
//
// A lease per record would cost one Grant round trip per write and leave etcd tracking a lease
// per token. Instead records share leases by deadline: a record expiring in d (by the Store's
// clock) needs a lease that lasts at least d + margin of real time; the deadline now+d+margin is
// rounded up to a multiple of a grain, and every record whose deadline rounds to the same
// instant shares one lease, granted once and cached. The grain grows with d (grain ≥ d/16,
// doubling from the base grain), so a lease outlives its records by at most about an eighth of
// their lifetime, and the number of live leases stays small: a few dozen per replica.
//
// margin covers what makes the lease's real time and the records' Store time differ: clock skew
// between the replicas (one replica's ExpiresAt is judged by the others' clocks) and the time
// between reading the clock and the Grant reaching the leader. Leases are only ever lengthened by
// etcd (a new leader renews them), never shortened, so rounding up keeps "never before
// ExpiresAt".
const (
	defaultLeaseMargin = 5 * time.Minute
	defaultLeaseGrain  = time.Minute
	// maxLeaseLife: records expiring further out than this get no lease (etcd caps TTLs at
	// about 285 years; nothing here lives that long, and the sweeper still covers them).
	maxLeaseLife = 10 * 365 * 24 * time.Hour
)

// leaser grants and caches the shared leases of one Store.
type leaser struct {
	s      *Store
	margin time.Duration
	grain  time.Duration
	// realNow is the real clock the leases run on; a field so tests can look at the rounding.
	realNow func() time.Time

	mu         sync.Mutex
	byDeadline map[int64]clientv3.LeaseID // rounded deadline (Unix ns, real time) → lease
}

func newLeaser(s *Store, margin, grain time.Duration) *leaser {
	return &leaser{s: s, margin: margin, grain: grain, realNow: time.Now, byDeadline: map[int64]clientv3.LeaseID{}}
}

// leaseFor returns a lease that outlives a record expiring at exp (by the Store's clock) by at
// least the margin; ok is false when the record is to have no lease (beyond maxLeaseLife).
func (l *leaser) leaseFor(ctx context.Context, exp time.Time) (id clientv3.LeaseID, ok bool, err error) {
	d := max(exp.Sub(l.s.now()), 0) + l.margin
	if d > maxLeaseLife {
		return 0, false, nil
	}
	grain := l.grain
	for grain < d/16 {
		grain *= 2
	}
	real := l.realNow()
	deadline := real.Add(d).UnixNano()
	g := int64(grain)
	rounded := (deadline + g - 1) / g * g

	l.mu.Lock()
	id, ok = l.byDeadline[rounded]
	l.mu.Unlock()
	if ok {
		return id, true, nil
	}
	// Seconds, rounded up, plus one for the time the request takes to reach the leader.
	ttl := (rounded-real.UnixNano()+int64(time.Second)-1)/int64(time.Second) + 1
	rctx, cancel := l.s.rctx(ctx)
	defer cancel()
	resp, err := l.s.cli.Grant(rctx, ttl)
	if err != nil {
		return 0, false, fmt.Errorf("grant a lease of %ds: %w", ttl, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := real.UnixNano()
	for dl := range l.byDeadline { // drop the leases that have run out
		if dl <= now {
			delete(l.byDeadline, dl)
		}
	}
	// Two callers may have granted for the same deadline at once; either lease will do, and the
	// other simply expires with the records it was given.
	l.byDeadline[rounded] = resp.ID
	return resp.ID, true, nil
}

// forget drops every cached lease: one was found missing (revoked by an operator, or lost with a
// cluster restored from an older snapshot), so none is trusted.
func (l *leaser) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.byDeadline)
}

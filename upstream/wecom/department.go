package wecom

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// deptCache caches departments by id for a TTL. Concurrent misses for one id share one fetch.
// Failed fetches are not cached: the next lookup tries again.
type deptCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[int64]*deptEntry
}

// deptEntry is a fetched department, or a fetch in progress until done is closed.
type deptEntry struct {
	done    chan struct{}
	dept    Department
	err     error
	fetched time.Time
}

func newDeptCache(ttl time.Duration, now func() time.Time) *deptCache {
	return &deptCache{ttl: ttl, now: now, entries: make(map[int64]*deptEntry)}
}

// get returns department id, from the cache while fresh, otherwise through fetch.
func (dc *deptCache) get(ctx context.Context, id int64, fetch func(context.Context, int64) (Department, error)) (Department, error) {
	dc.mu.Lock()
	e := dc.entries[id]
	if e != nil {
		select {
		case <-e.done:
			if e.err == nil && dc.now().Before(e.fetched.Add(dc.ttl)) {
				dc.mu.Unlock()
				return e.dept, nil
			}
			e = nil // stale or failed: fetch again
		default: // a fetch is running: join it
		}
	}
	if e == nil {
		e = &deptEntry{done: make(chan struct{})}
		dc.entries[id] = e
		// The fetch outlives this caller's cancellation: others may be waiting for it.
		go func(ctx context.Context) {
			d, err := fetch(ctx, id)
			dc.mu.Lock()
			e.dept, e.err, e.fetched = d, err, dc.now()
			if err != nil && dc.entries[id] == e {
				delete(dc.entries, id)
			}
			dc.mu.Unlock()
			close(e.done)
		}(context.WithoutCancel(ctx))
	}
	dc.mu.Unlock()

	select {
	case <-e.done:
		return e.dept, e.err
	case <-ctx.Done():
		return Department{}, fmt.Errorf("wecom: waiting for department %d: %w", id, context.Cause(ctx))
	}
}

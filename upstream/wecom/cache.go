package wecom

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// cache holds values by key for a TTL (departments, tags). Concurrent misses for one key share one
// fetch. A failed fetch is not cached, so the next lookup tries again, unless keep says its error
// is WeCom's answer rather than a fault (60011: withheld from this app), which is cached like a
// value.
type cache[K comparable, V any] struct {
	what string // for errors: "department", "tag", …
	ttl  time.Duration
	now  func() time.Time
	keep func(error) bool

	mu      sync.Mutex
	entries map[K]*cacheEntry[V]
}

// cacheEntry is a fetched value (or kept error), or a fetch in progress until done is closed.
type cacheEntry[V any] struct {
	done    chan struct{}
	val     V
	err     error
	fetched time.Time
}

func newCache[K comparable, V any](what string, ttl time.Duration, now func() time.Time, keep func(error) bool) *cache[K, V] {
	return &cache[K, V]{what: what, ttl: ttl, now: now, keep: keep, entries: make(map[K]*cacheEntry[V])}
}

// get returns the value under key, from the cache while fresh, otherwise through fetch. The fetch
// outlives the caller's cancellation (others may be waiting for it); the caller stops waiting
// when ctx is done.
func (c *cache[K, V]) get(ctx context.Context, key K, fetch func(context.Context) (V, error)) (V, error) {
	c.mu.Lock()
	e := c.entries[key]
	if e != nil {
		select {
		case <-e.done:
			if c.now().Before(e.fetched.Add(c.ttl)) {
				c.mu.Unlock()
				return e.val, e.err
			}
			e = nil // stale: fetch again
		default: // a fetch is running: join it
		}
	}
	if e == nil {
		e = &cacheEntry[V]{done: make(chan struct{})}
		c.entries[key] = e
		go func(ctx context.Context) {
			v, err := fetch(ctx)
			c.mu.Lock()
			e.val, e.err, e.fetched = v, err, c.now()
			if err != nil && (c.keep == nil || !c.keep(err)) && c.entries[key] == e {
				delete(c.entries, key)
			}
			c.mu.Unlock()
			close(e.done)
		}(context.WithoutCancel(ctx))
	}
	c.mu.Unlock()

	select {
	case <-e.done:
		return e.val, e.err
	case <-ctx.Done():
		var zero V
		return zero, fmt.Errorf("wecom: waiting for %s %v: %w", c.what, key, context.Cause(ctx))
	}
}

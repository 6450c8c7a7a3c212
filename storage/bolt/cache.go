package bolt

import "sync"

// recordCache keeps decoded records of a bucket that requests read again and again (clients,
// users), so a request does not decode the same JSON each time. It is coherent because this
// Store is the file's only writer (bbolt's lock keeps other processes out): every write of the
// bucket calls forget or invalidate once it has committed.
type recordCache[T any] struct {
	// clone copies a value deeply: callers own what they get, as the storage contract says.
	clone func(T) T
	// limit bounds the values kept (0: no bound); reaching it empties the cache, which refills
	// with what is read next.
	limit int

	mu sync.RWMutex
	// gen counts invalidations, so that a value read from the database before a write committed
	// is not cached after it.
	gen uint64
	m   map[string]T
}

// get returns the cached value for key, else reads it with read and caches it. Errors (not found
// included) are not cached: what is cached is bounded by what the bucket holds.
func (c *recordCache[T]) get(key string, read func() (T, error)) (T, error) {
	c.mu.RLock()
	v, ok := c.m[key]
	gen := c.gen
	c.mu.RUnlock()
	if ok {
		return c.clone(v), nil
	}
	v, err := read()
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.store(key, c.clone(v))
	}
	c.mu.Unlock()
	return v, nil
}

// store keeps v; c.mu must be held.
func (c *recordCache[T]) store(key string, v T) {
	if c.m == nil {
		c.m = make(map[string]T)
	}
	if _, ok := c.m[key]; !ok && c.limit > 0 && len(c.m) >= c.limit {
		clear(c.m)
	}
	c.m[key] = v
}

// forget drops key's value after a write of it has committed (or may have): the next read
// loads it again, and reads that began before the write are not cached. (Storing the written
// value instead would need the writes' commit order: two writers' puts may come in either order.)
func (c *recordCache[T]) forget(key string) {
	c.mu.Lock()
	c.gen++
	delete(c.m, key)
	c.mu.Unlock()
}

// invalidate forgets every cached value.
func (c *recordCache[T]) invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}

package bolt

import "sync"

// recordCache keeps decoded records of a bucket that every request reads and operators rarely
// write (clients), so a request does not decode the same JSON again and again. It is coherent
// because this Store is the file's only writer (bbolt's lock keeps other processes out): every
// write of the bucket calls invalidate once it has committed.
type recordCache[T any] struct {
	// clone copies a value deeply: callers own what they get, as the storage contract says.
	clone func(T) T

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
		if c.m == nil {
			c.m = make(map[string]T)
		}
		c.m[key] = c.clone(v)
	}
	c.mu.Unlock()
	return v, nil
}

// invalidate forgets every cached value.
func (c *recordCache[T]) invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}

package etcd

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// rewatchDelay is how long WatchKeys waits before watching again after its watch ended with an
// error (a compacted revision, a lost leader).
const rewatchDelay = time.Second

// WatchKeys signals on the returned channel whenever a key record is created, changed or deleted
// — by this process or any other sharing the prefix — until ctx ends. Signals coalesce: at most
// one waits, and one means "read the keys again". After the watch fails it watches again and
// signals once, since it may have missed a change meanwhile. The channel is never closed.
//
// A replica's key set reloads on it (keys.Config.Changes), so a key another replica created or
// promoted is served at once instead of at the next periodic reload.
func (s *Store) WatchKeys(ctx context.Context) <-chan struct{} {
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	go func() {
		for ctx.Err() == nil {
			for resp := range s.cli.Watch(clientv3.WithRequireLeader(ctx), s.kindPrefix(kindKeys), clientv3.WithPrefix()) {
				if resp.Err() != nil {
					break
				}
				if len(resp.Events) > 0 {
					signal()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(rewatchDelay):
			}
			signal()
		}
	}()
	return changed
}

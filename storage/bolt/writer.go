package bolt

import (
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// maxGroup bounds how many writes share one transaction, so one commit stays short.
const maxGroup = 256

// writeRequest is one write waiting for the writer: fn runs inside a shared transaction, and
// done receives the outcome once that transaction has committed (or fn has failed).
type writeRequest struct {
	fn   func(*bbolt.Tx) error
	done chan error
}

// update runs fn in a write transaction and returns once its effects are durable.
//
// Writes are group-committed: one goroutine (runWriter) takes every write waiting when it is
// free, runs them one after the other in a single transaction, and commits them with one pair of
// fsyncs. A login makes about ten writes; with one transaction each, the disk's fsync rate would
// cap the provider far below what its CPUs can do, and db.Batch's timer (it waits up to 10 ms for
// company) would add that wait to every write of a login. Here a write waits only for the commit
// in progress, if any.
//
// fn must be a pure function of the transaction: when another write of its group fails, the
// group is rolled back and fn runs again. When fn returns an error, nothing of the group commits;
// fn is then run again alone, and that run's outcome is its answer, while the others are retried
// together without it.
//
// A write cannot be cancelled once queued (it may already have committed); ctx is checked before.
func (s *Store) update(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := writeRequest{fn: fn, done: make(chan error, 1)}
	select {
	case s.writes <- req:
		return <-req.done
	case <-s.stopWriter:
		return bolterrors.ErrDatabaseNotOpen
	}
}

// runWriter commits the queued writes until stopWriter is closed. The channel is unbuffered: a
// write is queued exactly while its goroutine waits in update's send, so after the writer has
// returned no write can be taken and left unanswered.
func (s *Store) runWriter() {
	defer close(s.writerDone)
	group := make([]writeRequest, 0, maxGroup)
	for {
		select {
		case req := <-s.writes:
			group = append(group[:0], req)
		case <-s.stopWriter:
			return
		}
	more:
		for len(group) < maxGroup {
			select {
			case req := <-s.writes:
				group = append(group, req)
			default:
				break more
			}
		}
		s.commitGroup(group)
		clear(group) // drop the closures until the next group
	}
}

// commitGroup runs group in one transaction; see update for what happens when a write fails.
func (s *Store) commitGroup(group []writeRequest) {
	for len(group) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bbolt.Tx) error {
			for i, req := range group {
				if err := runWrite(tx, req.fn); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, req := range group {
				req.done <- err // nil, or the commit's error, which is everyone's
			}
			return
		}
		alone := group[failed]
		alone.done <- s.db.Update(func(tx *bbolt.Tx) error { return runWrite(tx, alone.fn) })
		group = append(group[:failed], group[failed+1:]...)
	}
}

// runWrite runs fn, turning a panic into an error: the writer serves every request and must not
// die with one of them.
func runWrite(tx *bbolt.Tx, fn func(*bbolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("storage: write panicked: %v", r)
		}
	}()
	return fn(tx)
}

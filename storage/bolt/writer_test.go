package bolt

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// TestGroupCommitIsolatesFailures: writes that share a transaction with a failing or panicking
// write still commit, and the failing ones get their own error, with nothing of theirs stored.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{})
	errRefused := errors.New("refused")
	const writers = 64
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			key := []byte(fmt.Sprintf("k%02d", i))
			errs[i] = s.update(t.Context(), func(tx *bbolt.Tx) error {
				if err := bkt(tx, bucketMeta).Put(key, []byte("v")); err != nil {
					return err
				}
				switch i % 8 {
				case 3:
					return errRefused // after writing: the write must not survive
				case 5:
					panic("boom")
				}
				return nil
			})
		})
	}
	wg.Wait()

	err := s.db.View(func(tx *bbolt.Tx) error {
		for i := range writers {
			stored := bkt(tx, bucketMeta).Get([]byte(fmt.Sprintf("k%02d", i))) != nil
			switch i % 8 {
			case 3:
				if !errors.Is(errs[i], errRefused) || stored {
					t.Errorf("write %d: err %v, stored %v; want errRefused, nothing stored", i, errs[i], stored)
				}
			case 5:
				if errs[i] == nil || stored {
					t.Errorf("write %d (panics): err %v, stored %v; want an error, nothing stored", i, errs[i], stored)
				}
			default:
				if errs[i] != nil || !stored {
					t.Errorf("write %d: err %v, stored %v; want committed", i, errs[i], stored)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriteAfterClose fails at once instead of waiting for a writer that has stopped.
func TestWriteAfterClose(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	err := s.update(t.Context(), func(tx *bbolt.Tx) error { return nil })
	if !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		t.Fatalf("update after Close: %v, want ErrDatabaseNotOpen", err)
	}
}

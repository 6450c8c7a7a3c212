package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/ctxio"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file holds the operator and housekeeping operations: UpdateUser, RevokeUserTokens,
// DeleteKey, Stats and Backup.

// UpdateUser runs fn inside one write transaction, so concurrent updates of one user are
// serialised and none is lost (fn runs again if its transaction is retried). When the user does not
// exist fn gets exists=false and a User whose only field set is Subject, and the user is created
// if fn returns nil. An error from fn is returned unwrapped and nothing is written; changing the
// Subject gives ErrConflict.
func (s *Store) UpdateUser(ctx context.Context, subject string, fn func(u *storage.User, exists bool) error) (storage.User, error) {
	if err := ctx.Err(); err != nil {
		return storage.User{}, fmt.Errorf("storage: update user %q: %w", subject, err)
	}
	if subject == "" {
		return storage.User{}, errors.New("storage: update user: empty subject")
	}
	var out storage.User
	var fnErr error
	defer s.users.forget(subject)
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		b := bkt(tx, bucketUsers)
		u, ok, err := getJSON[storage.User](b, []byte(subject))
		if err != nil {
			return err
		}
		if !ok {
			u = storage.User{Subject: subject}
		}
		if fnErr = fn(&u, ok); fnErr != nil {
			return fnErr
		}
		if u.Subject != subject {
			return fmt.Errorf("the update changed the subject to %q: %w", u.Subject, storage.ErrConflict)
		}
		raw, err := record.Encode(u)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(subject), raw); err != nil {
			return err
		}
		out = u
		return nil
	})
	if fnErr != nil {
		return storage.User{}, fnErr
	}
	if err != nil {
		return storage.User{}, fmt.Errorf("storage: update user %q: %w", subject, err)
	}
	return out, nil
}

// RevokeUserTokens revokes, in one write transaction, every refresh family that holds a token
// issued to subject (a refresh token, rotated or not, or an access token issued with the
// family) and every access token of subject issued without a family; access tokens issued with
// a family die with it. It returns how many families it revoked: live families that were not
// revoked already.
//
// There is no subject index: the transaction scans the refresh_tokens and access_tokens
// buckets, decoding every record. This is an operator action, rare, and an index would have to
// be kept by every token write and built for the tokens of existing databases; the scan holds
// the writer lock for time proportional to the number of stored tokens.
func (s *Store) RevokeUserTokens(ctx context.Context, subject string) (n int, err error) {
	defer wrap(&err, "revoke tokens of user %q", subject)
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if subject == "" {
		return 0, errors.New("empty subject")
	}
	now := s.now()
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		n = 0
		user := record.NewUserTokens(subject)
		err := bkt(tx, bucketRefreshTokens).ForEach(func(k, raw []byte) error {
			var t record.TokenOwner
			if err := json.Unmarshal(raw, &t); err != nil {
				return fmt.Errorf("decode refresh token record: %w", err)
			}
			user.AddRefresh(t)
			return nil
		})
		if err != nil {
			return err
		}
		err = bkt(tx, bucketAccessTokens).ForEach(func(k, raw []byte) error {
			var t record.TokenOwner
			if err := json.Unmarshal(raw, &t); err != nil {
				return fmt.Errorf("decode access token record %q: %w", k, err)
			}
			user.AddAccess(string(k), t, now) // a string copies k, which lives only in ForEach
			return nil
		})
		if err != nil {
			return err
		}
		// Writes come after the scans: bbolt forbids modifying a bucket under ForEach.
		for familyID := range user.Families {
			fam, ok, err := getJSON[record.Family](bkt(tx, bucketFamilies), []byte(familyID))
			if err != nil {
				return err
			}
			if !ok || !fam.Live(now) {
				continue // nothing of it can be used any more
			}
			if err := revokeFamily(tx, familyID); err != nil {
				return fmt.Errorf("revoke refresh family %q: %w", familyID, err)
			}
			n++
		}
		for _, id := range user.Loose {
			if err := revokeAccess(tx, id); err != nil {
				return fmt.Errorf("revoke access token %q: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// DeleteKey removes a key; a missing one is not an error.
func (s *Store) DeleteKey(ctx context.Context, id string) (err error) {
	defer wrap(&err, "delete key %q", id)
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return bkt(tx, bucketKeys).Delete([]byte(id))
	})
}

// Stats counts the live records of each kind by the Store's clock; record.Counts lists the
// counts and says what makes a record live.
//
// Each kind is counted in short read transactions of statsChunk records (see countWhere), so
// writers go on and no snapshot is held for the whole scrape: the counts are approximate while
// writes go on. The cost is one pass over those buckets, decoding the records whose liveness
// depends on their value; each family record is read once per count. ctx is checked between
// chunks.
func (s *Store) Stats(ctx context.Context) (stats map[string]int, err error) {
	defer wrap(&err, "stats")
	now := s.now()
	counts := record.Counts()
	stats = make(map[string]int, len(counts))
	for _, c := range counts {
		keep := func(*bbolt.Tx, []byte) (bool, error) { return true, nil }
		if c.Live != nil {
			family := familyCache(now)
			var inTx *bbolt.Tx // the transaction keep runs in, which family reads through
			live := func(id string) bool { return family(inTx, id) }
			keep = func(tx *bbolt.Tx, raw []byte) (bool, error) {
				inTx = tx
				return c.Live(raw, now, live)
			}
		}
		n, err := s.countWhere(ctx, c.Kind, keep)
		if err != nil {
			return nil, fmt.Errorf("count %s: %w", c.Stat, err)
		}
		stats[c.Stat] = n
	}
	return stats, nil
}

// statsChunk is how many records countWhere reads per read transaction.
const statsChunk = 1000

// countWhere counts the records of bucket whose value keep accepts, statsChunk records per read
// transaction, checking ctx between them. bbolt reuses a page freed by a write only once every
// read transaction older than the write has ended: one transaction over a large bucket made
// the file grow under write load for as long as it lasted (a second and more, at every scrape
// of /metrics).
func (s *Store) countWhere(ctx context.Context, bucket string, keep func(tx *bbolt.Tx, raw []byte) (bool, error)) (int, error) {
	n := 0
	var from []byte // the first key of the next chunk; nil: the bucket's start
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		more := false
		err := s.db.View(func(tx *bbolt.Tx) error {
			c := bkt(tx, bucket).Cursor()
			k, raw := c.First()
			if from != nil {
				k, raw = c.Seek(from)
			}
			for i := 0; k != nil; k, raw = c.Next() {
				if i == statsChunk {
					from, more = bytes.Clone(k), true
					return nil
				}
				i++
				ok, err := keep(tx, raw)
				if err != nil {
					return fmt.Errorf("decode record %q: %w", k, err)
				}
				if ok {
					n++
				}
			}
			return nil
		})
		if err != nil || !more {
			return n, err
		}
	}
}

// familyCache returns a function reporting whether a refresh family is live (known, unexpired,
// not revoked), reading each family record once per transaction. A family record that does not
// decode counts as not live, as checkFamily fails closed on it.
func familyCache(now time.Time) func(tx *bbolt.Tx, familyID string) bool {
	seen := map[string]bool{}
	return func(tx *bbolt.Tx, familyID string) bool {
		live, ok := seen[familyID]
		if !ok {
			fam, found, err := getJSON[record.Family](bkt(tx, bucketFamilies), []byte(familyID))
			live = err == nil && found && fam.Live(now)
			seen[familyID] = live
		}
		return live
	}
}

// Backup writes the database as it is at the start of one read transaction (bbolt's
// Tx.WriteTo): a complete bbolt file that Open accepts, holding every write committed before
// Backup was called. Writers go on meanwhile; the pages of the snapshot stay allocated until the
// copy ends. ctx is checked before every write to w (every 32 KiB of data), so a cancelled
// backup stops at its next write and returns ctx's error; a write that blocks inside w is not
// interrupted. n counts the bytes w accepted, also when the copy fails part way.
//
// A caveat of bbolt: a writer that must grow the memory map waits for every open read
// transaction, this one included, and readers arriving meanwhile queue behind that writer. A
// backup to a slow w therefore stalls the store once a write needs a larger map, until the copy
// ends or ctx is cancelled.
func (s *Store) Backup(ctx context.Context, w io.Writer) (n int64, err error) {
	defer wrap(&err, "backup")
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	cw := ctxio.NewWriter(ctx, w)
	err = s.db.View(func(tx *bbolt.Tx) error {
		_, err := tx.WriteTo(cw)
		return err
	})
	if err != nil && cw.Err() != nil {
		// WriteTo formats some of w's errors with %s, which loses the chain; the error w (or
		// ctx) gave is the one to report, and to match with errors.Is.
		err = fmt.Errorf("write copy: %w", cw.Err())
	}
	return cw.Written(), err
}

package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file holds the login flow's short-lived records: auth requests, codes and WeCom login
// states.

// lenPrefix is len16(id) ‖ id, the start of every key of the buckets that link one id to
// several others (auth_request_codes, auth_request_tokens, session_families): the length keeps
// one id from being a prefix of another. Ids are bbolt keys, which are at most 32 KiB, so 16
// bits always suffice.
func lenPrefix(id string) []byte {
	k := binary.BigEndian.AppendUint16(nil, uint16(len(id)))
	return append(k, id...)
}

// arCodeKey is the auth_request_codes key linking a request to one of its codes.
func arCodeKey(authRequestID, codeHash string) []byte {
	return append(lenPrefix(authRequestID), codeHash...)
}

// CreateAuthRequest stores a new auth request; ErrAlreadyExists when the id is taken.
func (s *Store) CreateAuthRequest(ctx context.Context, ar storage.AuthRequest) (err error) {
	defer wrap(&err, "create auth request %q", ar.ID)
	if err := ctx.Err(); err != nil {
		return err
	}
	if ar.ID == "" {
		return errors.New("empty auth request id")
	}
	raw, err := record.Encode(ar)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return putNew(tx, bucketAuthRequests, []byte(ar.ID), raw, ar.ExpiresAt, "auth request")
	})
}

// liveAuthRequest reads the auth request id inside tx; ErrNotFound when absent or expired.
func liveAuthRequest(tx *bbolt.Tx, id string, now time.Time) (storage.AuthRequest, error) {
	ar, ok, err := getJSON[storage.AuthRequest](bkt(tx, bucketAuthRequests), []byte(id))
	if err != nil {
		return storage.AuthRequest{}, err
	}
	if !ok || record.Expired(ar.ExpiresAt, now) {
		return storage.AuthRequest{}, fmt.Errorf("auth request %q: %w", id, storage.ErrNotFound)
	}
	return ar, nil
}

// GetAuthRequest returns ErrNotFound for unknown or expired requests.
func (s *Store) GetAuthRequest(ctx context.Context, id string) (ar storage.AuthRequest, err error) {
	defer wrap(&err, "get auth request")
	if err := ctx.Err(); err != nil {
		return ar, err
	}
	now := s.now()
	err = s.db.View(func(tx *bbolt.Tx) error {
		ar, err = liveAuthRequest(tx, id, now)
		return err
	})
	return ar, err
}

// UpdateAuthRequest runs fn inside one write transaction (again if the transaction is retried).
// fn must not block or do I/O: it holds the database's writer lock. An error from
// fn is returned unwrapped and nothing is written; changing the id gives ErrConflict.
func (s *Store) UpdateAuthRequest(ctx context.Context, id string, fn func(*storage.AuthRequest) error) (storage.AuthRequest, error) {
	if err := ctx.Err(); err != nil {
		return storage.AuthRequest{}, fmt.Errorf("storage: update auth request %q: %w", id, err)
	}
	now := s.now()
	var out storage.AuthRequest
	var fnErr error
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		ar, err := liveAuthRequest(tx, id, now)
		if err != nil {
			return err
		}
		if fnErr = fn(&ar); fnErr != nil {
			return fnErr
		}
		if ar.ID != id {
			return fmt.Errorf("the update changed the id to %q: %w", ar.ID, storage.ErrConflict)
		}
		raw, err := record.Encode(ar)
		if err != nil {
			return err
		}
		if err := putExpiring(tx, bucketAuthRequests, []byte(id), raw, ar.ExpiresAt); err != nil {
			return err
		}
		out = ar
		return nil
	})
	if fnErr != nil {
		return storage.AuthRequest{}, fnErr
	}
	if err != nil {
		return storage.AuthRequest{}, fmt.Errorf("storage: update auth request %q: %w", id, err)
	}
	return out, nil
}

// DeleteAuthRequest removes the request and its unredeemed codes; a missing request is not an
// error. Redeemed codes stay, as tombstones naming the request, until their own expiry: they can
// no longer be redeemed, and keeping them is what lets ConsumeCode answer ErrAlreadyUsed to a
// replay (the OP deletes the request as soon as the code has produced tokens). The request's
// auth_request_tokens links stay too, so that the replay still revokes what the code produced.
func (s *Store) DeleteAuthRequest(ctx context.Context, id string) (err error) {
	defer wrap(&err, "delete auth request %q", id)
	if err := ctx.Err(); err != nil {
		return err
	}
	// Usually the request is gone already (CreateTokens deleted it): find that out without a
	// write transaction, which would cost a commit.
	if gone, err := s.authRequestGone(id); err != nil || gone {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error { return deleteAuthRequest(tx, id) })
}

// authRequestGone reports whether neither the request nor any code link of it is stored.
func (s *Store) authRequestGone(id string) (gone bool, err error) {
	err = s.db.View(func(tx *bbolt.Tx) error {
		k, _ := bkt(tx, bucketARCodes).Cursor().Seek(lenPrefix(id))
		gone = bkt(tx, bucketAuthRequests).Get([]byte(id)) == nil && (k == nil || !bytes.HasPrefix(k, lenPrefix(id)))
		return nil
	})
	return gone, err
}

// deleteAuthRequest is DeleteAuthRequest inside tx.
func deleteAuthRequest(tx *bbolt.Tx, id string) error {
	if err := deleteExpiring(tx, bucketAuthRequests, []byte(id)); err != nil {
		return err
	}
	links, codes := bkt(tx, bucketARCodes), bkt(tx, bucketCodes)
	prefix := lenPrefix(id)
	for _, k := range prefixKeys(tx, bucketARCodes, prefix) {
		hash := k[len(prefix):]
		code, ok, err := getJSON[record.Code](codes, hash)
		if err != nil {
			return err
		}
		if ok && code.DeletedWith(id) {
			if err := deleteExpiring(tx, bucketCodes, hash); err != nil {
				return err
			}
		}
		if err := links.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// SaveCode maps codeHash to a live auth request until expiresAt. A code hash already stored
// gives ErrAlreadyExists (overwriting would resurrect a redeemed code); an unknown or expired
// auth request gives ErrNotFound.
func (s *Store) SaveCode(ctx context.Context, codeHash, authRequestID string, expiresAt time.Time) (err error) {
	defer wrap(&err, "save code for auth request %q", authRequestID)
	if err := ctx.Err(); err != nil {
		return err
	}
	if codeHash == "" {
		return errors.New("empty code hash")
	}
	raw, err := record.Encode(record.Code{AuthRequestID: authRequestID, ExpiresAt: expiresAt})
	if err != nil {
		return err
	}
	now := s.now()
	return s.update(ctx, func(tx *bbolt.Tx) error {
		if _, err := liveAuthRequest(tx, authRequestID, now); err != nil {
			return err
		}
		return saveCode(tx, codeHash, authRequestID, raw, expiresAt)
	})
}

// saveCode stores an encoded record.Code and its link to the auth request.
func saveCode(tx *bbolt.Tx, codeHash, authRequestID string, raw []byte, expiresAt time.Time) error {
	if err := putNew(tx, bucketCodes, []byte(codeHash), raw, expiresAt, "code"); err != nil {
		return err
	}
	return bkt(tx, bucketARCodes).Put(arCodeKey(authRequestID, codeHash), []byte{})
}

// CompleteAuthRequest: see storage.Store. The session and code records are encoded before the
// write; only the auth request, read inside it, is encoded there.
func (s *Store) CompleteAuthRequest(ctx context.Context, id string, c storage.Completion) (ar storage.AuthRequest, err error) {
	defer wrap(&err, "complete auth request %q", id)
	sessionID, err := record.CompletionSession(c)
	if err != nil {
		return ar, err
	}
	var rawSession, rawCode []byte
	if c.NewSession != nil {
		if rawSession, err = record.Encode(*c.NewSession); err != nil {
			return ar, err
		}
	}
	if c.CodeHash != "" {
		if rawCode, err = record.Encode(record.Code{AuthRequestID: id, ExpiresAt: c.CodeExpiresAt}); err != nil {
			return ar, err
		}
	}
	now := s.now()
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		got, err := liveAuthRequest(tx, id, now)
		if err != nil {
			return err
		}
		if err := record.Complete(&got, c); err != nil {
			return err
		}
		raw, err := record.Encode(got)
		if err != nil {
			return err
		}
		if err := putExpiring(tx, bucketAuthRequests, []byte(id), raw, got.ExpiresAt); err != nil {
			return err
		}
		if c.NewSession != nil {
			if err := putNew(tx, bucketSessions, []byte(sessionID), rawSession, c.NewSession.ExpiresAt, "session"); err != nil {
				return err
			}
		} else if sessionID != "" {
			if err := addSessionClient(tx, sessionID, got.ClientID, now); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		if c.CodeHash != "" {
			if err := saveCode(tx, c.CodeHash, id, rawCode, c.CodeExpiresAt); err != nil {
				return err
			}
		}
		ar = got
		return nil
	})
	if err != nil {
		return storage.AuthRequest{}, err
	}
	return ar, nil
}

// ConsumeCode redeems a code in one write transaction, so of concurrent redemptions exactly one
// sees it unused. A replay (the code already used) makes that transaction revoke every token
// issued from the code's auth request and mark the request replayed (see revokeIssued), and
// commit; ErrAlreadyUsed is returned after the commit, because returning it from inside would
// roll the revocation back. Other errors leave everything untouched.
func (s *Store) ConsumeCode(ctx context.Context, codeHash string) (ar storage.AuthRequest, err error) {
	defer wrap(&err, "consume code")
	if err := ctx.Err(); err != nil {
		return ar, err
	}
	now := s.now()
	if !s.exists(bucketCodes, codeHash) {
		return ar, storage.ErrNotFound // a wrong code costs no write
	}
	var replayedAR string
	var replayed, missing bool
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		replayed, replayedAR, missing = false, "", false
		code, ok, err := getJSON[record.Code](bkt(tx, bucketCodes), []byte(codeHash))
		if err != nil {
			return err
		}
		if !ok || record.Expired(code.ExpiresAt, now) {
			missing = true // an answer, not a failure: the writes grouped with this one commit
			return nil
		}
		if code.Used {
			replayed, replayedAR = true, code.AuthRequestID
			return revokeIssued(tx, code.AuthRequestID, code.ExpiresAt)
		}
		got, err := liveAuthRequest(tx, code.AuthRequestID, now)
		if err != nil {
			return err
		}
		code.Used = true
		raw, err := record.Encode(code)
		if err != nil {
			return err
		}
		if err := putExpiring(tx, bucketCodes, []byte(codeHash), raw, code.ExpiresAt); err != nil {
			return err
		}
		ar = got
		return nil
	})
	if err == nil && missing {
		err = storage.ErrNotFound
	}
	if err != nil {
		return storage.AuthRequest{}, err
	}
	if replayed {
		return storage.AuthRequest{}, fmt.Errorf("code of auth request %q presented again, tokens issued from it revoked: %w",
			replayedAR, storage.ErrAlreadyUsed)
	}
	return ar, nil
}

// CreateLoginState stores a new WeCom login state; ErrAlreadyExists when it is taken.
func (s *Store) CreateLoginState(ctx context.Context, ls storage.LoginState) (err error) {
	defer wrap(&err, "create login state")
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := record.Encode(ls)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return putNew(tx, bucketLoginStates, []byte(ls.State), raw, ls.ExpiresAt, "login state")
	})
}

// ConsumeLoginState reads and deletes the state in one write transaction: exactly one caller
// wins. An expired state is left for DeleteExpired.
func (s *Store) ConsumeLoginState(ctx context.Context, state string) (ls storage.LoginState, err error) {
	defer wrap(&err, "consume login state")
	if err := ctx.Err(); err != nil {
		return ls, err
	}
	now := s.now()
	if !s.exists(bucketLoginStates, state) {
		return ls, storage.ErrNotFound // a forged state costs no write
	}
	var found bool
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		got, ok, err := getJSON[storage.LoginState](bkt(tx, bucketLoginStates), []byte(state))
		if err != nil {
			return err
		}
		if found = ok && !record.Expired(got.ExpiresAt, now); !found {
			return nil // an answer, not a failure: the writes grouped with this one commit
		}
		if err := deleteExpiring(tx, bucketLoginStates, []byte(state)); err != nil {
			return err
		}
		ls = got
		return nil
	})
	if err == nil && !found {
		err = storage.ErrNotFound
	}
	if err != nil {
		return storage.LoginState{}, err
	}
	return ls, nil
}

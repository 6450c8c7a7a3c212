package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file holds the login flow's short-lived records: auth requests, codes and WeCom login
// states.

// CreateAuthRequest stores a new auth request; ErrAlreadyExists when the id is taken.
func (s *Store) CreateAuthRequest(ctx context.Context, ar storage.AuthRequest) (err error) {
	defer wrap(&err, "create auth request %q", ar.ID)
	return s.create(ctx, kindAuthRequests, ar.ID, ar, ar.ExpiresAt, "auth request")
}

// liveAuthRequest reads the auth request id, guarded; ErrNotFound when absent or expired.
func liveAuthRequest(t *txn, id string, now time.Time) (storage.AuthRequest, error) {
	if id == "" {
		return storage.AuthRequest{}, fmt.Errorf("auth request %q: %w", id, storage.ErrNotFound)
	}
	ar, ok, err := getJSON[storage.AuthRequest](t, kindAuthRequests, id)
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
	return viewRecord(s, ctx, kindAuthRequests, id, func(v storage.AuthRequest, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// UpdateAuthRequest runs fn on a fresh copy of the live request and commits the result with a
// compare-and-swap on the request's revision; when another replica wrote the request meanwhile,
// fn runs again on the new value. An error from fn is returned unwrapped and nothing is written;
// changing the id gives ErrConflict.
func (s *Store) UpdateAuthRequest(ctx context.Context, id string, fn func(*storage.AuthRequest) error) (storage.AuthRequest, error) {
	var out storage.AuthRequest
	var fnErr error
	err := s.update(ctx, func(t *txn) error {
		fnErr = nil
		ar, err := liveAuthRequest(t, id, s.now())
		if err != nil {
			return err
		}
		if fnErr = fn(&ar); fnErr != nil {
			return fnErr
		}
		if ar.ID != id {
			return fmt.Errorf("the update changed the id to %q: %w", ar.ID, storage.ErrConflict)
		}
		out = ar
		return t.putExpiring(kindAuthRequests, id, ar, ar.ExpiresAt)
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
// error. Redeemed codes stay, as tombstones naming the request, until their own expiry, and so
// do the request's auth_request_tokens links: a replay after the deletion must still answer
// ErrAlreadyUsed and revoke what the code produced. A code being redeemed concurrently is
// guarded: the deletion then runs again and keeps it as a tombstone. When the request is gone
// already (CreateTokens deleted it) this is two reads and no write.
func (s *Store) DeleteAuthRequest(ctx context.Context, id string) (err error) {
	defer wrap(&err, "delete auth request %q", id)
	if id == "" {
		return nil
	}
	return s.update(ctx, func(t *txn) error { return deleteAuthRequest(t, id) })
}

// deleteAuthRequest is DeleteAuthRequest inside t.
func deleteAuthRequest(t *txn, id string) error {
	if err := t.deleteExpiring(kindAuthRequests, id); err != nil {
		return err
	}
	prefix := t.s.key(kindARCodes, esc(id)+"/")
	links, err := t.scan(prefix)
	if err != nil {
		return err
	}
	for _, l := range links {
		hash := strings.TrimPrefix(l.key, prefix)
		code, ok, err := getJSON[record.Code](t, kindCodes, hash)
		if err != nil {
			return err
		}
		if ok && code.DeletedWith(id) {
			if err := t.deleteExpiring(kindCodes, hash); err != nil {
				return err
			}
		}
	}
	if len(links) > 0 {
		t.delPrefix(prefix)
	}
	if t.writes() > txnBudget {
		return fmt.Errorf("auth request %q with %d codes: more than one transaction holds", id, len(links))
	}
	return nil
}

// SaveCode maps codeHash to a live auth request until expiresAt. A code hash already stored gives
// ErrAlreadyExists (overwriting would resurrect a redeemed code); an unknown or expired auth
// request gives ErrNotFound. The request's liveness is guarded, so a concurrent deletion either
// lands first (ErrNotFound) or deletes the new code with the request.
func (s *Store) SaveCode(ctx context.Context, codeHash, authRequestID string, expiresAt time.Time) (err error) {
	defer wrap(&err, "save code for auth request %q", authRequestID)
	if codeHash == "" {
		return errors.New("empty code hash")
	}
	return s.update(ctx, func(t *txn) error {
		err := t.prefetch(s.key(kindAuthRequests, authRequestID), s.key(kindCodes, codeHash))
		if err != nil {
			return err
		}
		if _, err := liveAuthRequest(t, authRequestID, s.now()); err != nil {
			return err
		}
		return saveCode(t, codeHash, authRequestID, expiresAt)
	})
}

// saveCode stores a new code record, guarded to be new, and its link to the auth request.
func saveCode(t *txn, codeHash, authRequestID string, expiresAt time.Time) error {
	if codeHash == "" {
		return errors.New("empty code hash")
	}
	rec := record.Code{AuthRequestID: authRequestID, ExpiresAt: expiresAt}
	if err := t.putNew(kindCodes, codeHash, rec, expiresAt, "code"); err != nil {
		return err
	}
	return t.putLink(kindARCodes, arCodeID(authRequestID, codeHash), expiresAt)
}

// CompleteAuthRequest records a finished sign-in in one transaction guarded by the request's
// revision (and by the absence of the new session and code): of two completions racing, on any
// replicas, one commits and the other runs again, finds the request done and gets ErrConflict.
// Adding the client to an existing session is guarded too; a session that is gone or expired is
// skipped, as the contract says.
func (s *Store) CompleteAuthRequest(ctx context.Context, id string, c storage.Completion) (ar storage.AuthRequest, err error) {
	defer wrap(&err, "complete auth request %q", id)
	sessionID, err := record.CompletionSession(c)
	if err != nil {
		return ar, err
	}
	if id == "" {
		return ar, storage.ErrNotFound
	}
	err = s.update(ctx, func(t *txn) error {
		ar = storage.AuthRequest{}
		now := s.now()
		keys := []string{s.key(kindAuthRequests, id)}
		if sessionID != "" {
			keys = append(keys, s.key(kindSessions, sessionID))
		}
		if c.CodeHash != "" {
			keys = append(keys, s.key(kindCodes, c.CodeHash))
		}
		if err := t.prefetch(keys...); err != nil {
			return err
		}
		got, err := liveAuthRequest(t, id, now)
		if err != nil {
			return err
		}
		if err := record.Complete(&got, c); err != nil {
			return err
		}
		if err := t.putExpiring(kindAuthRequests, id, got, got.ExpiresAt); err != nil {
			return err
		}
		if c.NewSession != nil {
			if err := t.putNew(kindSessions, sessionID, *c.NewSession, c.NewSession.ExpiresAt, "session"); err != nil {
				return err
			}
		} else if sessionID != "" {
			if err := addSessionClient(t, sessionID, got.ClientID, now); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		if c.CodeHash != "" {
			if err := saveCode(t, c.CodeHash, id, c.CodeExpiresAt); err != nil {
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

// ConsumeCode redeems a code with a compare-and-swap on the code record, so of concurrent
// redemptions, on any replicas, exactly one sees it unused. A replay (the code already used)
// revokes every token issued from the code's auth request and marks the request replayed (see
// revokeIssued), and commits; ErrAlreadyUsed is returned after the commit. Other errors leave
// everything untouched.
func (s *Store) ConsumeCode(ctx context.Context, codeHash string) (ar storage.AuthRequest, err error) {
	defer wrap(&err, "consume code")
	if codeHash == "" {
		return ar, storage.ErrNotFound
	}
	var replayedAR string
	var replayed bool
	err = s.updateSplit(ctx, func(t *txn) error {
		replayed, replayedAR, ar = false, "", storage.AuthRequest{}
		now := s.now()
		code, ok, err := getJSON[record.Code](t, kindCodes, codeHash)
		if err != nil {
			return err
		}
		if !ok || record.Expired(code.ExpiresAt, now) {
			return storage.ErrNotFound
		}
		if code.Used {
			replayed, replayedAR = true, code.AuthRequestID
			return revokeIssued(t, code.AuthRequestID, code.ExpiresAt)
		}
		got, err := liveAuthRequest(t, code.AuthRequestID, now)
		if err != nil {
			return err
		}
		code.Used = true
		if err := t.putExpiring(kindCodes, codeHash, code, code.ExpiresAt); err != nil {
			return err
		}
		ar = got
		return nil
	})
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
	return s.create(ctx, kindLoginStates, ls.State, ls, ls.ExpiresAt, "login state")
}

// ConsumeLoginState reads the state and deletes it under a compare on its revision: exactly one
// caller, on any replica, wins. An expired state is left for the sweep.
func (s *Store) ConsumeLoginState(ctx context.Context, state string) (ls storage.LoginState, err error) {
	defer wrap(&err, "consume login state")
	if state == "" {
		return ls, storage.ErrNotFound
	}
	err = s.update(ctx, func(t *txn) error {
		got, ok, err := getJSON[storage.LoginState](t, kindLoginStates, state)
		if err != nil {
			return err
		}
		if !ok || record.Expired(got.ExpiresAt, s.now()) {
			return storage.ErrNotFound
		}
		ls = got
		return t.deleteExpiring(kindLoginStates, state)
	})
	if err != nil {
		return storage.LoginState{}, err
	}
	return ls, nil
}

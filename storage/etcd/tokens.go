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

// This file holds access tokens, refresh tokens and refresh families, and the revocations that
// fan out over them.

// putLink creates or replaces a link entry expiring at exp.
func (t *txn) putLink(kind, id string, exp time.Time) error {
	return t.putExpiring(kind, id, record.Link{ExpiresAt: exp}, exp)
}

// moveLink gives an existing link entry the expiry exp; a missing one (swept, or dropped with its
// session) is not recreated.
func (t *txn) moveLink(kind, id string, exp time.Time) error {
	_, ok, err := t.get(t.s.key(kind, id))
	if err != nil || !ok {
		return err
	}
	return t.putLink(kind, id, exp)
}

// checkFamily returns ErrRevoked when the family is revoked or unknown (see record.CheckFamily),
// guarded.
func checkFamily(t *txn, familyID string) error {
	fam, ok, err := getJSON[record.Family](t, kindFamilies, familyID)
	if err != nil {
		return err
	}
	return record.CheckFamily(familyID, fam, ok)
}

// extendFamily makes the family record, and the links leading to it, live at least until exp.
func extendFamily(t *txn, familyID string, exp time.Time) error {
	fam, ok, err := getJSON[record.Family](t, kindFamilies, familyID)
	if err != nil || !ok || !exp.After(fam.ExpiresAt) {
		return err
	}
	fam.ExpiresAt = exp
	if err := t.putExpiring(kindFamilies, familyID, fam, fam.ExpiresAt); err != nil {
		return err
	}
	if fam.SessionID != "" {
		if err := t.moveLink(kindSessionFamilies, sessionFamilyID(fam.SessionID, familyID), exp); err != nil {
			return err
		}
	}
	if fam.AuthRequestID != "" {
		if err := t.moveLink(kindARTokens, arTokenID(fam.AuthRequestID, linkFamily, familyID), exp); err != nil {
			return err
		}
	}
	return nil
}

// revokeAccess marks the access token revoked; an unknown or already revoked token is left alone
// without making the commit depend on it (revocation is monotonic).
func revokeAccess(t *txn, id string) error {
	rec, ok, err := peekJSON[record.Access](t, kindAccessTokens, id)
	if err != nil || !ok || rec.Revoked {
		return err
	}
	rec.Revoked = true
	return t.putExpiring(kindAccessTokens, id, rec, rec.ExpiresAt) // guards the record
}

// revokeFamily marks the family revoked; an unknown or already revoked family is left alone
// without making the commit depend on it.
func revokeFamily(t *txn, familyID string) error {
	fam, ok, err := peekJSON[record.Family](t, kindFamilies, familyID)
	if err != nil || !ok || fam.Revoked {
		return err
	}
	fam.Revoked = true
	return t.putExpiring(kindFamilies, familyID, fam, fam.ExpiresAt) // guards the record
}

// txnBudget is how many writes, and how many compares, a transaction that fans out over
// revocations may carry before it hands them to updateSplit: below maxTxnOps, leaving room for
// the writes around them.
const txnBudget = 96

// tooBig is what a transaction function returns when its revocations would not fit one etcd
// transaction: updateSplit revokes them ahead, in transactions of their own, and runs the
// function again.
type tooBig struct{ families, access []string }

func (e *tooBig) Error() string {
	return fmt.Sprintf("%d families and %d access tokens to revoke do not fit one transaction", len(e.families), len(e.access))
}

// overBudget returns a *tooBig for the given revocations when t has grown past txnBudget.
func overBudget(t *txn, families, access []string) error {
	if t.writes() <= txnBudget && len(t.cmps) <= txnBudget {
		return nil
	}
	return &tooBig{families: families, access: access}
}

// updateSplit is update for functions that may return *tooBig: it revokes what the function
// could not, then runs the function again. The early revocations are what the function was
// about to do anyway, and a revocation is never undone, so they change nothing but timing.
func (s *Store) updateSplit(ctx context.Context, fn func(t *txn) error) error {
	for range 8 {
		err := s.update(ctx, fn)
		var big *tooBig
		if !errors.As(err, &big) {
			return err
		}
		if _, err := s.revokeInChunks(ctx, big.families, big.access); err != nil {
			return err
		}
	}
	return errors.New("revocations keep growing beyond one transaction")
}

// revokeChunk is how many records one transaction of revokeInChunks revokes.
const revokeChunk = 48

// revokeInChunks revokes the families and access tokens, revokeChunk at a time, and returns how
// many live families (known, unexpired, not revoked) it revoked: each is counted by the one
// transaction that revoked it, even when other replicas revoke the same ones concurrently.
func (s *Store) revokeInChunks(ctx context.Context, families, access []string) (int, error) {
	revoked := 0
	for len(families) > 0 {
		chunk := families[:min(revokeChunk, len(families))]
		families = families[len(chunk):]
		n := 0
		err := s.update(ctx, func(t *txn) error {
			n = 0
			now := s.now()
			for _, id := range chunk {
				fam, ok, err := peekJSON[record.Family](t, kindFamilies, id)
				if err != nil {
					return err
				}
				if !ok || !fam.Live(now) {
					continue // nothing of it can be used any more
				}
				if err := revokeFamily(t, id); err != nil {
					return fmt.Errorf("revoke refresh family %q: %w", id, err)
				}
				n++
			}
			return nil
		})
		if err != nil {
			return revoked, err
		}
		revoked += n
	}
	for len(access) > 0 {
		chunk := access[:min(revokeChunk, len(access))]
		access = access[len(chunk):]
		err := s.update(ctx, func(t *txn) error {
			for _, id := range chunk {
				if err := revokeAccess(t, id); err != nil {
					return fmt.Errorf("revoke access token %q: %w", id, err)
				}
			}
			return nil
		})
		if err != nil {
			return revoked, err
		}
	}
	return revoked, nil
}

// revokeIssued revokes every token recorded as issued from the auth request (its access tokens
// and the families started with them) and marks the request replayed until codeExpires, so that
// tokens it would still produce — a replay racing the first exchange can land before the
// winner's CreateTokens — are refused. The scan of the request's links is guarded: a token
// issued from the request meanwhile makes the transaction run again and revoke it too.
func revokeIssued(t *txn, authRequestID string, codeExpires time.Time) error {
	if authRequestID == "" {
		return nil
	}
	prefix := t.s.key(kindARTokens, arTokensPrefix(authRequestID))
	links, err := t.scan(prefix)
	if err != nil {
		return err
	}
	var families, access []string
	for _, l := range links {
		link, id, ok := strings.Cut(strings.TrimPrefix(l.key, prefix), "/")
		if !ok || id == "" {
			continue // the replay marker, or a malformed key
		}
		switch link {
		case linkAccess:
			access = append(access, id)
			err = revokeAccess(t, id)
		case linkFamily:
			families = append(families, id)
			err = revokeFamily(t, id)
		}
		if err != nil {
			return fmt.Errorf("revoke tokens issued from auth request %q: %w", authRequestID, err)
		}
	}
	if err := overBudget(t, families, access); err != nil {
		return err
	}
	marker := arTokenID(authRequestID, linkReplayed, "")
	old, ok, err := getJSON[record.Link](t, kindARTokens, marker)
	if err != nil || (ok && !codeExpires.After(old.ExpiresAt)) {
		return err
	}
	return t.putLink(kindARTokens, marker, codeExpires)
}

// checkNotReplayed fails with ErrRevoked when a code of the auth request has been replayed. The
// marker's absence is guarded: a replay committing first makes the caller run again and fail.
func checkNotReplayed(t *txn, authRequestID string, now time.Time) error {
	m, ok, err := getJSON[record.Link](t, kindARTokens, arTokenID(authRequestID, linkReplayed, ""))
	if err != nil {
		return err
	}
	return record.CheckNotReplayed(authRequestID, m, ok, now)
}

// CreateTokens stores access and, when refresh is not nil, refresh as the first token of a new
// family, in one transaction. Taken ids, hashes or family ids give ErrAlreadyExists. An access
// token naming a family other than the one created here must name a live family.
//
// With access.AuthRequestID set, the access token and the new family are linked to the auth
// request (auth_request_tokens, for ConsumeCode's replay revocation) and the request is deleted
// as DeleteAuthRequest would (its code has done its work), and an auth request one of whose
// codes was already replayed gives ErrRevoked. With refresh.SessionID set, the new family is
// linked to the session (session_families, for EndSession).
func (s *Store) CreateTokens(ctx context.Context, access storage.AccessToken, refresh *storage.RefreshToken) (err error) {
	defer wrap(&err, "create tokens (access %q)", access.ID)
	tok, err := record.NewTokens(access, refresh)
	if err != nil {
		return err
	}
	rt, fam := tok.Refresh, tok.Family
	return s.update(ctx, func(t *txn) error {
		now := s.now()
		keys := []string{s.key(kindAccessTokens, access.ID)}
		if access.AuthRequestID != "" {
			keys = append(keys, s.key(kindARTokens, arTokenID(access.AuthRequestID, linkReplayed, "")),
				s.key(kindAuthRequests, access.AuthRequestID))
		}
		if rt != nil {
			keys = append(keys, s.key(kindFamilies, rt.FamilyID), s.key(kindRefreshTokens, rt.Hash))
		}
		if access.FamilyID != "" {
			keys = append(keys, s.key(kindFamilies, access.FamilyID))
		}
		if err := t.prefetch(keys...); err != nil {
			return err
		}
		if access.AuthRequestID != "" {
			if err := checkNotReplayed(t, access.AuthRequestID, now); err != nil {
				return err
			}
			if err := deleteAuthRequest(t, access.AuthRequestID); err != nil {
				return err
			}
			if err := t.putLink(kindARTokens, arTokenID(access.AuthRequestID, linkAccess, access.ID), access.ExpiresAt); err != nil {
				return err
			}
		}
		if rt != nil {
			if err := t.putNew(kindFamilies, rt.FamilyID, fam, fam.ExpiresAt, "refresh family"); err != nil {
				return err
			}
			if err := t.putNew(kindRefreshTokens, rt.Hash, *rt, rt.ExpiresAt, "refresh token"); err != nil {
				return err
			}
			if access.AuthRequestID != "" {
				if err := t.putLink(kindARTokens, arTokenID(access.AuthRequestID, linkFamily, rt.FamilyID), fam.ExpiresAt); err != nil {
					return err
				}
			}
			if rt.SessionID != "" {
				if err := t.putLink(kindSessionFamilies, sessionFamilyID(rt.SessionID, rt.FamilyID), fam.ExpiresAt); err != nil {
					return err
				}
			}
		}
		if familyID := tok.ExistingFamily(); familyID != "" {
			if err := checkFamily(t, familyID); err != nil {
				return err
			}
			if err := extendFamily(t, familyID, access.ExpiresAt); err != nil {
				return err
			}
		}
		return t.putNew(kindAccessTokens, access.ID, tok.Access, access.ExpiresAt, "access token")
	})
}

// familyLive reads the family outside a transaction: nil when it is known and not revoked.
func (s *Store) familyLive(ctx context.Context, familyID string) error {
	key := s.key(kindFamilies, familyID)
	raw, ok, err := s.get(ctx, key)
	if err != nil {
		return err
	}
	var fam record.Family
	if ok {
		if fam, err = record.Decode[record.Family](key, raw); err != nil {
			return err
		}
	}
	return record.CheckFamily(familyID, fam, ok)
}

// GetAccessToken returns a live token: ErrNotFound when unknown or expired, ErrRevoked when it
// or its family was revoked. The token and its family are two linearizable reads, token first:
// a family revoked before the call began is always seen.
func (s *Store) GetAccessToken(ctx context.Context, id string) (at storage.AccessToken, err error) {
	defer wrap(&err, "get access token %q", id)
	rec, err := viewRecord(s, ctx, kindAccessTokens, id, func(v record.Access, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
	if err != nil {
		return at, err
	}
	if rec.Revoked {
		return at, storage.ErrRevoked
	}
	if rec.FamilyID != "" {
		if err := s.familyLive(ctx, rec.FamilyID); err != nil {
			return at, err
		}
	}
	return rec.AccessToken, nil
}

// GetRefreshToken returns the live refresh token with this hash. The common case is two reads;
// only a rotated token (reuse) takes a transaction, which revokes the family and commits before
// ErrTokenReused is returned.
func (s *Store) GetRefreshToken(ctx context.Context, hash string) (rt storage.RefreshToken, err error) {
	defer wrap(&err, "get refresh token")
	rt, err = viewRecord(s, ctx, kindRefreshTokens, hash, func(v storage.RefreshToken, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
	if err != nil {
		return storage.RefreshToken{}, err
	}
	if rt.RotatedAt != nil {
		// A token, once rotated, stays rotated until it is swept, and revoking is idempotent,
		// so the family id read above is still the one to revoke.
		if err := s.update(ctx, func(t *txn) error { return revokeFamily(t, rt.FamilyID) }); err != nil {
			return storage.RefreshToken{}, fmt.Errorf("revoke family %q after reuse: %w", rt.FamilyID, err)
		}
		return storage.RefreshToken{}, fmt.Errorf("family %q: %w", rt.FamilyID, storage.ErrTokenReused)
	}
	if err := s.familyLive(ctx, rt.FamilyID); err != nil {
		return storage.RefreshToken{}, err
	}
	return rt, nil
}

// RotateRefreshToken exchanges the presented token for next and stores access, in one
// transaction guarded by the presented token's revision: of concurrent rotations of one token,
// on any replicas, exactly one commits; the others run again, find the token rotated, and — like
// any later presentation of it — revoke the family and get ErrTokenReused (after their commit).
func (s *Store) RotateRefreshToken(ctx context.Context, presentedHash string, next storage.RefreshToken, access storage.AccessToken) (err error) {
	defer wrap(&err, "rotate refresh token")
	rot, err := record.NewRotation(next, access)
	if err != nil {
		return err
	}
	if presentedHash == "" {
		return storage.ErrNotFound
	}
	var reusedFamily string
	err = s.update(ctx, func(t *txn) error {
		reusedFamily = ""
		now := s.now()
		err := t.prefetch(s.key(kindRefreshTokens, presentedHash), s.key(kindRefreshTokens, next.Hash),
			s.key(kindAccessTokens, access.ID), s.key(kindFamilies, next.FamilyID))
		if err != nil {
			return err
		}
		cur, ok, err := getJSON[storage.RefreshToken](t, kindRefreshTokens, presentedHash)
		if err != nil {
			return err
		}
		if !ok || record.Expired(cur.ExpiresAt, now) {
			return storage.ErrNotFound
		}
		if cur.RotatedAt != nil {
			reusedFamily = cur.FamilyID
			return revokeFamily(t, cur.FamilyID)
		}
		if err := checkFamily(t, cur.FamilyID); err != nil {
			return err
		}
		if err := rot.Check(cur); err != nil {
			return err
		}
		rotatedAt := now
		cur.RotatedAt = &rotatedAt
		if err := t.putExpiring(kindRefreshTokens, presentedHash, cur, cur.ExpiresAt); err != nil {
			return err
		}
		if err := t.putNew(kindRefreshTokens, next.Hash, rot.Next, next.ExpiresAt, "refresh token"); err != nil {
			return err
		}
		if err := t.putNew(kindAccessTokens, access.ID, rot.Access, access.ExpiresAt, "access token"); err != nil {
			return err
		}
		return extendFamily(t, cur.FamilyID, rot.FamilyExpiry())
	})
	if err != nil {
		return err
	}
	if reusedFamily != "" {
		return fmt.Errorf("family %q: %w", reusedFamily, storage.ErrTokenReused)
	}
	return nil
}

// RevokeAccessToken marks the access token revoked; unknown ids are not an error.
func (s *Store) RevokeAccessToken(ctx context.Context, id string) (err error) {
	defer wrap(&err, "revoke access token %q", id)
	if id == "" {
		return nil
	}
	return s.update(ctx, func(t *txn) error { return revokeAccess(t, id) })
}

// RevokeRefreshFamily revokes the family with one write; unknown families are not an error.
func (s *Store) RevokeRefreshFamily(ctx context.Context, familyID string) (err error) {
	defer wrap(&err, "revoke refresh family %q", familyID)
	if familyID == "" {
		return nil
	}
	return s.update(ctx, func(t *txn) error { return revokeFamily(t, familyID) })
}

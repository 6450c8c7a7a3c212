package bolt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file holds access tokens, refresh tokens and refresh families.

// Kinds of auth_request_tokens entries: the byte after the auth request id's length prefix.
const (
	linkAccess   byte = 'a' // followed by an access token id
	linkFamily   byte = 'f' // followed by a refresh family id
	linkReplayed byte = 'x' // alone: a code of the request was presented again
)

// arTokenKey is the auth_request_tokens key len16(ar id) ‖ ar id ‖ kind ‖ id.
func arTokenKey(authRequestID string, kind byte, id string) []byte {
	k := append(lenPrefix(authRequestID), kind)
	return append(k, id...)
}

// sessionFamilyKey is the session_families key len16(session id) ‖ session id ‖ family id.
func sessionFamilyKey(sessionID, familyID string) []byte {
	return append(lenPrefix(sessionID), familyID...)
}

// putLink creates or replaces a link entry expiring at exp.
func putLink(tx *bbolt.Tx, bucket string, key []byte, exp time.Time) error {
	raw, err := record.Encode(record.Link{ExpiresAt: exp})
	if err != nil {
		return err
	}
	return putExpiring(tx, bucket, key, raw, exp)
}

// moveLink gives an existing link entry the expiry exp; a missing one (swept, or dropped with
// its session) is not recreated.
func moveLink(tx *bbolt.Tx, bucket string, key []byte, exp time.Time) error {
	if bkt(tx, bucket).Get(key) == nil {
		return nil
	}
	return putLink(tx, bucket, key, exp)
}

// prefixKeys returns copies of the bucket's keys that start with prefix (copies: the caller
// deletes or writes while it works through them, which invalidates cursor-owned slices).
func prefixKeys(tx *bbolt.Tx, bucket string, prefix []byte) [][]byte {
	var keys [][]byte
	c := bkt(tx, bucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}

// checkFamily returns ErrRevoked when the family is revoked or unknown (see record.CheckFamily).
func checkFamily(tx *bbolt.Tx, familyID string) error {
	fam, ok, err := getJSON[record.Family](bkt(tx, bucketFamilies), []byte(familyID))
	if err != nil {
		return err
	}
	return record.CheckFamily(familyID, fam, ok)
}

// extendFamily makes the family record, and the links leading to it, live at least until exp.
func extendFamily(tx *bbolt.Tx, familyID string, exp time.Time) error {
	fam, ok, err := getJSON[record.Family](bkt(tx, bucketFamilies), []byte(familyID))
	if err != nil || !ok || !exp.After(fam.ExpiresAt) {
		return err
	}
	fam.ExpiresAt = exp
	raw, err := record.Encode(fam)
	if err != nil {
		return err
	}
	if err := putExpiring(tx, bucketFamilies, []byte(familyID), raw, fam.ExpiresAt); err != nil {
		return err
	}
	if fam.SessionID != "" {
		if err := moveLink(tx, bucketSessionFamilies, sessionFamilyKey(fam.SessionID, familyID), exp); err != nil {
			return err
		}
	}
	if fam.AuthRequestID != "" {
		if err := moveLink(tx, bucketARTokens, arTokenKey(fam.AuthRequestID, linkFamily, familyID), exp); err != nil {
			return err
		}
	}
	return nil
}

// revokeAccess marks the access token revoked; an unknown or already revoked token is left
// alone.
func revokeAccess(tx *bbolt.Tx, id string) error {
	rec, ok, err := getJSON[record.Access](bkt(tx, bucketAccessTokens), []byte(id))
	if err != nil || !ok || rec.Revoked {
		return err
	}
	rec.Revoked = true
	raw, err := record.Encode(rec)
	if err != nil {
		return err
	}
	return putExpiring(tx, bucketAccessTokens, []byte(id), raw, rec.ExpiresAt)
}

// revokeIssued revokes every token recorded as issued from the auth request (its access tokens
// and the families started with them) and marks the request replayed until codeExpires, so that
// tokens it would still produce — a replay racing the first exchange can land before the
// winner's CreateTokens — are refused.
func revokeIssued(tx *bbolt.Tx, authRequestID string, codeExpires time.Time) error {
	if authRequestID == "" {
		return nil
	}
	prefix := lenPrefix(authRequestID)
	for _, k := range prefixKeys(tx, bucketARTokens, prefix) {
		rest := k[len(prefix):]
		if len(rest) < 2 {
			continue // the replay marker, or a malformed key
		}
		var err error
		switch id := string(rest[1:]); rest[0] {
		case linkAccess:
			err = revokeAccess(tx, id)
		case linkFamily:
			err = revokeFamily(tx, id)
		}
		if err != nil {
			return fmt.Errorf("revoke tokens issued from auth request %q: %w", authRequestID, err)
		}
	}
	marker := arTokenKey(authRequestID, linkReplayed, "")
	old, ok, err := getJSON[record.Link](bkt(tx, bucketARTokens), marker)
	if err != nil || (ok && !codeExpires.After(old.ExpiresAt)) {
		return err
	}
	return putLink(tx, bucketARTokens, marker, codeExpires)
}

// checkNotReplayed fails with ErrRevoked when a code of the auth request has been replayed.
func checkNotReplayed(tx *bbolt.Tx, authRequestID string, now time.Time) error {
	m, ok, err := getJSON[record.Link](bkt(tx, bucketARTokens), arTokenKey(authRequestID, linkReplayed, ""))
	if err != nil {
		return err
	}
	return record.CheckNotReplayed(authRequestID, m, ok, now)
}

// revokeFamily marks the family revoked; an unknown or already revoked family is left alone.
func revokeFamily(tx *bbolt.Tx, familyID string) error {
	fam, ok, err := getJSON[record.Family](bkt(tx, bucketFamilies), []byte(familyID))
	if err != nil || !ok || fam.Revoked {
		return err
	}
	fam.Revoked = true
	raw, err := record.Encode(fam)
	if err != nil {
		return err
	}
	return putExpiring(tx, bucketFamilies, []byte(familyID), raw, fam.ExpiresAt)
}

// CreateTokens stores access and, when refresh is not nil, refresh as the first token of a new
// family, in one (batched) transaction. Taken ids, hashes or family ids give ErrAlreadyExists.
// An access token naming a family other than the one created here must name a live family.
//
// With access.AuthRequestID set, the access token and the new family are linked to the auth
// request (auth_request_tokens, for ConsumeCode's replay revocation) and the request is deleted,
// and an auth request one of whose codes was already replayed gives ErrRevoked. With refresh.SessionID set, the new family
// is linked to the session (session_families, for EndSession).
func (s *Store) CreateTokens(ctx context.Context, access storage.AccessToken, refresh *storage.RefreshToken) (err error) {
	defer wrap(&err, "create tokens (access %q)", access.ID)
	if err := ctx.Err(); err != nil {
		return err
	}
	tok, err := record.NewTokens(access, refresh)
	if err != nil {
		return err
	}
	rawAccess, err := record.Encode(tok.Access)
	if err != nil {
		return err
	}
	var rawRefresh, rawFamily []byte
	if rt := tok.Refresh; rt != nil {
		if rawRefresh, err = record.Encode(*rt); err != nil {
			return err
		}
		if rawFamily, err = record.Encode(tok.Family); err != nil {
			return err
		}
	}
	now := s.now()
	return s.update(ctx, func(tx *bbolt.Tx) error {
		if access.AuthRequestID != "" {
			if err := checkNotReplayed(tx, access.AuthRequestID, now); err != nil {
				return err
			}
			if err := deleteAuthRequest(tx, access.AuthRequestID); err != nil {
				return err
			}
			if err := putLink(tx, bucketARTokens, arTokenKey(access.AuthRequestID, linkAccess, access.ID), access.ExpiresAt); err != nil {
				return err
			}
		}
		if rt, famExp := tok.Refresh, tok.Family.ExpiresAt; rt != nil {
			if err := putNew(tx, bucketFamilies, []byte(rt.FamilyID), rawFamily, famExp, "refresh family"); err != nil {
				return err
			}
			if err := putNew(tx, bucketRefreshTokens, []byte(rt.Hash), rawRefresh, rt.ExpiresAt, "refresh token"); err != nil {
				return err
			}
			if access.AuthRequestID != "" {
				if err := putLink(tx, bucketARTokens, arTokenKey(access.AuthRequestID, linkFamily, rt.FamilyID), famExp); err != nil {
					return err
				}
			}
			if rt.SessionID != "" {
				if err := putLink(tx, bucketSessionFamilies, sessionFamilyKey(rt.SessionID, rt.FamilyID), famExp); err != nil {
					return err
				}
			}
		}
		if familyID := tok.ExistingFamily(); familyID != "" {
			if err := checkFamily(tx, familyID); err != nil {
				return err
			}
			if err := extendFamily(tx, familyID, access.ExpiresAt); err != nil {
				return err
			}
		}
		return putNew(tx, bucketAccessTokens, []byte(access.ID), rawAccess, access.ExpiresAt, "access token")
	})
}

// GetAccessToken returns a live token: ErrNotFound when unknown or expired, ErrRevoked when it
// or its family was revoked.
func (s *Store) GetAccessToken(ctx context.Context, id string) (at storage.AccessToken, err error) {
	defer wrap(&err, "get access token %q", id)
	if err := ctx.Err(); err != nil {
		return at, err
	}
	now := s.now()
	err = s.db.View(func(tx *bbolt.Tx) error {
		rec, ok, err := getJSON[record.Access](bkt(tx, bucketAccessTokens), []byte(id))
		if err != nil {
			return err
		}
		if !ok || record.Expired(rec.ExpiresAt, now) {
			return storage.ErrNotFound
		}
		if rec.Revoked {
			return storage.ErrRevoked
		}
		if rec.FamilyID != "" {
			if err := checkFamily(tx, rec.FamilyID); err != nil {
				return err
			}
		}
		at = rec.AccessToken
		return nil
	})
	if err != nil {
		return storage.AccessToken{}, err
	}
	return at, nil
}

// GetRefreshToken returns the live refresh token with this hash. The common case is a read-only
// transaction; only a rotated token (reuse) takes a write transaction, which revokes the family
// and commits before ErrTokenReused is returned.
func (s *Store) GetRefreshToken(ctx context.Context, hash string) (rt storage.RefreshToken, err error) {
	defer wrap(&err, "get refresh token")
	if err := ctx.Err(); err != nil {
		return rt, err
	}
	now := s.now()
	var reused bool
	err = s.db.View(func(tx *bbolt.Tx) error {
		got, ok, err := getJSON[storage.RefreshToken](bkt(tx, bucketRefreshTokens), []byte(hash))
		if err != nil {
			return err
		}
		if !ok || record.Expired(got.ExpiresAt, now) {
			return storage.ErrNotFound
		}
		if got.RotatedAt != nil {
			reused = true
			rt = got
			return nil
		}
		if err := checkFamily(tx, got.FamilyID); err != nil {
			return err
		}
		rt = got
		return nil
	})
	if err != nil {
		return storage.RefreshToken{}, err
	}
	if reused {
		// A token, once rotated, stays rotated until it is swept, and revoking is idempotent,
		// so the family id read above is still the one to revoke.
		if err := s.update(ctx, func(tx *bbolt.Tx) error { return revokeFamily(tx, rt.FamilyID) }); err != nil {
			return storage.RefreshToken{}, fmt.Errorf("revoke family %q after reuse: %w", rt.FamilyID, err)
		}
		return storage.RefreshToken{}, fmt.Errorf("family %q: %w", rt.FamilyID, storage.ErrTokenReused)
	}
	return rt, nil
}

// RotateRefreshToken exchanges the presented token for next and stores access, in one write
// transaction, so of concurrent rotations of one token exactly one wins. A presented token that was already rotated makes the transaction
// revoke the family and commit; ErrTokenReused is returned after the commit, because returning
// it from inside would roll the revocation back.
func (s *Store) RotateRefreshToken(ctx context.Context, presentedHash string, next storage.RefreshToken, access storage.AccessToken) (err error) {
	defer wrap(&err, "rotate refresh token")
	if err := ctx.Err(); err != nil {
		return err
	}
	rot, err := record.NewRotation(next, access)
	if err != nil {
		return err
	}
	rawNext, err := record.Encode(rot.Next)
	if err != nil {
		return err
	}
	rawAccess, err := record.Encode(rot.Access)
	if err != nil {
		return err
	}
	now := s.now()
	var reusedFamily string
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		reusedFamily = ""
		cur, ok, err := getJSON[storage.RefreshToken](bkt(tx, bucketRefreshTokens), []byte(presentedHash))
		if err != nil {
			return err
		}
		if !ok || record.Expired(cur.ExpiresAt, now) {
			return storage.ErrNotFound
		}
		if cur.RotatedAt != nil {
			reusedFamily = cur.FamilyID
			return revokeFamily(tx, cur.FamilyID)
		}
		if err := checkFamily(tx, cur.FamilyID); err != nil {
			return err
		}
		if err := rot.Check(cur); err != nil {
			return err
		}
		rotatedAt := now
		cur.RotatedAt = &rotatedAt
		rawCur, err := record.Encode(cur)
		if err != nil {
			return err
		}
		if err := putExpiring(tx, bucketRefreshTokens, []byte(presentedHash), rawCur, cur.ExpiresAt); err != nil {
			return err
		}
		if err := putNew(tx, bucketRefreshTokens, []byte(next.Hash), rawNext, next.ExpiresAt, "refresh token"); err != nil {
			return err
		}
		if err := putNew(tx, bucketAccessTokens, []byte(access.ID), rawAccess, access.ExpiresAt, "access token"); err != nil {
			return err
		}
		return extendFamily(tx, cur.FamilyID, rot.FamilyExpiry())
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
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error { return revokeAccess(tx, id) })
}

// RevokeRefreshFamily revokes the family with one write; unknown families are not an error.
func (s *Store) RevokeRefreshFamily(ctx context.Context, familyID string) (err error) {
	defer wrap(&err, "revoke refresh family %q", familyID)
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error { return revokeFamily(tx, familyID) })
}

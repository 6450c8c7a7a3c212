package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file holds access tokens, refresh tokens and refresh families.

// accessRecord is the value of the access_tokens bucket: the token plus its own revocation flag
// (revocation through the family lives in the family record). The embedded token's fields are
// flattened, so "expires_at" sits at the top level like in every expiring record.
type accessRecord struct {
	storage.AccessToken
	Revoked bool `json:"revoked,omitempty"`
}

// familyRecord is the value of the refresh_families bucket. Revoking a family is one write here;
// every lookup of a token of the family reads it. ExpiresAt is the latest expiry of any refresh
// or access token issued in the family, so the record outlives all of them.
type familyRecord struct {
	Revoked   bool      `json:"revoked,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// SessionID and AuthRequestID say which links lead to the family (session_families,
	// auth_request_tokens); extendFamily moves their expiry along with the family's.
	SessionID     string `json:"session_id,omitempty"`
	AuthRequestID string `json:"auth_request_id,omitempty"`
}

// linkRecord is the value of the link buckets (auth_request_tokens, session_families): only an
// expiry, so that the links are swept like every other expiring record.
type linkRecord struct {
	ExpiresAt time.Time `json:"expires_at"`
}

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
	raw, err := encode(linkRecord{ExpiresAt: exp})
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

// checkFamily returns ErrRevoked when the family is revoked or unknown. An unknown family means
// its record was swept, which happens only after all its tokens expired: failing closed is
// then both safe and unobservable.
func checkFamily(tx *bbolt.Tx, familyID string) error {
	fam, ok, err := getJSON[familyRecord](bkt(tx, bucketFamilies), []byte(familyID))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("refresh family %q unknown: %w", familyID, storage.ErrRevoked)
	}
	if fam.Revoked {
		return fmt.Errorf("refresh family %q: %w", familyID, storage.ErrRevoked)
	}
	return nil
}

// extendFamily makes the family record, and the links leading to it, live at least until exp.
func extendFamily(tx *bbolt.Tx, familyID string, exp time.Time) error {
	fam, ok, err := getJSON[familyRecord](bkt(tx, bucketFamilies), []byte(familyID))
	if err != nil || !ok || !exp.After(fam.ExpiresAt) {
		return err
	}
	fam.ExpiresAt = exp
	raw, err := encode(fam)
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
	rec, ok, err := getJSON[accessRecord](bkt(tx, bucketAccessTokens), []byte(id))
	if err != nil || !ok || rec.Revoked {
		return err
	}
	rec.Revoked = true
	raw, err := encode(rec)
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
	old, ok, err := getJSON[linkRecord](bkt(tx, bucketARTokens), marker)
	if err != nil || (ok && !codeExpires.After(old.ExpiresAt)) {
		return err
	}
	return putLink(tx, bucketARTokens, marker, codeExpires)
}

// checkNotReplayed fails with ErrRevoked when a code of the auth request has been replayed.
func checkNotReplayed(tx *bbolt.Tx, authRequestID string, now time.Time) error {
	m, ok, err := getJSON[linkRecord](bkt(tx, bucketARTokens), arTokenKey(authRequestID, linkReplayed, ""))
	if err != nil {
		return err
	}
	if ok && !expired(m.ExpiresAt, now) {
		return fmt.Errorf("auth request %q: a code of it was presented again, its tokens are refused: %w", authRequestID, storage.ErrRevoked)
	}
	return nil
}

// revokeFamily marks the family revoked; an unknown or already revoked family is left alone.
func revokeFamily(tx *bbolt.Tx, familyID string) error {
	fam, ok, err := getJSON[familyRecord](bkt(tx, bucketFamilies), []byte(familyID))
	if err != nil || !ok || fam.Revoked {
		return err
	}
	fam.Revoked = true
	raw, err := encode(fam)
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
	if access.ID == "" {
		return errors.New("empty access token id")
	}
	rawAccess, err := encode(accessRecord{AccessToken: access})
	if err != nil {
		return err
	}
	var rawRefresh, rawFamily []byte
	var familyExpires time.Time
	if refresh != nil {
		if refresh.Hash == "" || refresh.FamilyID == "" {
			return errors.New("refresh token without hash or family id")
		}
		rt := *refresh
		rt.RotatedAt = nil // a new family's first token has not been rotated
		if rawRefresh, err = encode(rt); err != nil {
			return err
		}
		fam := familyRecord{ExpiresAt: rt.ExpiresAt, SessionID: rt.SessionID, AuthRequestID: access.AuthRequestID}
		if access.FamilyID == rt.FamilyID && access.ExpiresAt.After(fam.ExpiresAt) {
			fam.ExpiresAt = access.ExpiresAt
		}
		familyExpires = fam.ExpiresAt
		if rawFamily, err = encode(fam); err != nil {
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
		if refresh != nil {
			if err := putNew(tx, bucketFamilies, []byte(refresh.FamilyID), rawFamily, familyExpires, "refresh family"); err != nil {
				return err
			}
			if err := putNew(tx, bucketRefreshTokens, []byte(refresh.Hash), rawRefresh, refresh.ExpiresAt, "refresh token"); err != nil {
				return err
			}
			if access.AuthRequestID != "" {
				if err := putLink(tx, bucketARTokens, arTokenKey(access.AuthRequestID, linkFamily, refresh.FamilyID), familyExpires); err != nil {
					return err
				}
			}
			if refresh.SessionID != "" {
				if err := putLink(tx, bucketSessionFamilies, sessionFamilyKey(refresh.SessionID, refresh.FamilyID), familyExpires); err != nil {
					return err
				}
			}
		}
		if access.FamilyID != "" && (refresh == nil || access.FamilyID != refresh.FamilyID) {
			if err := checkFamily(tx, access.FamilyID); err != nil {
				return err
			}
			if err := extendFamily(tx, access.FamilyID, access.ExpiresAt); err != nil {
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
		rec, ok, err := getJSON[accessRecord](bkt(tx, bucketAccessTokens), []byte(id))
		if err != nil {
			return err
		}
		if !ok || expired(rec.ExpiresAt, now) {
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
		if !ok || expired(got.ExpiresAt, now) {
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
	if next.Hash == "" || access.ID == "" {
		return errors.New("next refresh token without hash, or access token without id")
	}
	next.RotatedAt = nil
	rawNext, err := encode(next)
	if err != nil {
		return err
	}
	rawAccess, err := encode(accessRecord{AccessToken: access})
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
		if !ok || expired(cur.ExpiresAt, now) {
			return storage.ErrNotFound
		}
		if cur.RotatedAt != nil {
			reusedFamily = cur.FamilyID
			return revokeFamily(tx, cur.FamilyID)
		}
		if err := checkFamily(tx, cur.FamilyID); err != nil {
			return err
		}
		if next.FamilyID != cur.FamilyID {
			return fmt.Errorf("next token's family %q is not the presented token's %q: %w", next.FamilyID, cur.FamilyID, storage.ErrConflict)
		}
		if access.FamilyID != "" && access.FamilyID != cur.FamilyID {
			return fmt.Errorf("access token's family %q is not the presented token's %q: %w", access.FamilyID, cur.FamilyID, storage.ErrConflict)
		}
		rotatedAt := now
		cur.RotatedAt = &rotatedAt
		rawCur, err := encode(cur)
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
		famExp := next.ExpiresAt
		if access.FamilyID != "" && access.ExpiresAt.After(famExp) {
			famExp = access.ExpiresAt
		}
		return extendFamily(tx, cur.FamilyID, famExp)
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

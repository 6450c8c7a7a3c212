package bolt

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file holds the records without subtle atomicity: clients, sessions, users, keys and the
// upstream token cache.

// --- clients ---

// CreateClient fails with ErrAlreadyExists when the id is taken.
func (s *Store) CreateClient(ctx context.Context, c storage.Client) (err error) {
	defer wrap(&err, "create client %q", c.ID)
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.ID == "" {
		return errors.New("empty client id")
	}
	raw, err := record.Encode(c)
	if err != nil {
		return err
	}
	defer s.clients.invalidate()
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := bkt(tx, bucketClients)
		if b.Get([]byte(c.ID)) != nil {
			return storage.ErrAlreadyExists
		}
		return b.Put([]byte(c.ID), raw)
	})
}

// PutClient creates or replaces a client.
func (s *Store) PutClient(ctx context.Context, c storage.Client) (err error) {
	defer wrap(&err, "put client %q", c.ID)
	defer s.clients.invalidate()
	return putPlain(s, ctx, bucketClients, c.ID, "client id", c)
}

// GetClient returns ErrNotFound for an unknown id. Clients are served from memory once read.
func (s *Store) GetClient(ctx context.Context, id string) (c storage.Client, err error) {
	defer wrap(&err, "get client %q", id)
	if err := ctx.Err(); err != nil {
		return c, err
	}
	return s.clients.get(id, func() (storage.Client, error) {
		return viewRecord[storage.Client](s, ctx, bucketClients, id, nil)
	})
}

// ListClients returns every client ordered by id (bbolt's key order).
func (s *Store) ListClients(ctx context.Context) (cs []storage.Client, err error) {
	defer wrap(&err, "list clients")
	return viewAll[storage.Client](s, ctx, bucketClients)
}

// DeleteClient fails with ErrNotFound when there is no such client.
func (s *Store) DeleteClient(ctx context.Context, id string) (err error) {
	defer wrap(&err, "delete client %q", id)
	if err := ctx.Err(); err != nil {
		return err
	}
	defer s.clients.invalidate()
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := bkt(tx, bucketClients)
		if b.Get([]byte(id)) == nil {
			return storage.ErrNotFound
		}
		return b.Delete([]byte(id))
	})
}

// cloneClient is a deep copy of c.
func cloneClient(c storage.Client) storage.Client {
	c.RedirectURIs = slices.Clone(c.RedirectURIs)
	c.PostLogoutRedirectURIs = slices.Clone(c.PostLogoutRedirectURIs)
	c.Groups = slices.Clone(c.Groups)
	return c
}

// --- sessions ---

// CreateSession stores a new SSO session; an existing id gives ErrAlreadyExists.
func (s *Store) CreateSession(ctx context.Context, sess storage.Session) (err error) {
	defer wrap(&err, "create session")
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := record.Encode(sess)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return putNew(tx, bucketSessions, []byte(sess.ID), raw, sess.ExpiresAt, "session")
	})
}

// GetSession returns ErrNotFound for unknown or expired sessions.
func (s *Store) GetSession(ctx context.Context, id string) (sess storage.Session, err error) {
	defer wrap(&err, "get session")
	return viewRecord(s, ctx, bucketSessions, id, func(v storage.Session, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// DeleteSession removes the session, revoking nothing; a missing one is not an error. The
// session's family links go with it: nothing can end the session any more.
func (s *Store) DeleteSession(ctx context.Context, id string) (err error) {
	defer wrap(&err, "delete session")
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		if err := dropSessionLinks(tx, id); err != nil {
			return err
		}
		return deleteExpiring(tx, bucketSessions, []byte(id))
	})
}

// --- users ---

// PutUser creates or replaces the user.
func (s *Store) PutUser(ctx context.Context, u storage.User) (err error) {
	defer wrap(&err, "put user %q", u.Subject)
	defer s.users.forget(u.Subject)
	return putPlain(s, ctx, bucketUsers, u.Subject, "subject", u)
}

// GetUser returns ErrNotFound for an unknown subject. The users read most recently are served
// from memory (up to userCacheSize): every token request and userinfo call reads its user.
func (s *Store) GetUser(ctx context.Context, subject string) (u storage.User, err error) {
	defer wrap(&err, "get user %q", subject)
	if err := ctx.Err(); err != nil {
		return u, err
	}
	return s.users.get(subject, func() (storage.User, error) {
		return viewRecord[storage.User](s, ctx, bucketUsers, subject, nil)
	})
}

// userCacheSize bounds the users kept decoded in memory (a few MiB).
const userCacheSize = 4096

// cloneUser is a deep copy of u.
func cloneUser(u storage.User) storage.User {
	u.Departments = slices.Clone(u.Departments)
	for i := range u.Departments {
		u.Departments[i].Path = slices.Clone(u.Departments[i].Path)
	}
	u.Tags = slices.Clone(u.Tags)
	u.Extra = maps.Clone(u.Extra)
	return u
}

// ListUsers returns every user ordered by subject.
func (s *Store) ListUsers(ctx context.Context) (us []storage.User, err error) {
	defer wrap(&err, "list users")
	return viewAll[storage.User](s, ctx, bucketUsers)
}

// --- signing keys ---

// ListKeys returns every key ordered by CreatedAt (then id, so equal times are stable).
func (s *Store) ListKeys(ctx context.Context) (ks []storage.KeyRecord, err error) {
	defer wrap(&err, "list keys")
	if ks, err = viewAll[storage.KeyRecord](s, ctx, bucketKeys); err != nil {
		return nil, err
	}
	// Keys arrive in id order; a stable sort keeps that as the tie-break.
	sort.SliceStable(ks, func(i, j int) bool { return ks[i].CreatedAt.Before(ks[j].CreatedAt) })
	return ks, nil
}

// PutKey creates or replaces a key.
func (s *Store) PutKey(ctx context.Context, k storage.KeyRecord) (err error) {
	defer wrap(&err, "put key %q", k.ID)
	return putPlain(s, ctx, bucketKeys, k.ID, "key id", k)
}

// CreateKey stores k unless its id is taken (ErrAlreadyExists), in one write transaction.
func (s *Store) CreateKey(ctx context.Context, k storage.KeyRecord) (err error) {
	defer wrap(&err, "create key %q", k.ID)
	if err := ctx.Err(); err != nil {
		return err
	}
	if k.ID == "" {
		return errors.New("empty key id")
	}
	raw, err := record.Encode(k)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		b := bkt(tx, bucketKeys)
		if b.Get([]byte(k.ID)) != nil {
			return storage.ErrAlreadyExists
		}
		return b.Put([]byte(k.ID), raw)
	})
}

// --- upstream token cache ---

// GetUpstreamToken returns ErrNotFound when nothing is cached or the token has expired.
func (s *Store) GetUpstreamToken(ctx context.Context, key string) (t storage.UpstreamToken, err error) {
	defer wrap(&err, "get upstream token %q", key)
	return viewRecord(s, ctx, bucketUpstream, key, func(v storage.UpstreamToken, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// PutUpstreamToken creates or replaces the cached token for t.Key.
func (s *Store) PutUpstreamToken(ctx context.Context, t storage.UpstreamToken) (err error) {
	defer wrap(&err, "put upstream token %q", t.Key)
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := record.Encode(t)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return putExpiring(tx, bucketUpstream, []byte(t.Key), raw, t.ExpiresAt)
	})
}

// UseClientAssertion: see storage.Store. The record is a link record (only its expiry), swept
// once the assertion has expired.
func (s *Store) UseClientAssertion(ctx context.Context, id string, expiresAt time.Time) (err error) {
	defer wrap(&err, "use client assertion")
	if id == "" {
		return errors.New("empty assertion id")
	}
	raw, err := record.Encode(record.Link{ExpiresAt: expiresAt})
	if err != nil {
		return err
	}
	now := s.now()
	used := false
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		held, ok, err := getJSON[record.Link](bkt(tx, bucketAssertions), []byte(id))
		if err != nil {
			return err
		}
		if used = ok && !record.Expired(held.ExpiresAt, now); used {
			return nil // an answer, not a failure: the writes grouped with this one commit
		}
		return putExpiring(tx, bucketAssertions, []byte(id), raw, expiresAt)
	})
	if err == nil && used {
		err = storage.ErrAlreadyUsed
	}
	return err
}

// upstreamClaimPrefix keys the refresh claims in the upstream bucket, beside the tokens.
const upstreamClaimPrefix = "claim/"

// ClaimUpstreamRefresh: see storage.Store. The claim is a record of the upstream bucket, swept
// once expired like the tokens.
func (s *Store) ClaimUpstreamRefresh(ctx context.Context, key string, until time.Time) (claimed bool, err error) {
	defer wrap(&err, "claim upstream refresh %q", key)
	raw, err := record.Encode(storage.UpstreamToken{Key: upstreamClaimPrefix + key, ExpiresAt: until})
	if err != nil {
		return false, err
	}
	now := s.now()
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		claimed = false
		held, ok, err := getJSON[storage.UpstreamToken](bkt(tx, bucketUpstream), []byte(upstreamClaimPrefix+key))
		if err != nil {
			return err
		}
		if ok && !record.Expired(held.ExpiresAt, now) {
			return nil
		}
		claimed = true
		return putExpiring(tx, bucketUpstream, []byte(upstreamClaimPrefix+key), raw, until)
	})
	return claimed, err
}

// DeleteUpstreamToken forgets the cached token; a missing one is not an error.
func (s *Store) DeleteUpstreamToken(ctx context.Context, key string) (err error) {
	defer wrap(&err, "delete upstream token %q", key)
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return deleteExpiring(tx, bucketUpstream, []byte(key))
	})
}

// AddSessionClient appends clientID to the live session's Clients unless it is there already.
// The read-modify-write runs inside one write transaction, so concurrent additions are
// serialised and none is lost.
func (s *Store) AddSessionClient(ctx context.Context, sessionID, clientID string) (err error) {
	defer wrap(&err, "add client %q to session", clientID)
	if err := ctx.Err(); err != nil {
		return err
	}
	if clientID == "" {
		return errors.New("empty client id")
	}
	now := s.now()
	return s.update(ctx, func(tx *bbolt.Tx) error { return addSessionClient(tx, sessionID, clientID, now) })
}

// addSessionClient is AddSessionClient inside tx.
func addSessionClient(tx *bbolt.Tx, sessionID, clientID string, now time.Time) error {
	sess, ok, err := getJSON[storage.Session](bkt(tx, bucketSessions), []byte(sessionID))
	if err != nil {
		return err
	}
	if !ok || record.Expired(sess.ExpiresAt, now) {
		return storage.ErrNotFound
	}
	if !record.AddClient(&sess, clientID) {
		return nil
	}
	raw, err := record.Encode(sess)
	if err != nil {
		return err
	}
	return putExpiring(tx, bucketSessions, []byte(sessionID), raw, sess.ExpiresAt)
}

// EndSession deletes the live session and, in the same write transaction, revokes every refresh
// family linked to it (session_families) and drops those links. Revoking a family is what kills
// its access tokens and rotated descendants too.
func (s *Store) EndSession(ctx context.Context, id string) (sess storage.Session, err error) {
	defer wrap(&err, "end session")
	if err := ctx.Err(); err != nil {
		return sess, err
	}
	now := s.now()
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		got, ok, err := getJSON[storage.Session](bkt(tx, bucketSessions), []byte(id))
		if err != nil {
			return err
		}
		if !ok || record.Expired(got.ExpiresAt, now) {
			return storage.ErrNotFound
		}
		prefix := lenPrefix(id)
		for _, k := range prefixKeys(tx, bucketSessionFamilies, prefix) {
			familyID := string(k[len(prefix):])
			if err := revokeFamily(tx, familyID); err != nil {
				return fmt.Errorf("revoke refresh family %q: %w", familyID, err)
			}
		}
		if err := dropSessionLinks(tx, id); err != nil {
			return err
		}
		if err := deleteExpiring(tx, bucketSessions, []byte(id)); err != nil {
			return err
		}
		sess = got
		return nil
	})
	if err != nil {
		return storage.Session{}, err
	}
	return sess, nil
}

// dropSessionLinks removes the session's session_families entries (and their index entries).
func dropSessionLinks(tx *bbolt.Tx, sessionID string) error {
	for _, k := range prefixKeys(tx, bucketSessionFamilies, lenPrefix(sessionID)) {
		if err := deleteExpiring(tx, bucketSessionFamilies, k); err != nil {
			return err
		}
	}
	return nil
}

// putPlain creates or replaces a record without expiry at key.
func putPlain(s *Store, ctx context.Context, bucket, key, what string, v any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if key == "" {
		return errors.New("empty " + what)
	}
	raw, err := record.Encode(v)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error { return bkt(tx, bucket).Put([]byte(key), raw) })
}

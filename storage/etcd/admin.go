package etcd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file holds clients, sessions, users, keys, the upstream token cache, and the operator
// operations RevokeUserTokens and Stats.

// --- clients ---

// CreateClient fails with ErrAlreadyExists when the id is taken.
func (s *Store) CreateClient(ctx context.Context, c storage.Client) (err error) {
	defer wrap(&err, "create client %q", c.ID)
	return s.create(ctx, kindClients, c.ID, c, time.Time{}, "client")
}

// PutClient creates or replaces a client.
func (s *Store) PutClient(ctx context.Context, c storage.Client) (err error) {
	defer wrap(&err, "put client %q", c.ID)
	return s.putPlain(ctx, kindClients, c.ID, "client id", c)
}

// GetClient returns ErrNotFound for an unknown id.
func (s *Store) GetClient(ctx context.Context, id string) (c storage.Client, err error) {
	defer wrap(&err, "get client %q", id)
	return viewRecord[storage.Client](s, ctx, kindClients, id, nil)
}

// ListClients returns every client ordered by id (etcd's key order).
func (s *Store) ListClients(ctx context.Context) (cs []storage.Client, err error) {
	defer wrap(&err, "list clients")
	return viewAll[storage.Client](s, ctx, kindClients)
}

// DeleteClient fails with ErrNotFound when there is no such client.
func (s *Store) DeleteClient(ctx context.Context, id string) (err error) {
	defer wrap(&err, "delete client %q", id)
	if err := s.usable(ctx); err != nil {
		return err
	}
	if id == "" {
		return storage.ErrNotFound
	}
	rctx, cancel := s.rctx(ctx)
	defer cancel()
	resp, err := s.cli.Delete(rctx, s.key(kindClients, id))
	if err != nil {
		return err
	}
	if resp.Deleted == 0 {
		return storage.ErrNotFound
	}
	return nil
}

// putPlain creates or replaces a record without expiry with one Put.
func (s *Store) putPlain(ctx context.Context, kind, id, what string, v any) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	if id == "" {
		return errors.New("empty " + what)
	}
	raw, err := record.Encode(v)
	if err != nil {
		return err
	}
	rctx, cancel := s.rctx(ctx)
	defer cancel()
	_, err = s.cli.Put(rctx, s.key(kind, id), string(raw))
	return err
}

// --- sessions ---

// CreateSession stores a new SSO session; an existing id gives ErrAlreadyExists.
func (s *Store) CreateSession(ctx context.Context, sess storage.Session) (err error) {
	defer wrap(&err, "create session")
	return s.create(ctx, kindSessions, sess.ID, sess, sess.ExpiresAt, "session")
}

// GetSession returns ErrNotFound for unknown or expired sessions.
func (s *Store) GetSession(ctx context.Context, id string) (sess storage.Session, err error) {
	defer wrap(&err, "get session")
	return viewRecord(s, ctx, kindSessions, id, func(v storage.Session, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// DeleteSession removes the session, revoking nothing; a missing one is not an error. The
// session's family links go with it: nothing can end the session any more.
func (s *Store) DeleteSession(ctx context.Context, id string) (err error) {
	defer wrap(&err, "delete session")
	if id == "" {
		return nil
	}
	return s.update(ctx, func(t *txn) error {
		t.delPrefix(s.key(kindSessionFamilies, sessionFamiliesPrefix(id)))
		return t.deleteExpiring(kindSessions, id)
	})
}

// AddSessionClient appends clientID to the live session's Clients unless it is there already,
// with a compare-and-swap on the session: concurrent additions, on any replicas, are retried on
// the new value and none is lost.
func (s *Store) AddSessionClient(ctx context.Context, sessionID, clientID string) (err error) {
	defer wrap(&err, "add client %q to session", clientID)
	if clientID == "" {
		return errors.New("empty client id")
	}
	if sessionID == "" {
		return storage.ErrNotFound
	}
	return s.update(ctx, func(t *txn) error { return addSessionClient(t, sessionID, clientID, s.now()) })
}

// addSessionClient is AddSessionClient inside t. The session's revision is guarded whether or
// not the client is added: "not found" and "there already" are decisions too.
func addSessionClient(t *txn, sessionID, clientID string, now time.Time) error {
	sess, ok, err := getJSON[storage.Session](t, kindSessions, sessionID)
	if err != nil {
		return err
	}
	if !ok || record.Expired(sess.ExpiresAt, now) {
		return storage.ErrNotFound
	}
	if !record.AddClient(&sess, clientID) {
		return nil
	}
	return t.putExpiring(kindSessions, sessionID, sess, sess.ExpiresAt)
}

// EndSession deletes the live session and, in the same transaction, revokes every refresh family
// linked to it (session_families) and drops those links. The scan of the links is guarded, so a
// family issued under the session meanwhile is revoked too. Revoking a family is what kills its
// access tokens and rotated descendants.
func (s *Store) EndSession(ctx context.Context, id string) (sess storage.Session, err error) {
	defer wrap(&err, "end session")
	if id == "" {
		return sess, storage.ErrNotFound
	}
	err = s.updateSplit(ctx, func(t *txn) error {
		sess = storage.Session{}
		got, ok, err := getJSON[storage.Session](t, kindSessions, id)
		if err != nil {
			return err
		}
		if !ok || record.Expired(got.ExpiresAt, s.now()) {
			return storage.ErrNotFound
		}
		prefix := s.key(kindSessionFamilies, sessionFamiliesPrefix(id))
		links, err := t.scan(prefix)
		if err != nil {
			return err
		}
		var families []string
		for _, l := range links {
			familyID := strings.TrimPrefix(l.key, prefix)
			families = append(families, familyID)
			if err := revokeFamily(t, familyID); err != nil {
				return fmt.Errorf("revoke refresh family %q: %w", familyID, err)
			}
		}
		if err := overBudget(t, families, nil); err != nil {
			return err
		}
		t.delPrefix(prefix)
		if err := t.deleteExpiring(kindSessions, id); err != nil {
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

// --- users ---

// PutUser creates or replaces the user.
func (s *Store) PutUser(ctx context.Context, u storage.User) (err error) {
	defer wrap(&err, "put user %q", u.Subject)
	return s.putPlain(ctx, kindUsers, u.Subject, "subject", u)
}

// GetUser returns ErrNotFound for an unknown subject.
func (s *Store) GetUser(ctx context.Context, subject string) (u storage.User, err error) {
	defer wrap(&err, "get user %q", subject)
	return viewRecord[storage.User](s, ctx, kindUsers, subject, nil)
}

// ListUsers returns every user ordered by subject.
func (s *Store) ListUsers(ctx context.Context) (us []storage.User, err error) {
	defer wrap(&err, "list users")
	return viewAll[storage.User](s, ctx, kindUsers)
}

// UpdateUser runs fn on a fresh copy of the user and commits the result with a compare-and-swap
// on the user's revision (or on its absence): concurrent updates, on any replicas, are retried
// on the new value and none is lost. When the user does not exist fn gets exists=false and a
// User whose only field set is Subject, and the user is created if fn returns nil. An error from
// fn is returned unwrapped and nothing is written; changing the Subject gives ErrConflict.
func (s *Store) UpdateUser(ctx context.Context, subject string, fn func(u *storage.User, exists bool) error) (storage.User, error) {
	if subject == "" {
		return storage.User{}, errors.New("storage: update user: empty subject")
	}
	var out storage.User
	var fnErr error
	err := s.update(ctx, func(t *txn) error {
		fnErr = nil
		u, ok, err := getJSON[storage.User](t, kindUsers, subject)
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
		out = u
		return t.putPlain(kindUsers, subject, u)
	})
	if fnErr != nil {
		return storage.User{}, fnErr
	}
	if err != nil {
		return storage.User{}, fmt.Errorf("storage: update user %q: %w", subject, err)
	}
	return out, nil
}

// RevokeUserTokens revokes every refresh family that holds a token issued to subject (a refresh
// token, rotated or not, or an access token issued with the family) and every access token of
// subject issued without a family; access tokens issued with a family die with it. It returns
// how many families it revoked: live families that were not revoked already.
//
// There is no subject index: it scans the refresh and access tokens (each scan at one revision),
// then revokes in transactions of revokeChunk records. So, unlike bolt's, it is not one atomic
// step — a token issued while it runs may be missed, as it would be if issued just after — but
// each family is counted exactly once, by the transaction that revoked it.
func (s *Store) RevokeUserTokens(ctx context.Context, subject string) (n int, err error) {
	defer wrap(&err, "revoke tokens of user %q", subject)
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	if subject == "" {
		return 0, errors.New("empty subject")
	}
	now := s.now()
	user := record.NewUserTokens(subject)
	_, err = s.scan(ctx, s.kindPrefix(kindRefreshTokens), 0, func(key string, raw []byte) error {
		t, err := record.Decode[record.TokenOwner](key, raw)
		if err != nil {
			return err
		}
		user.AddRefresh(t)
		return nil
	})
	if err != nil {
		return 0, err
	}
	accessPrefix := s.kindPrefix(kindAccessTokens)
	_, err = s.scan(ctx, accessPrefix, 0, func(key string, raw []byte) error {
		t, err := record.Decode[record.TokenOwner](key, raw)
		if err != nil {
			return err
		}
		user.AddAccess(strings.TrimPrefix(key, accessPrefix), t, now)
		return nil
	})
	if err != nil {
		return 0, err
	}
	ids := make([]string, 0, len(user.Families))
	for id := range user.Families {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return s.revokeInChunks(ctx, ids, user.Loose)
}

// --- signing keys ---

// ListKeys returns every key ordered by CreatedAt (then id, so equal times are stable).
func (s *Store) ListKeys(ctx context.Context) (ks []storage.KeyRecord, err error) {
	defer wrap(&err, "list keys")
	if ks, err = viewAll[storage.KeyRecord](s, ctx, kindKeys); err != nil {
		return nil, err
	}
	// Keys arrive in id order; a stable sort keeps that as the tie-break.
	sort.SliceStable(ks, func(i, j int) bool { return ks[i].CreatedAt.Before(ks[j].CreatedAt) })
	return ks, nil
}

// PutKey creates or replaces a key with one Put.
func (s *Store) PutKey(ctx context.Context, k storage.KeyRecord) (err error) {
	defer wrap(&err, "put key %q", k.ID)
	return s.putPlain(ctx, kindKeys, k.ID, "key id", k)
}

// CreateKey stores k unless its id is taken (ErrAlreadyExists): one transaction guarded by the
// key's absence (CreateRevision == 0), so exactly one of the replicas racing on an id wins.
func (s *Store) CreateKey(ctx context.Context, k storage.KeyRecord) (err error) {
	defer wrap(&err, "create key %q", k.ID)
	return s.create(ctx, kindKeys, k.ID, k, time.Time{}, "key")
}

// DeleteKey removes a key; a missing one is not an error.
func (s *Store) DeleteKey(ctx context.Context, id string) (err error) {
	defer wrap(&err, "delete key %q", id)
	if err := s.usable(ctx); err != nil {
		return err
	}
	if id == "" {
		return nil
	}
	rctx, cancel := s.rctx(ctx)
	defer cancel()
	_, err = s.cli.Delete(rctx, s.key(kindKeys, id))
	return err
}

// --- upstream token cache ---

// GetUpstreamToken returns ErrNotFound when nothing is cached or the token has expired.
func (s *Store) GetUpstreamToken(ctx context.Context, key string) (t storage.UpstreamToken, err error) {
	defer wrap(&err, "get upstream token %q", key)
	return viewRecord(s, ctx, kindUpstream, key, func(v storage.UpstreamToken, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// PutUpstreamToken creates or replaces the cached token for t.Key: a blind write (the last
// replica to fetch a token wins, which is what a cache wants); the replaced token's index entry
// is left for the sweep, which drops it as stale.
func (s *Store) PutUpstreamToken(ctx context.Context, tok storage.UpstreamToken) (err error) {
	defer wrap(&err, "put upstream token %q", tok.Key)
	return s.update(ctx, func(t *txn) error {
		return t.putExpiring(kindUpstream, tok.Key, tok, tok.ExpiresAt)
	})
}

// UseClientAssertion: see storage.Store. The record is a link record with a lease, written in a
// transaction guarded by the revision read: one use wins.
func (s *Store) UseClientAssertion(ctx context.Context, id string, expiresAt time.Time) (err error) {
	defer wrap(&err, "use client assertion")
	if id == "" {
		return errors.New("empty assertion id")
	}
	used := false
	err = s.update(ctx, func(t *txn) error {
		used = false
		raw, ok, err := t.get(s.key(kindAssertions, id))
		if err != nil {
			return err
		}
		if ok {
			held, err := record.Decode[record.Link](id, raw)
			if err != nil {
				return err
			}
			if used = !record.Expired(held.ExpiresAt, s.now()); used {
				return nil
			}
		}
		return t.putExpiring(kindAssertions, id, record.Link{ExpiresAt: expiresAt}, expiresAt)
	})
	if err == nil && used {
		err = storage.ErrAlreadyUsed
	}
	return err
}

// upstreamClaimPrefix keys the refresh claims among the upstream tokens.
const upstreamClaimPrefix = "claim/"

// ClaimUpstreamRefresh: see storage.Store. The claim is an upstream-token record with a lease,
// written in a transaction guarded by the revision of the claim read: one claimant wins.
func (s *Store) ClaimUpstreamRefresh(ctx context.Context, key string, until time.Time) (claimed bool, err error) {
	defer wrap(&err, "claim upstream refresh %q", key)
	id := upstreamClaimPrefix + key
	err = s.update(ctx, func(t *txn) error {
		claimed = false
		raw, ok, err := t.get(s.key(kindUpstream, id))
		if err != nil {
			return err
		}
		if ok {
			held, err := record.Decode[storage.UpstreamToken](id, raw)
			if err != nil {
				return err
			}
			if !record.Expired(held.ExpiresAt, s.now()) {
				return nil
			}
		}
		claimed = true
		return t.putExpiring(kindUpstream, id, storage.UpstreamToken{Key: id, ExpiresAt: until}, until)
	})
	return claimed, err
}

// DeleteUpstreamToken forgets the cached token; a missing one is not an error.
func (s *Store) DeleteUpstreamToken(ctx context.Context, key string) (err error) {
	defer wrap(&err, "delete upstream token %q", key)
	if key == "" {
		return nil
	}
	return s.update(ctx, func(t *txn) error { return t.deleteExpiring(kindUpstream, key) })
}

// --- stats ---

// Stats counts the live records of each kind by the Store's clock; record.Counts lists the
// counts and says what makes a record live.
//
// Each kind is read by its own scan, at its own revision (clients and users are only counted,
// server-side); the families are read once, before the first count that needs them, by one
// scan. So each count is consistent, but they may come from slightly different moments. The
// cost is one pass over the token kinds, decoding each record.
func (s *Store) Stats(ctx context.Context) (stats map[string]int, err error) {
	defer wrap(&err, "stats")
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	stats = map[string]int{}
	var liveFamilies map[string]bool
	family := func(id string) bool { return liveFamilies[id] }
	for _, c := range record.Counts() {
		if c.Live == nil {
			rctx, cancel := s.rctx(ctx)
			resp, err := s.cli.Get(rctx, s.kindPrefix(c.Kind), countOnly()...)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("count %s: %w", c.Stat, err)
			}
			stats[c.Stat] = int(resp.Count)
			continue
		}
		if liveFamilies == nil {
			live, err := s.liveFamilies(ctx, now)
			if err != nil {
				return nil, fmt.Errorf("read refresh families: %w", err)
			}
			liveFamilies = live
		}
		n := 0
		_, err := s.scan(ctx, s.kindPrefix(c.Kind), 0, func(key string, raw []byte) error {
			ok, err := c.Live(raw, now, family)
			if err != nil {
				return fmt.Errorf("decode record %q: %w", key, err)
			}
			if ok {
				n++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("count %s: %w", c.Stat, err)
		}
		stats[c.Stat] = n
	}
	return stats, nil
}

// liveFamilies reads every refresh family, by one scan, and tells which are live at now. A
// family that does not decode counts as not live, as checkFamily fails closed on it.
func (s *Store) liveFamilies(ctx context.Context, now time.Time) (map[string]bool, error) {
	live := map[string]bool{}
	prefix := s.kindPrefix(kindFamilies)
	_, err := s.scan(ctx, prefix, 0, func(key string, raw []byte) error {
		if fam, err := record.Decode[record.Family](key, raw); err == nil {
			live[strings.TrimPrefix(key, prefix)] = fam.Live(now)
		}
		return nil
	})
	return live, err
}

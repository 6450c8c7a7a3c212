package storagetest

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file covers HashSecret and the records without subtle atomicity: clients, sessions,
// users, signing keys, the upstream token cache, and the store's lifecycle.

func hashCases() []testCase {
	return []testCase{
		{"HashSecret", func(t *testing.T, _ *env) {
			tests := []struct {
				name, in, want string
			}{
				// base64url(SHA-256(value)), no padding.
				{"empty", "", "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"},
				{"abc", "abc", "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"},
			}
			for _, tt := range tests {
				if got := storage.HashSecret(tt.in); got != tt.want {
					t.Errorf("%s: HashSecret(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
				}
				if storage.HashSecret(tt.in) != storage.HashSecret(tt.in) {
					t.Errorf("%s: HashSecret is not deterministic", tt.name)
				}
			}
			seen := map[string]string{}
			for _, in := range []string{"a", "b", "A", "a ", "code-1", "code-2", strings.Repeat("x", 1000)} {
				h := storage.HashSecret(in)
				if prev, dup := seen[h]; dup {
					t.Errorf("HashSecret(%q) == HashSecret(%q)", in, prev)
				}
				seen[h] = in
				if len(h) != 43 || strings.ContainsAny(h, "+/=") {
					t.Errorf("HashSecret(%q) = %q: not unpadded base64url of 32 bytes", in, h)
				}
			}
		}},
	}
}

func clientCases() []testCase {
	return []testCase{
		{"Client/CreateGet", func(t *testing.T, e *env) {
			c := e.client("grafana")
			noErr(t, e.s.CreateClient(e.ctx, c), "CreateClient")
			got, err := e.s.GetClient(e.ctx, "grafana")
			noErr(t, err, "GetClient")
			equal(t, got, c, "GetClient")

			pub := e.client("cli-public")
			pub.SecretHash, pub.Public, pub.IDTokenClaims, pub.Source = "", true, false, storage.SourceConfig
			pub.PostLogoutRedirectURIs = nil
			pub.AuthMethod, pub.JWKS, pub.JWKSURI = "none", "", ""
			pub.BackchannelLogoutURI, pub.BackchannelLogoutSessionRequired = "", false
			noErr(t, e.s.CreateClient(e.ctx, pub), "CreateClient(public)")
			got, err = e.s.GetClient(e.ctx, "cli-public")
			noErr(t, err, "GetClient(public)")
			equal(t, got, pub, "GetClient(public)")
		}},
		{"Client/CreateDuplicate", func(t *testing.T, e *env) {
			c := e.client("dup")
			noErr(t, e.s.CreateClient(e.ctx, c), "CreateClient")
			other := e.client("dup")
			other.Name = "Impostor"
			isErr(t, e.s.CreateClient(e.ctx, other), storage.ErrAlreadyExists, "second CreateClient")
			got, err := e.s.GetClient(e.ctx, "dup")
			noErr(t, err, "GetClient")
			equal(t, got, c, "client after a refused create")
		}},
		{"Client/AuthAndLogoutFields", func(t *testing.T, e *env) {
			// The private_key_jwt and back-channel logout fields round-trip through every write.
			c := e.client("pkjwt")
			if c.AuthMethod == "" || c.JWKS == "" || c.JWKSURI == "" || c.BackchannelLogoutURI == "" || !c.BackchannelLogoutSessionRequired {
				t.Fatalf("builder left a field empty: %+v", c)
			}
			noErr(t, e.s.CreateClient(e.ctx, c), "CreateClient")
			got, err := e.s.GetClient(e.ctx, c.ID)
			noErr(t, err, "GetClient")
			equal(t, got, c, "GetClient after CreateClient")

			c.AuthMethod, c.JWKS = "client_secret_basic", ""
			c.JWKSURI = "https://pkjwt.example/keys"
			c.BackchannelLogoutURI, c.BackchannelLogoutSessionRequired = "https://pkjwt.example/logout?x=1", false
			noErr(t, e.s.PutClient(e.ctx, c), "PutClient")
			got, err = e.s.GetClient(e.ctx, c.ID)
			noErr(t, err, "GetClient")
			equal(t, got, c, "GetClient after PutClient")
			list, err := e.s.ListClients(e.ctx)
			noErr(t, err, "ListClients")
			equal(t, list, []storage.Client{c}, "ListClients")
		}},
		{"Client/GetMissing", func(t *testing.T, e *env) {
			_, err := e.s.GetClient(e.ctx, "nope")
			isErr(t, err, storage.ErrNotFound, "GetClient(unknown)")
		}},
		{"Client/ListOrderedByID", func(t *testing.T, e *env) {
			list, err := e.s.ListClients(e.ctx)
			noErr(t, err, "ListClients(empty)")
			if len(list) != 0 {
				t.Fatalf("ListClients on an empty store = %v", list)
			}
			for _, id := range []string{"zeta", "alpha", "mid", "Alpha", "alpha-2"} {
				noErr(t, e.s.CreateClient(e.ctx, e.client(id)), "CreateClient("+id+")")
			}
			list, err = e.s.ListClients(e.ctx)
			noErr(t, err, "ListClients")
			var ids []string
			for _, c := range list {
				ids = append(ids, c.ID)
			}
			equal(t, ids, []string{"Alpha", "alpha", "alpha-2", "mid", "zeta"}, "ListClients order")
			equal(t, list[1], e.client("alpha"), "listed client")
		}},
		{"Client/PutCreatesAndReplaces", func(t *testing.T, e *env) {
			c := e.client("cfg")
			c.Source = storage.SourceConfig
			noErr(t, e.s.PutClient(e.ctx, c), "PutClient(new)")
			got, err := e.s.GetClient(e.ctx, "cfg")
			noErr(t, err, "GetClient")
			equal(t, got, c, "client after PutClient(new)")

			c.RedirectURIs = []string{"https://new.example/cb"}
			c.Name = "Renamed"
			c.Public, c.SecretHash = true, ""
			c.UpdatedAt = c.UpdatedAt.Add(time.Hour)
			// Replacing must drop what the new version leaves empty, not merge.
			c.AuthMethod, c.JWKS, c.JWKSURI = "client_secret_post", "", ""
			c.BackchannelLogoutURI, c.BackchannelLogoutSessionRequired = "https://cfg.example/bcl-v2", false
			noErr(t, e.s.PutClient(e.ctx, c), "PutClient(replace)")
			got, err = e.s.GetClient(e.ctx, "cfg")
			noErr(t, err, "GetClient")
			equal(t, got, c, "client after PutClient(replace)")
			list, err := e.s.ListClients(e.ctx)
			noErr(t, err, "ListClients")
			equal(t, list, []storage.Client{c}, "ListClients after replace")
		}},
		{"Client/Delete", func(t *testing.T, e *env) {
			noErr(t, e.s.CreateClient(e.ctx, e.client("a")), "CreateClient(a)")
			noErr(t, e.s.CreateClient(e.ctx, e.client("b")), "CreateClient(b)")
			noErr(t, e.s.DeleteClient(e.ctx, "a"), "DeleteClient")
			_, err := e.s.GetClient(e.ctx, "a")
			isErr(t, err, storage.ErrNotFound, "GetClient after delete")
			isErr(t, e.s.DeleteClient(e.ctx, "a"), storage.ErrNotFound, "second DeleteClient")
			isErr(t, e.s.DeleteClient(e.ctx, "never"), storage.ErrNotFound, "DeleteClient(unknown)")
			_, err = e.s.GetClient(e.ctx, "b")
			noErr(t, err, "GetClient(b) after deleting a")
			// The id is free again.
			noErr(t, e.s.CreateClient(e.ctx, e.client("a")), "CreateClient(a) after delete")
		}},
	}
}

func sessionCases() []testCase {
	return []testCase{
		{"Session/CreateGetDelete", func(t *testing.T, e *env) {
			s := e.session("1", 8*time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			got, err := e.s.GetSession(e.ctx, s.ID)
			noErr(t, err, "GetSession")
			equal(t, got, s, "GetSession")
			other := e.session("2", 8*time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, other), "CreateSession(other)")

			noErr(t, e.s.DeleteSession(e.ctx, s.ID), "DeleteSession")
			_, err = e.s.GetSession(e.ctx, s.ID)
			isErr(t, err, storage.ErrNotFound, "GetSession after delete")
			noErr(t, e.s.DeleteSession(e.ctx, s.ID), "second DeleteSession")
			noErr(t, e.s.DeleteSession(e.ctx, "unknown"), "DeleteSession(unknown)")
			_, err = e.s.GetSession(e.ctx, other.ID)
			noErr(t, err, "GetSession(other) after deleting the first")
		}},
		{"Session/AddClient", func(t *testing.T, e *env) {
			s := e.session("1", 8*time.Hour) // Clients: ["rp-1"]
			other := e.session("2", 8*time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			noErr(t, e.s.CreateSession(e.ctx, other), "CreateSession(other)")
			for _, c := range []string{"grafana", "gitea", "grafana", "rp-1", "argo", "gitea"} {
				noErr(t, e.s.AddSessionClient(e.ctx, s.ID, c), "AddSessionClient("+c+")")
			}
			want := s
			want.Clients = []string{"rp-1", "grafana", "gitea", "argo"}
			got, err := e.s.GetSession(e.ctx, s.ID)
			noErr(t, err, "GetSession")
			equal(t, got, want, "session after AddSessionClient: each client once, in order, nothing else changed")
			got, err = e.s.GetSession(e.ctx, other.ID)
			noErr(t, err, "GetSession(other)")
			equal(t, got, other, "other session")

			// A session without clients yet.
			bare := e.session("3", 8*time.Hour)
			bare.Clients = nil
			noErr(t, e.s.CreateSession(e.ctx, bare), "CreateSession(bare)")
			noErr(t, e.s.AddSessionClient(e.ctx, bare.ID, "grafana"), "AddSessionClient(bare)")
			got, err = e.s.GetSession(e.ctx, bare.ID)
			noErr(t, err, "GetSession(bare)")
			equal(t, got.Clients, []string{"grafana"}, "clients of a session that had none")

			// Mutating a returned session must not reach the store.
			got.Clients[0] = "evil"
			got, err = e.s.GetSession(e.ctx, bare.ID)
			noErr(t, err, "GetSession(bare)")
			equal(t, got.Clients, []string{"grafana"}, "clients after mutating a returned copy")
		}},
		{"Session/AddClientUnknownOrExpired", func(t *testing.T, e *env) {
			isErr(t, e.s.AddSessionClient(e.ctx, storage.HashSecret("nope"), "grafana"), storage.ErrNotFound, "AddSessionClient(unknown)")
			_, err := e.s.GetSession(e.ctx, storage.HashSecret("nope"))
			isErr(t, err, storage.ErrNotFound, "GetSession after AddSessionClient(unknown): no session created")
			s := e.session("1", time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			e.clock.Set(s.ExpiresAt)
			isErr(t, e.s.AddSessionClient(e.ctx, s.ID, "grafana"), storage.ErrNotFound, "AddSessionClient at the session's expiry")
			e.clock.Set(s.ExpiresAt.Add(-time.Nanosecond))
			got, err := e.s.GetSession(e.ctx, s.ID)
			noErr(t, err, "GetSession before expiry")
			equal(t, got, s, "session after a refused AddSessionClient")
		}},
		{"Session/AddClientConcurrent", func(t *testing.T, e *env) {
			// Read-modify-write: concurrent additions must not overwrite one another.
			const goroutines = 8
			for round := range raceRounds {
				s := e.session(fmt.Sprintf("race-%d", round), 8*time.Hour)
				s.Clients = nil
				noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
				clients := ids("client", goroutines)
				errs := race(goroutines, func(i int) error {
					if err := e.s.AddSessionClient(e.ctx, s.ID, clients[i]); err != nil {
						return err
					}
					return e.s.AddSessionClient(e.ctx, s.ID, clients[i]) // a duplicate, deduplicated
				})
				for i, err := range errs {
					noErr(t, err, fmt.Sprintf("round %d: AddSessionClient #%d", round, i))
				}
				got, err := e.s.GetSession(e.ctx, s.ID)
				noErr(t, err, "GetSession")
				if len(got.Clients) != goroutines {
					t.Fatalf("round %d: session has clients %v, want each of %v exactly once", round, got.Clients, clients)
				}
				seen := map[string]bool{}
				for _, c := range got.Clients {
					seen[c] = true
				}
				for _, c := range clients {
					if !seen[c] {
						t.Fatalf("round %d: client %s lost; session has %v", round, c, got.Clients)
					}
				}
			}
		}},
		{"Session/Missing", func(t *testing.T, e *env) {
			_, err := e.s.GetSession(e.ctx, storage.HashSecret("nope"))
			isErr(t, err, storage.ErrNotFound, "GetSession(unknown)")
		}},
		{"Session/Expiry", func(t *testing.T, e *env) {
			s := e.session("1", time.Hour)
			noErr(t, e.s.CreateSession(e.ctx, s), "CreateSession")
			e.clock.Set(s.ExpiresAt.Add(-time.Nanosecond))
			_, err := e.s.GetSession(e.ctx, s.ID)
			noErr(t, err, "GetSession 1ns before expiry")
			e.clock.Set(s.ExpiresAt)
			_, err = e.s.GetSession(e.ctx, s.ID)
			isErr(t, err, storage.ErrNotFound, "GetSession at ExpiresAt")
		}},
	}
}

func userCases() []testCase {
	return []testCase{
		{"User/PutGetList", func(t *testing.T, e *env) {
			list, err := e.s.ListUsers(e.ctx)
			noErr(t, err, "ListUsers(empty)")
			if len(list) != 0 {
				t.Fatalf("ListUsers on an empty store = %v", list)
			}
			var want []storage.User
			for _, sub := range []string{"c", "a", "b"} {
				u := e.user(sub)
				noErr(t, e.s.PutUser(e.ctx, u), "PutUser("+sub+")")
				got, err := e.s.GetUser(e.ctx, sub)
				noErr(t, err, "GetUser("+sub+")")
				equal(t, got, u, "GetUser("+sub+")")
			}
			for _, sub := range []string{"a", "b", "c"} {
				want = append(want, e.user(sub))
			}
			list, err = e.s.ListUsers(e.ctx)
			noErr(t, err, "ListUsers")
			equal(t, list, want, "ListUsers ordered by subject")
		}},
		{"User/Replace", func(t *testing.T, e *env) {
			u := e.user("s")
			noErr(t, e.s.PutUser(e.ctx, u), "PutUser")
			u.Name, u.Disabled, u.Departments, u.Extra = "Renamed", true, nil, nil
			u.LastLogin = u.LastLogin.Add(time.Hour)
			noErr(t, e.s.PutUser(e.ctx, u), "PutUser(replace)")
			got, err := e.s.GetUser(e.ctx, "s")
			noErr(t, err, "GetUser")
			equal(t, got, u, "user after replace")
			list, err := e.s.ListUsers(e.ctx)
			noErr(t, err, "ListUsers")
			equal(t, list, []storage.User{u}, "ListUsers after replace")
		}},
		{"User/Missing", func(t *testing.T, e *env) {
			_, err := e.s.GetUser(e.ctx, "nobody")
			isErr(t, err, storage.ErrNotFound, "GetUser(unknown)")
		}},
	}
}

func keyCases() []testCase {
	return []testCase{
		{"Key/PutListOrderedByCreatedAt", func(t *testing.T, e *env) {
			list, err := e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys(empty)")
			if len(list) != 0 {
				t.Fatalf("ListKeys on an empty store = %v", list)
			}
			// Id order (a, b, c) is the reverse of creation order.
			t0 := e.clock.Now()
			keys := []storage.KeyRecord{e.key("b", t0.Add(time.Hour)), e.key("a", t0.Add(2*time.Hour)), e.key("c", t0)}
			for _, k := range keys {
				noErr(t, e.s.PutKey(e.ctx, k), "PutKey("+k.ID+")")
			}
			list, err = e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			equal(t, list, []storage.KeyRecord{keys[2], keys[0], keys[1]}, "ListKeys ordered by CreatedAt")
		}},
		{"Key/Replace", func(t *testing.T, e *env) {
			k := e.key("k1", e.clock.Now())
			noErr(t, e.s.PutKey(e.ctx, k), "PutKey")
			k.NotAfter = e.clock.Now().Add(24 * time.Hour)
			noErr(t, e.s.PutKey(e.ctx, k), "PutKey(retire)")
			list, err := e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			equal(t, list, []storage.KeyRecord{k}, "ListKeys after replace")
		}},
		{"Key/Delete", func(t *testing.T, e *env) {
			t0 := e.clock.Now()
			k1, k2, k3 := e.key("k1", t0), e.key("k2", t0.Add(time.Hour)), e.key("k3", t0.Add(2*time.Hour))
			for _, k := range []storage.KeyRecord{k1, k2, k3} {
				noErr(t, e.s.PutKey(e.ctx, k), "PutKey("+k.ID+")")
			}
			noErr(t, e.s.DeleteKey(e.ctx, "k2"), "DeleteKey")
			list, err := e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			equal(t, list, []storage.KeyRecord{k1, k3}, "ListKeys after DeleteKey")
			noErr(t, e.s.DeleteKey(e.ctx, "k2"), "second DeleteKey")
			noErr(t, e.s.DeleteKey(e.ctx, "never"), "DeleteKey(unknown)")
			list, err = e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			equal(t, list, []storage.KeyRecord{k1, k3}, "ListKeys after deleting missing keys")
			noErr(t, e.s.PutKey(e.ctx, k2), "PutKey(k2) after delete")
			list, err = e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			equal(t, list, []storage.KeyRecord{k1, k2, k3}, "ListKeys after putting the deleted key back")
		}},
		{"Key/CreateOnlyIfAbsent", func(t *testing.T, e *env) {
			k := e.key("k1", e.clock.Now())
			noErr(t, e.s.CreateKey(e.ctx, k), "CreateKey")
			other := e.key("k1", e.clock.Now().Add(time.Hour))
			other.Private = []byte("another key")
			isErr(t, e.s.CreateKey(e.ctx, other), storage.ErrAlreadyExists, "CreateKey(taken id)")
			list, err := e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			equal(t, list, []storage.KeyRecord{k}, "ListKeys after a refused CreateKey")
			// A deleted key's id is free again; PutKey still replaces.
			noErr(t, e.s.DeleteKey(e.ctx, "k1"), "DeleteKey")
			noErr(t, e.s.CreateKey(e.ctx, other), "CreateKey after DeleteKey")
			noErr(t, e.s.PutKey(e.ctx, k), "PutKey over a created key")
			list, err = e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			equal(t, list, []storage.KeyRecord{k}, "ListKeys after PutKey")
		}},
		{"Key/ConcurrentCreateOneWinner", func(t *testing.T, e *env) {
			// Replicas starting together on an empty store race to create one well-known key,
			// each with its own material: exactly one wins, and the store keeps the winner's.
			const goroutines = 16
			for round := range raceRounds {
				id := fmt.Sprintf("sym-%d", round)
				candidates := make([]storage.KeyRecord, goroutines)
				for i := range candidates {
					candidates[i] = e.key(id, e.clock.Now())
					candidates[i].Private = fmt.Appendf(nil, "material of candidate %d", i)
				}
				errs := race(goroutines, func(i int) error { return e.s.CreateKey(e.ctx, candidates[i]) })
				ok, matched, other := countErrs(errs, storage.ErrAlreadyExists)
				if ok != 1 || matched[storage.ErrAlreadyExists] != goroutines-1 || len(other) != 0 {
					t.Fatalf("round %d: %d winners, %d ErrAlreadyExists, other errors %v; want 1, %d, none",
						round, ok, matched[storage.ErrAlreadyExists], other, goroutines-1)
				}
				winner := candidates[slices.IndexFunc(errs, func(err error) bool { return err == nil })]
				list, err := e.s.ListKeys(e.ctx)
				noErr(t, err, "ListKeys")
				if i := slices.IndexFunc(list, func(k storage.KeyRecord) bool { return k.ID == id }); i < 0 {
					t.Fatalf("round %d: no key %s stored", round, id)
				} else {
					equal(t, list[i], winner, "the stored key is the winner's")
				}
			}
		}},
	}
}

func upstreamCases() []testCase {
	const key = "ww0123456789/1000002"
	return []testCase{
		{"ClientAssertion/SingleUse", func(t *testing.T, e *env) {
			for round := range raceRounds {
				id := storage.HashSecret(fmt.Sprintf("issuer\x00jti-%d", round))
				exp := e.clock.Now().Add(5 * time.Minute)
				errs := race(16, func(int) error { return e.s.UseClientAssertion(e.ctx, id, exp) })
				wins := 0
				for i, err := range errs {
					switch {
					case err == nil:
						wins++
					case !errors.Is(err, storage.ErrAlreadyUsed):
						t.Fatalf("round %d: use #%d: %v, want nil or ErrAlreadyUsed", round, i, err)
					}
				}
				if wins != 1 {
					t.Fatalf("round %d: %d uses accepted, want exactly 1", round, wins)
				}
			}
			// Another id is independent; an expired use no longer counts.
			a, b := storage.HashSecret("a"), storage.HashSecret("b")
			noErr(t, e.s.UseClientAssertion(e.ctx, a, e.clock.Now().Add(time.Minute)), "use a")
			noErr(t, e.s.UseClientAssertion(e.ctx, b, e.clock.Now().Add(time.Minute)), "use b")
			isErr(t, e.s.UseClientAssertion(e.ctx, a, e.clock.Now().Add(time.Minute)), storage.ErrAlreadyUsed, "use a again")
			e.clock.Advance(time.Minute)
			noErr(t, e.s.UseClientAssertion(e.ctx, a, e.clock.Now().Add(time.Minute)), "use a after its expiry")
		}},
		{"Upstream/ClaimRefreshOneWinner", func(t *testing.T, e *env) {
			for round := range raceRounds {
				k := fmt.Sprintf("%s#%d", key, round)
				until := e.clock.Now().Add(10 * time.Second)
				type result struct {
					ok  bool
					err error
				}
				results := race(16, func(int) result {
					ok, err := e.s.ClaimUpstreamRefresh(e.ctx, k, until)
					return result{ok, err}
				})
				wins := 0
				for i, r := range results {
					noErr(t, r.err, fmt.Sprintf("round %d: ClaimUpstreamRefresh #%d", round, i))
					if r.ok {
						wins++
					}
				}
				if wins != 1 {
					t.Fatalf("round %d: %d claims won, want exactly 1", round, wins)
				}
			}
			// The claim does not hide the token, and a held claim refuses until it expires.
			tok := e.upstream(key, "tok", time.Hour)
			noErr(t, e.s.PutUpstreamToken(e.ctx, tok), "PutUpstreamToken")
			ok, err := e.s.ClaimUpstreamRefresh(e.ctx, key, e.clock.Now().Add(10*time.Second))
			noErr(t, err, "ClaimUpstreamRefresh")
			if !ok {
				t.Fatal("first claim of a key refused")
			}
			got, err := e.s.GetUpstreamToken(e.ctx, key)
			noErr(t, err, "GetUpstreamToken beside a claim")
			equal(t, got, tok, "token beside a claim")
			e.clock.Advance(9 * time.Second)
			if ok, _ := e.s.ClaimUpstreamRefresh(e.ctx, key, e.clock.Now().Add(10*time.Second)); ok {
				t.Fatal("a held claim was granted again")
			}
			e.clock.Advance(time.Second)
			if ok, err := e.s.ClaimUpstreamRefresh(e.ctx, key, e.clock.Now().Add(10*time.Second)); err != nil || !ok {
				t.Fatalf("claim after the previous one expired: %v, %v; want granted", ok, err)
			}
		}},
		{"Upstream/PutGetDelete", func(t *testing.T, e *env) {
			_, err := e.s.GetUpstreamToken(e.ctx, key)
			isErr(t, err, storage.ErrNotFound, "GetUpstreamToken(empty)")
			tok := e.upstream(key, "wecom-token-1", 2*time.Hour)
			noErr(t, e.s.PutUpstreamToken(e.ctx, tok), "PutUpstreamToken")
			other := e.upstream("ww0123456789/1000003", "wecom-token-other", 2*time.Hour)
			noErr(t, e.s.PutUpstreamToken(e.ctx, other), "PutUpstreamToken(other)")
			got, err := e.s.GetUpstreamToken(e.ctx, key)
			noErr(t, err, "GetUpstreamToken")
			equal(t, got, tok, "GetUpstreamToken")

			noErr(t, e.s.DeleteUpstreamToken(e.ctx, key), "DeleteUpstreamToken")
			_, err = e.s.GetUpstreamToken(e.ctx, key)
			isErr(t, err, storage.ErrNotFound, "GetUpstreamToken after delete")
			noErr(t, e.s.DeleteUpstreamToken(e.ctx, key), "second DeleteUpstreamToken")
			got, err = e.s.GetUpstreamToken(e.ctx, other.Key)
			noErr(t, err, "GetUpstreamToken(other)")
			equal(t, got, other, "other app's token after delete")
		}},
		{"Upstream/Expiry", func(t *testing.T, e *env) {
			tok := e.upstream(key, "wecom-token-1", 2*time.Hour)
			noErr(t, e.s.PutUpstreamToken(e.ctx, tok), "PutUpstreamToken")
			e.clock.Set(tok.ExpiresAt.Add(-time.Nanosecond))
			_, err := e.s.GetUpstreamToken(e.ctx, key)
			noErr(t, err, "GetUpstreamToken 1ns before expiry")
			e.clock.Set(tok.ExpiresAt)
			_, err = e.s.GetUpstreamToken(e.ctx, key)
			isErr(t, err, storage.ErrNotFound, "GetUpstreamToken at ExpiresAt")
		}},
		{"Upstream/ReplaceMovesExpiry", func(t *testing.T, e *env) {
			noErr(t, e.s.PutUpstreamToken(e.ctx, e.upstream(key, "old", time.Hour)), "PutUpstreamToken(old)")
			e.clock.Advance(59 * time.Minute)
			fresh := e.upstream(key, "new", 2*time.Hour)
			noErr(t, e.s.PutUpstreamToken(e.ctx, fresh), "PutUpstreamToken(new)")
			e.clock.Advance(30 * time.Minute) // past the old token's expiry
			_, err := e.s.DeleteExpired(e.ctx)
			noErr(t, err, "DeleteExpired")
			got, err := e.s.GetUpstreamToken(e.ctx, key)
			noErr(t, err, "GetUpstreamToken after the old expiry and a sweep")
			equal(t, got, fresh, "replaced upstream token")
		}},
	}
}

func lifecycleCases() []testCase {
	return []testCase{
		{"Lifecycle/Health", func(t *testing.T, e *env) {
			noErr(t, e.s.Health(e.ctx), "Health")
		}},
		{"Lifecycle/NoAliasing", func(t *testing.T, e *env) {
			// Inputs: mutating what was passed in must not change what is stored.
			c := e.client("c")
			noErr(t, e.s.CreateClient(e.ctx, c), "CreateClient")
			c.RedirectURIs[0] = "https://evil.example/cb"
			got, err := e.s.GetClient(e.ctx, "c")
			noErr(t, err, "GetClient")
			if got.RedirectURIs[0] != "https://c.example/cb" {
				t.Fatalf("stored client aliases the caller's slice: %v", got.RedirectURIs)
			}
			// Outputs: mutating what was returned must not change what a later call sees.
			got.RedirectURIs[0] = "https://evil.example/cb"
			list, err := e.s.ListClients(e.ctx)
			noErr(t, err, "ListClients")
			list[0].RedirectURIs[1] = "https://evil.example/cb2"
			again, err := e.s.GetClient(e.ctx, "c")
			noErr(t, err, "GetClient")
			equal(t, again, e.client("c"), "client after mutating returned copies")

			ar := e.authRequest("ar", 10*time.Minute)
			e.createAuthRequest(t, ar)
			gotAR, err := e.s.GetAuthRequest(e.ctx, "ar")
			noErr(t, err, "GetAuthRequest")
			gotAR.Scopes[0], *gotAR.MaxAge = "evil", 1
			gotAR, err = e.s.GetAuthRequest(e.ctx, "ar")
			noErr(t, err, "GetAuthRequest")
			equal(t, gotAR, ar, "auth request after mutating a returned copy")

			u := e.user("u")
			noErr(t, e.s.PutUser(e.ctx, u), "PutUser")
			u.Departments[0].Name, u.Extra["employee_no"] = "evil", "evil"
			users, err := e.s.ListUsers(e.ctx)
			noErr(t, err, "ListUsers")
			users[0].Departments[1].Path[0], users[0].Tags[0].Name = "evil", "evil"
			gotU, err := e.s.GetUser(e.ctx, "u")
			noErr(t, err, "GetUser")
			equal(t, gotU, e.user("u"), "user after mutating input and returned copies")

			k := e.key("k", e.clock.Now())
			noErr(t, e.s.PutKey(e.ctx, k), "PutKey")
			k.Private[0] = 'X'
			keys, err := e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			keys[0].Private[1] = 'Y'
			keys, err = e.s.ListKeys(e.ctx)
			noErr(t, err, "ListKeys")
			equal(t, keys, []storage.KeyRecord{e.key("k", e.clock.Now())}, "keys after mutating input and returned copies")
		}},
		{"Lifecycle/CloseThenCallsFail", func(t *testing.T, e *env) {
			noErr(t, e.s.CreateClient(e.ctx, e.client("c")), "CreateClient")
			noErr(t, e.s.Close(), "Close")
			calls := []struct {
				name string
				call func() error
			}{
				{"Health", func() error { return e.s.Health(e.ctx) }},
				{"GetClient", func() error { _, err := e.s.GetClient(e.ctx, "c"); return err }},
				{"CreateClient", func() error { return e.s.CreateClient(e.ctx, e.client("d")) }},
				{"CreateAuthRequest", func() error { return e.s.CreateAuthRequest(e.ctx, e.authRequest("ar", time.Minute)) }},
				{"PutUser", func() error { return e.s.PutUser(e.ctx, e.user("u")) }},
				{"AddSessionClient", func() error { return e.s.AddSessionClient(e.ctx, "s", "c") }},
				{"EndSession", func() error { _, err := e.s.EndSession(e.ctx, "s"); return err }},
				{"DeleteExpired", func() error { _, err := e.s.DeleteExpired(e.ctx); return err }},
				{"UpdateUser", func() error {
					_, err := e.s.UpdateUser(e.ctx, "u", func(*storage.User, bool) error { return nil })
					return err
				}},
				{"RevokeUserTokens", func() error { _, err := e.s.RevokeUserTokens(e.ctx, "u"); return err }},
				{"DeleteKey", func() error { return e.s.DeleteKey(e.ctx, "k") }},
				{"Stats", func() error { _, err := e.s.Stats(e.ctx); return err }},
				{"Backup", func() error { _, err := e.s.Backup(e.ctx, io.Discard); return err }},
			}
			for _, c := range calls {
				err := c.call()
				if err == nil {
					t.Errorf("%s after Close succeeded", c.name)
				} else if errors.Is(err, storage.ErrNotFound) {
					t.Errorf("%s after Close: %v; a closed store is not an empty one", c.name, err)
				}
			}
		}},
	}
}

// ids returns n ids "<prefix>-00".."<prefix>-(n-1)".
func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

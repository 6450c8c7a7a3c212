package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/wecom-oidc/wecom-oidc/keys"
	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/bolt"
	"github.com/wecom-oidc/wecom-oidc/upstream"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// BenchmarkClientAuthentication measures the token endpoint's client_secret check against a
// real bbolt store: the client lookup and one SHA-256 (issue 5: under 50 µs).
func BenchmarkClientAuthentication(b *testing.B) {
	store, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	const secret = "0123456789abcdef0123456789abcdef0123456789a"
	ctx := context.Background()
	if err := store.CreateClient(ctx, storage.Client{ID: "app", SecretHash: storage.HashSecret(secret), RedirectURIs: []string{"https://app.example/cb"}}); err != nil {
		b.Fatal(err)
	}
	s := &opStorage{p: &Provider{store: store}}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.AuthorizeClientIDSecret(ctx, "app", secret); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClientAuthenticationParallel is BenchmarkClientAuthentication from many goroutines at
// once, as the token requests of many applications arrive: nothing in the check should serialise
// them, so the figure per check should fall with the cores rather than rise with the goroutines.
func BenchmarkClientAuthenticationParallel(b *testing.B) {
	store, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	const secret = "0123456789abcdef0123456789abcdef0123456789a"
	ctx := context.Background()
	if err := store.CreateClient(ctx, storage.Client{ID: "app", SecretHash: storage.HashSecret(secret), RedirectURIs: []string{"https://app.example/cb"}}); err != nil {
		b.Fatal(err)
	}
	s := &opStorage{p: &Provider{store: store}}
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.AuthorizeClientIDSecret(ctx, "app", secret); err != nil {
				b.Error(err) // b.Fatal may only be called from the benchmark's own goroutine
				return
			}
		}
	})
}

// The benchmarks below run a whole provider as production wires it (cmd/wecom-oidc): a bbolt
// store opened with Options{Timeout: time.Second}, so every commit is fsynced; keys in the store;
// one WeCom upstream, here the simulator; metrics on. Requests go straight to ServeHTTP, without
// a network in between.

const (
	benchIssuer       = "https://sso.example.com"
	benchClientID     = "web"
	benchClientSecret = "web-secret-0123456789abcdef"
	benchRedirect     = "https://rp.example.com/callback"
	benchSubject      = "zhangsan"
)

// benchParallelism is how many goroutines per core the parallel variants run: token requests wait
// on the disk, so a busy server has many more in flight than it has cores.
const benchParallelism = 8

// benchScopes is what the application asks for; with offline_access it also gets a refresh token.
var benchScopes = []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, scopeGroups}

// benchIdentity is zhangsan as the WeCom connector describes him after a login: two departments
// with their paths, a tag and an extattr field.
func benchIdentity() upstream.Identity {
	return upstream.Identity{
		CorpID: "wwsim0000000000001", UserID: benchSubject, Name: "张三", Alias: "San Zhang",
		Email: "zhangsan@corp.example", PersonalEmail: "zhangsan@example.com", Mobile: "+86 13800000001",
		Gender: "male", Avatar: "https://avatar.example.com/zhangsan.png", Address: "北京市海淀区中关村大街1号",
		Position: "工程师", MainDepartment: 3, Status: 1,
		Departments: []upstream.Department{
			{ID: 2, Name: "研发中心", Path: []string{"研发中心"}},
			{ID: 3, Name: "平台组", Path: []string{"研发中心", "平台组"}},
		},
		Tags:   []upstream.Tag{{ID: 1, Name: "管理员"}},
		Extra:  map[string]string{"工号": "E1001"},
		Method: wecom.MethodWeb,
	}
}

// benchProvider is a provider and what the benchmarks reach into.
type benchProvider struct {
	p      *Provider
	store  *bolt.Store
	sim    *wecomsim.Sim
	simURL string
}

// newBenchProvider builds the provider with signing keys of alg, registers the confidential client
// web (ID-token claims on, groups as names then paths) and stores zhangsan as a login leaves him,
// confirmed by WeCom just now so that a refresh does not re-check him upstream.
func newBenchProvider(b *testing.B, alg string) *benchProvider {
	b.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	store, err := bolt.Open(filepath.Join(b.TempDir(), "wecom-oidc.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	sim := wecomsim.New(wecomsim.DefaultSeed())
	simSrv := httptest.NewServer(sim)
	b.Cleanup(simSrv.Close)
	bp := &benchProvider{store: store, sim: sim, simURL: simSrv.URL}

	metrics := NewMetrics(store)
	keySet, err := keys.Open(ctx, KeyStore(store), keys.Config{Algorithm: alg, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	seed := wecomsim.DefaultSeed()
	p, err := New(Config{
		Issuer:  benchIssuer,
		Store:   store,
		Keys:    keySet,
		Metrics: metrics,
		Logger:  quiet,
		Upstreams: []Upstream{{
			ID: "corp", Name: "模拟企业", NameEN: "Sim corp", CorpID: seed.CorpID,
			Connector: bp.connector(b, metrics),
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := p.Close(ctx); err != nil {
			b.Errorf("provider close: %v", err)
		}
	})
	bp.p = p

	now := time.Now()
	if err := store.CreateClient(ctx, storage.Client{
		ID: benchClientID, SecretHash: storage.HashSecret(benchClientSecret), RedirectURIs: []string{benchRedirect},
		IDTokenClaims: true, Groups: []string{GroupsNames, GroupsPaths}, Source: storage.SourceCLI, CreatedAt: now,
	}); err != nil {
		b.Fatal(err)
	}
	u, err := p.claims.user(p.cfg.Upstreams[0], benchIdentity(), storage.User{}, now)
	if err != nil {
		b.Fatal(err)
	}
	u.LastLogin = now
	if err := store.PutUser(ctx, u); err != nil {
		b.Fatal(err)
	}
	return bp
}

// connector is a WeCom connector on the simulator whose token store is the provider's bbolt store,
// as in production. Its HTTP client keeps enough idle connections for every goroutine.
func (bp *benchProvider) connector(b *testing.B, observer wecom.Observer) *wecom.Connector {
	b.Helper()
	seed := wecomsim.DefaultSeed()
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
	b.Cleanup(tr.CloseIdleConnections)
	conn, err := wecom.New(wecom.Config{
		CorpID: seed.CorpID, AgentID: seed.AgentID, Secret: seed.Secret, Scope: wecom.ScopePrivateInfo,
		APIBaseURL: bp.simURL, OAuthBaseURL: bp.simURL, LoginBaseURL: bp.simURL,
		RedirectURL: benchIssuer + "/login/wecom/callback",
		HTTPClient:  &http.Client{Transport: tr, Timeout: 5 * time.Second},
		Tokens:      UpstreamTokens{Store: bp.store},
		Logger:      slog.New(slog.DiscardHandler),
		Observer:    observer,
	})
	if err != nil {
		b.Fatal(err)
	}
	return conn
}

// completedAuthRequest is an auth request as it stands when the login has finished and the
// library is about to issue its code.
func completedAuthRequest(scopes []string) storage.AuthRequest {
	now := time.Now()
	return storage.AuthRequest{
		ID: newID(""), ClientID: benchClientID, RedirectURI: benchRedirect,
		State: newID(""), Nonce: newID(""), Scopes: scopes, ResponseType: string(oidc.ResponseTypeCode),
		CreatedAt: now, ExpiresAt: now.Add(authRequestTTL), BrowserHash: storage.HashSecret(newSecret()),
		Done: true, Subject: benchSubject, AuthTime: now, AMR: []string{wecom.MethodWeb},
		SessionID: storage.HashSecret(newSecret()),
	}
}

// issueCode stores a completed auth request and has the library issue its code
// (op.CreateAuthRequestCode, as the authorize callback does).
func (bp *benchProvider) issueCode(ctx context.Context, scopes []string) (string, error) {
	ar := completedAuthRequest(scopes)
	if err := bp.store.CreateAuthRequest(ctx, ar); err != nil {
		return "", err
	}
	return op.CreateAuthRequestCode(ctx, &authRequest{ar}, &opStorage{p: bp.p}, bp.p.op.Crypto())
}

// mustIssueCodes issues n codes from many goroutines, so their batched commits coalesce and the
// untimed setup stays short.
func (bp *benchProvider) mustIssueCodes(b *testing.B, n int, scopes []string) []string {
	b.Helper()
	codes := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				code, err := bp.issueCode(context.Background(), scopes)
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				codes[i] = code
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	return codes
}

// tokenResponse is the token endpoint's answer.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
}

// token POSTs form to the token endpoint as the client web (client_secret_basic) and checks that
// the answer carries an access token and an ID token, and a refresh token when wantRefresh.
func (bp *benchProvider) token(form url.Values, wantRefresh bool) (tokenResponse, error) {
	r := httptest.NewRequest(http.MethodPost, benchIssuer+"/oauth/token", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.SetBasicAuth(benchClientID, benchClientSecret)
	w := httptest.NewRecorder()
	bp.p.ServeHTTP(w, r)
	var resp tokenResponse
	if w.Code != http.StatusOK {
		return resp, fmt.Errorf("token endpoint (%s): HTTP %d: %s", form.Get("grant_type"), w.Code, w.Body)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		return resp, fmt.Errorf("token endpoint: %w", err)
	}
	if resp.AccessToken == "" || resp.IDToken == "" || resp.TokenType != oidc.BearerToken || (resp.RefreshToken == "") == wantRefresh {
		return resp, fmt.Errorf("token endpoint answered %s", w.Body)
	}
	return resp, nil
}

func (bp *benchProvider) exchangeCode(code string, wantRefresh bool) (tokenResponse, error) {
	return bp.token(url.Values{
		"grant_type": {string(oidc.GrantTypeCode)}, "code": {code}, "redirect_uri": {benchRedirect},
	}, wantRefresh)
}

func (bp *benchProvider) refresh(refreshToken string) (tokenResponse, error) {
	return bp.token(url.Values{
		"grant_type": {string(oidc.GrantTypeRefreshToken)}, "refresh_token": {refreshToken},
	}, true)
}

// runWorkers runs b.N iterations through workers made by newWorker before the timer starts: one
// worker, or benchParallelism goroutines per core with a worker each. b.N rather than b.Loop,
// because some workers draw on values issued beforehand, one per iteration.
func runWorkers(b *testing.B, parallel bool, newWorker func() func() error) {
	b.Helper()
	n := 1
	if parallel {
		n = benchParallelism * runtime.GOMAXPROCS(0) // the goroutines RunParallel starts
	}
	workers := make(chan func() error, n)
	for range n {
		workers <- newWorker()
	}
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		work := <-workers
		for range b.N {
			if err := work(); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(benchParallelism)
	b.RunParallel(func(pb *testing.PB) {
		work := <-workers
		for pb.Next() {
			if err := work(); err != nil {
				b.Error(err) // b.Fatal may only be called from the benchmark's own goroutine
				return
			}
		}
	})
}

// BenchmarkTokenEndpoint measures whole token requests through ServeHTTP: the router and
// interceptors, client authentication, the grant's storage writes (each fsynced) and the ID token
// (RS256, the default key).
//
//   - code: redeeming a fresh code (ConsumeCode, the user check, CreateTokens, DeleteAuthRequest)
//     for an access token and an ID token;
//   - code+offline_access: the same, with the first refresh token of a new family;
//   - refresh: the refresh grant, rotating the token each iteration (GetRefreshToken, the user,
//     RotateRefreshToken); in parallel, each goroutine refreshes a family of its own.
func BenchmarkTokenEndpoint(b *testing.B) {
	ctx := context.Background()
	offline := append(slices.Clone(benchScopes), oidc.ScopeOfflineAccess)
	tests := []struct {
		name string
		// prepare runs before the timer starts, with b.N known; it returns the worker maker.
		prepare func(b *testing.B, bp *benchProvider) func() func() error
	}{
		{"code", func(b *testing.B, bp *benchProvider) func() func() error {
			codes := bp.mustIssueCodes(b, b.N, benchScopes)
			var next atomic.Int64
			return func() func() error {
				return func() error {
					_, err := bp.exchangeCode(codes[next.Add(1)-1], false)
					return err
				}
			}
		}},
		{"code+offline_access", func(b *testing.B, bp *benchProvider) func() func() error {
			codes := bp.mustIssueCodes(b, b.N, offline)
			var next atomic.Int64
			return func() func() error {
				return func() error {
					_, err := bp.exchangeCode(codes[next.Add(1)-1], true)
					return err
				}
			}
		}},
		{"refresh", func(b *testing.B, bp *benchProvider) func() func() error {
			return func() func() error {
				code, err := bp.issueCode(ctx, offline)
				if err != nil {
					b.Fatal(err)
				}
				resp, err := bp.exchangeCode(code, true)
				if err != nil {
					b.Fatal(err)
				}
				current := resp.RefreshToken
				return func() error {
					resp, err := bp.refresh(current)
					if err != nil {
						return err
					}
					current = resp.RefreshToken
					return nil
				}
			}
		}},
	}
	for _, tt := range tests {
		for _, parallel := range []bool{false, true} {
			name := tt.name + "/sequential"
			if parallel {
				name = tt.name + "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				bp := newBenchProvider(b, keys.RS256)
				runWorkers(b, parallel, tt.prepare(b, bp))
			})
		}
	}
}

// BenchmarkCreateIDToken measures minting an ID token exactly as the token endpoint does at a code
// exchange (op.CreateIDToken through our op.Storage adapter): the claims of a user with groups,
// read from the store (the user and the client: two read transactions), at_hash and c_hash, and
// the signature, which is what differs between the algorithms (keys.Config.Algorithm).
func BenchmarkCreateIDToken(b *testing.B) {
	for _, alg := range []string{keys.RS256, keys.ES256, keys.EdDSA} {
		b.Run(alg, func(b *testing.B) {
			ctx := context.Background()
			bp := newBenchProvider(b, alg)
			s := &opStorage{p: bp.p}
			c, err := s.GetClientByClientID(ctx, benchClientID)
			if err != nil {
				b.Fatal(err)
			}
			req := &authRequest{completedAuthRequest(benchScopes)}
			accessToken, err := op.CreateBearerToken(newID(prefixAccessToken), benchSubject, bp.p.op.Crypto())
			if err != nil {
				b.Fatal(err)
			}
			code, err := op.BuildAuthRequestCode(req, bp.p.op.Crypto())
			if err != nil {
				b.Fatal(err)
			}
			var token string
			b.ReportAllocs()
			for b.Loop() {
				token, err = op.CreateIDToken(ctx, bp.p.cfg.Issuer, req, c.IDTokenLifetime(), accessToken, code, s, c)
				if err != nil {
					b.Fatal(err)
				}
			}
			if err := checkIDToken(token, alg, bp.p.cfg.Keys.PublicKeys()); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// checkIDToken verifies the token's signature with the published key it names and checks the
// claims the benchmark means to produce.
func checkIDToken(token, alg string, published []op.Key) error {
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
	if err != nil {
		return fmt.Errorf("ID token: %w", err)
	}
	kid := jws.Signatures[0].Header.KeyID
	i := slices.IndexFunc(published, func(k op.Key) bool { return k.ID() == kid })
	if i < 0 {
		return fmt.Errorf("ID token signed with key %q, which is not published", kid)
	}
	payload, err := jws.Verify(published[i].Key())
	if err != nil {
		return fmt.Errorf("ID token: %w", err)
	}
	var claims struct {
		Subject  string   `json:"sub"`
		Name     string   `json:"name"`
		Groups   []string `json:"groups"`
		AtHash   string   `json:"at_hash"`
		CodeHash string   `json:"c_hash"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return fmt.Errorf("ID token claims: %w", err)
	}
	want := []string{"研发中心", "平台组", "研发中心/平台组"}
	if claims.Subject != benchSubject || claims.Name != "张三" || !slices.Equal(claims.Groups, want) ||
		claims.AtHash == "" || claims.CodeHash == "" {
		return fmt.Errorf("ID token claims %s, want sub, name, groups %q, at_hash and c_hash", payload, want)
	}
	return nil
}

// BenchmarkClaims measures the claims mapper, which runs at every login (user: an upstream
// identity into the stored user, merged with the earlier record) and at every ID token and
// userinfo answer (userinfo: the claims the scopes allow, groups in the client's shapes). The
// typical member has two departments and a tag; the large one 40 departments three levels deep and
// 20 tags, to show how `groups`, which drops duplicates as it goes, grows.
func BenchmarkClaims(b *testing.B) {
	m, err := newClaimsMapper(ClaimsConfig{
		EmailFallback: "{userid}@corp.example",
		DefaultGroups: []string{"staff"},
		Extra:         map[string]string{"employee_id": "extattr.工号", "title": "position"},
	})
	if err != nil {
		b.Fatal(err)
	}
	up := Upstream{ID: "corp", CorpID: "wwsim0000000000001"}
	now := time.Now()
	large := benchIdentity()
	large.Departments, large.Tags = nil, nil
	for i := range 40 {
		name := fmt.Sprintf("部门%02d", i)
		large.Departments = append(large.Departments, upstream.Department{
			ID: int64(100 + i), Name: name, Path: []string{"研发中心", fmt.Sprintf("平台%d", i%4), name},
		})
	}
	for i := range 20 {
		large.Tags = append(large.Tags, upstream.Tag{ID: int64(i + 1), Name: fmt.Sprintf("标签%02d", i)})
	}
	members := []struct {
		name string
		id   upstream.Identity
	}{
		{"typical", benchIdentity()},
		{"large", large},
	}
	scopes := []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopePhone, oidc.ScopeAddress, scopeGroups}
	shapes := []struct {
		name   string
		shapes []string
	}{
		{"names", nil},
		{"paths", []string{GroupsPaths}},
		{"names+paths+tags", []string{GroupsNames, GroupsPaths, GroupsTags}},
	}
	for _, member := range members {
		// prev is the record of an earlier login: the mapper keeps its first-seen time and the
		// contact fields this login did not disclose.
		prev, err := m.user(up, member.id, storage.User{}, now.Add(-24*time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(member.name+"/user", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				u, err := m.user(up, member.id, prev, now)
				if err != nil {
					b.Fatal(err)
				}
				if u.Subject != benchSubject || len(u.Departments) != len(member.id.Departments) {
					b.Fatalf("user %+v", u)
				}
			}
		})
		for _, shape := range shapes {
			b.Run(member.name+"/userinfo/"+shape.name, func(b *testing.B) {
				var info *oidc.UserInfo
				b.ReportAllocs()
				for b.Loop() {
					info = new(oidc.UserInfo)
					m.setUserinfo(info, prev, scopes, shape.shapes)
				}
				groups, _ := info.Claims["groups"].([]string)
				if info.Subject != benchSubject || info.Email == "" || len(groups) < len(member.id.Departments) ||
					groups[len(groups)-1] != "staff" {
					b.Fatalf("userinfo %+v", info)
				}
			})
		}
	}
}

// BenchmarkWeComTokenStore measures WeCom calls (user/get) from many goroutines through a
// connector whose token store is the provider's bbolt store, as production wires it, starting
// with an empty memory cache: the first callers wait for one refresh, which reads the store and,
// when it holds nothing ("fetch"), calls gettoken and writes the token back (an fsynced commit);
// when another process already put a token there ("shared"), it must not call gettoken at all.
// After that every call takes the token from memory, as in upstream/wecom's
// BenchmarkAccessTokenContention.
func BenchmarkWeComTokenStore(b *testing.B) {
	ctx := context.Background()
	tests := []struct {
		name   string
		shared bool
		budget int // gettoken calls the run may make
	}{
		{"fetch", false, 1},
		{"shared", true, 0},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			bp := newBenchProvider(b, keys.EdDSA)
			if tt.shared {
				other := bp.connector(b, nil) // the other process, on the same store
				if _, err := other.GetUser(ctx, benchSubject); err != nil {
					b.Fatal(err)
				}
			}
			conn := bp.connector(b, nil)
			before := bp.sim.Calls("gettoken")
			b.SetParallelism(16)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					u, err := conn.GetUser(ctx, benchSubject)
					if err == nil && u.UserID != benchSubject {
						err = fmt.Errorf("user/get answered %+v", u)
					}
					if err != nil {
						b.Error(err) // b.Fatal may only be called from the benchmark's own goroutine
						return
					}
				}
			})
			b.StopTimer()
			if got := bp.sim.Calls("gettoken") - before; got > tt.budget {
				b.Fatalf("gettoken called %d times, want at most %d", got, tt.budget)
			}
		})
	}
}

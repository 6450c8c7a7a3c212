// Package storagetest is the conformance suite for storage.Store: every backend runs Run from
// its own tests, so they all honour the same contract (errors, expiry by the Store's clock,
// atomic single-use values, refresh-token rotation and reuse detection, sweeping).
//
// Each subtest gets a fresh store from the factory, with a Clock the subtest moves by hand. The
// suite asserts behaviour only through the storage.Store interface: whether DeleteExpired really
// removed a record is checked by moving the clock back to before its expiry.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// Clock is a manual clock, safe for concurrent use. Its times are UTC without a monotonic
// reading, so they survive an encode/decode round trip unchanged.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock reading start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start.UTC().Round(0)}
}

// Now returns the clock's time; pass it as the store's clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d (which may be negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t.UTC().Round(0)
}

// Start is the time every subtest's clock starts at: a fixed instant with a non-zero nanosecond
// part, so a backend that truncates times fails.
func Start() time.Time { return time.Date(2030, time.January, 2, 3, 4, 5, 600, time.UTC) }

// env is what a subtest works with.
type env struct {
	ctx   context.Context
	clock *Clock
	s     storage.Store
	start time.Time
	// openBackup is Run's openBackup: nil when the backend's copies cannot be opened here.
	openBackup func(t *testing.T, path string, now func() time.Time) storage.Store
}

type testCase struct {
	name string
	fn   func(t *testing.T, e *env)
}

// Run runs the whole conformance suite against the stores newStore makes.
//
// newStore returns a new, empty store that uses now as its clock, and registers the store's
// Close with t.Cleanup. The "Lifecycle/CloseThenCallsFail" subtest closes its store itself, so
// that cleanup must tolerate an error from a second Close. Subtests run one after another, so a
// backend on a shared server need not isolate parallel subtests.
//
// openBackup opens, as a store using now as its clock, the copy that Backup wrote to the file at
// path, and registers its Close with t.Cleanup like newStore. It may be nil for a backend whose
// copies are not opened as a store: the Backup subtests then check only what Backup writes, not
// that the copy restores.
func Run(t *testing.T, newStore func(t *testing.T, now func() time.Time) storage.Store,
	openBackup func(t *testing.T, path string, now func() time.Time) storage.Store) {
	var cases []testCase
	cases = append(cases, hashCases()...)
	cases = append(cases, clientCases()...)
	cases = append(cases, authRequestCases()...)
	cases = append(cases, completeCases()...)
	cases = append(cases, codeCases()...)
	cases = append(cases, loginStateCases()...)
	cases = append(cases, crossDeviceCases()...)
	cases = append(cases, tokenCases()...)
	cases = append(cases, sessionCases()...)
	cases = append(cases, revocationCases()...)
	cases = append(cases, userCases()...)
	cases = append(cases, keyCases()...)
	cases = append(cases, upstreamCases()...)
	cases = append(cases, gcCases()...)
	cases = append(cases, lifecycleCases()...)
	cases = append(cases, userUpdateCases()...)
	cases = append(cases, revokeUserCases()...)
	cases = append(cases, statsCases()...)
	cases = append(cases, backupCases()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewClock(Start())
			s := newStore(t, clock.Now)
			if s == nil {
				t.Fatal("factory returned a nil store")
			}
			tc.fn(t, &env{ctx: t.Context(), clock: clock, s: s, start: clock.Now(), openBackup: openBackup})
		})
	}
}

// --- assertions ---

// noErr fails the test now when err is not nil.
func noErr(tb testing.TB, err error, what string) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%s: unexpected error: %v", what, err)
	}
}

// isErr fails the test now unless errors.Is(err, target).
func isErr(tb testing.TB, err, target error, what string) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// equal fails the test now unless got and want are deeply equal.
func equal[T any](tb testing.TB, got, want T, what string) {
	tb.Helper()
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

// race runs f(0..n-1) in n goroutines released together, and returns their results in order.
func race[T any](n int, f func(i int) T) []T {
	out := make([]T, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return out
}

// countErrs tallies errors: nils under nil, the rest by the first target they match, others
// under "other". It reports the unexpected errors themselves for the failure message.
func countErrs(errs []error, targets ...error) (ok int, matched map[error]int, other []error) {
	matched = map[error]int{}
next:
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		for _, target := range targets {
			if errors.Is(err, target) {
				matched[target]++
				continue next
			}
		}
		other = append(other, err)
	}
	return ok, matched, other
}

// --- record builders: every field set, so a backend that drops one fails the round trip ---

func (e *env) client(id string) storage.Client {
	now := e.clock.Now()
	return storage.Client{
		ID:                               id,
		SecretHash:                       storage.HashSecret("secret-" + id),
		Name:                             "Client " + id,
		RedirectURIs:                     []string{"https://" + id + ".example/cb", "http://127.0.0.1:8080/cb"},
		PostLogoutRedirectURIs:           []string{"https://" + id + ".example/bye"},
		Public:                           false,
		IDTokenClaims:                    true,
		AuthMethod:                       "private_key_jwt",
		JWKS:                             `{"keys":[{"kty":"EC","crv":"P-256","kid":"` + id + `","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`,
		JWKSURI:                          "https://" + id + ".example/jwks.json",
		BackchannelLogoutURI:             "https://" + id + ".example/backchannel-logout",
		BackchannelLogoutSessionRequired: true,
		DeviceFlow:                       true,
		Source:                           storage.SourceCLI,
		CreatedAt:                        now,
		UpdatedAt:                        now.Add(time.Second),
	}
}

func (e *env) authRequest(id string, ttl time.Duration) storage.AuthRequest {
	now := e.clock.Now()
	maxAge := int64(300)
	return storage.AuthRequest{
		ID:                  id,
		ClientID:            "client-" + id,
		RedirectURI:         "https://rp.example/cb?x=1&y=%20",
		State:               "state-" + id,
		Nonce:               "nonce-" + id,
		Scopes:              []string{"openid", "profile", "offline_access"},
		ResponseType:        "code",
		ResponseMode:        "query",
		CodeChallenge:       "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		CodeChallengeMethod: "S256",
		Prompt:              []string{"login", "consent"},
		MaxAge:              &maxAge,
		LoginHint:           "zhangsan",
		UILocales:           []string{"zh-CN", "en"},
		HintSubject:         "sub-hint",
		CreatedAt:           now,
		ExpiresAt:           now.Add(ttl),
	}
}

func (e *env) loginState(state, arID string, ttl time.Duration) storage.LoginState {
	return storage.LoginState{
		State:         state,
		AuthRequestID: arID,
		BrowserHash:   storage.HashSecret("browser-" + state),
		ExpiresAt:     e.clock.Now().Add(ttl),
	}
}

// scanLogin builds a pending scan sign-in whose handle is "handle-"+id (the store sees only its
// hash), for the computer's auth request "ar-"+id.
func (e *env) scanLogin(id string, ttl time.Duration) storage.ScanLogin {
	now := e.clock.Now()
	return storage.ScanLogin{
		HandleHash:         storage.HashSecret("handle-" + id),
		AuthRequestID:      "ar-" + id,
		Upstream:           "corp-a",
		DesktopBrowserHash: storage.HashSecret("desktop-" + id),
		Status:             "pending",
		CreatedAt:          now,
		ExpiresAt:          now.Add(ttl),
	}
}

// deviceAuth builds a pending device authorization whose device code is "device-"+id (the store
// sees only its hash), with the user code userCode.
func (e *env) deviceAuth(id, userCode string, ttl time.Duration) storage.DeviceAuthorization {
	now := e.clock.Now()
	return storage.DeviceAuthorization{
		DeviceCodeHash: storage.HashSecret("device-" + id),
		UserCode:       userCode,
		ClientID:       "cli-" + id,
		Scopes:         []string{"openid", "profile", "offline_access"},
		Status:         "pending",
		Interval:       5,
		CreatedAt:      now,
		ExpiresAt:      now.Add(ttl),
	}
}

func (e *env) access(id, family string, ttl time.Duration) storage.AccessToken {
	now := e.clock.Now()
	return storage.AccessToken{
		ID:            "at_" + id,
		ClientID:      "client-1",
		Subject:       "sub-1",
		Audience:      []string{"client-1", "api"},
		Scopes:        []string{"openid", "email"},
		FamilyID:      family,
		AuthRequestID: "ar-" + id,
		CreatedAt:     now,
		ExpiresAt:     now.Add(ttl),
	}
}

// refresh builds a refresh token whose bearer value is value (the store sees only its hash).
func (e *env) refresh(value, family string, ttl time.Duration) storage.RefreshToken {
	now := e.clock.Now()
	return storage.RefreshToken{
		Hash:      storage.HashSecret(value),
		ID:        "rt_" + value,
		FamilyID:  family,
		ClientID:  "client-1",
		Subject:   "sub-1",
		Audience:  []string{"client-1"},
		Scopes:    []string{"openid", "offline_access"},
		AuthTime:  now.Add(-time.Minute),
		AMR:       []string{"wecom", "qr"},
		SessionID: storage.HashSecret("session-" + family),
		CreatedAt: now,
		ExpiresAt: now.Add(ttl),
	}
}

func (e *env) session(id string, ttl time.Duration) storage.Session {
	now := e.clock.Now()
	return storage.Session{
		ID:        storage.HashSecret("cookie-" + id),
		Subject:   "sub-" + id,
		AuthTime:  now.Add(-time.Second),
		AMR:       []string{"wecom"},
		Clients:   []string{"rp-" + id},
		CreatedAt: now,
		ExpiresAt: now.Add(ttl),
	}
}

func (e *env) user(subject string) storage.User {
	now := e.clock.Now()
	return storage.User{
		Subject:        subject,
		CorpID:         "ww0123456789",
		UserID:         "user-" + subject,
		Name:           "张三 " + subject,
		Alias:          "zs",
		Email:          subject + "@corp.example",
		EmailVerified:  true,
		Mobile:         "+86 13800000000",
		Gender:         "female",
		Avatar:         "https://wework.example/avatar/" + subject,
		Address:        "Shenzhen",
		Position:       "Engineer",
		Departments:    []storage.Department{{ID: 1, Name: "HQ", Path: []string{"HQ"}}, {ID: 7, Name: "R&D", Path: []string{"HQ", "R&D"}}},
		MainDepartment: 7,
		Tags:           []storage.Tag{{ID: 3, Name: "on-call"}},
		Upstream:       "corp-a",
		LastChecked:    now,
		Status:         1,
		Extra:          map[string]string{"employee_no": "42"},
		FirstSeen:      now.Add(-24 * time.Hour),
		LastLogin:      now,
	}
}

func (e *env) key(id string, created time.Time) storage.KeyRecord {
	return storage.KeyRecord{
		ID:        id,
		Algorithm: "RS256",
		Private:   []byte("pkcs8-der-of-" + id + "\x00\xff"),
		CreatedAt: created,
		// A key is published for a while before it signs (zero would hide a dropped field).
		ActivatesAt: created.Add(time.Hour),
	}
}

func (e *env) upstream(key, token string, ttl time.Duration) storage.UpstreamToken {
	return storage.UpstreamToken{Key: key, Token: token, ExpiresAt: e.clock.Now().Add(ttl)}
}

// --- common setup steps ---

func (e *env) createAuthRequest(tb testing.TB, ar storage.AuthRequest) {
	tb.Helper()
	noErr(tb, e.s.CreateAuthRequest(e.ctx, ar), fmt.Sprintf("CreateAuthRequest(%q)", ar.ID))
}

// issueCode creates a live auth request id with a code whose bearer value is "code-"+id and
// returns the request and the code's hash.
func (e *env) issueCode(tb testing.TB, id string, arTTL, codeTTL time.Duration) (storage.AuthRequest, string) {
	tb.Helper()
	ar := e.authRequest(id, arTTL)
	e.createAuthRequest(tb, ar)
	hash := storage.HashSecret("code-" + id)
	noErr(tb, e.s.SaveCode(e.ctx, hash, id, e.clock.Now().Add(codeTTL)), "SaveCode")
	return ar, hash
}

// issueFamily stores the first tokens of family: access token "at_<family>-0" (ttl 1h) and
// refresh token value "<family>-0" (ttl 24h).
func (e *env) issueFamily(tb testing.TB, family string) (storage.AccessToken, storage.RefreshToken) {
	tb.Helper()
	at := e.access(family+"-0", family, time.Hour)
	rt := e.refresh(family+"-0", family, 24*time.Hour)
	noErr(tb, e.s.CreateTokens(e.ctx, at, &rt), "CreateTokens("+family+")")
	return at, rt
}

// rotate rotates from into the family's token number n, returning the new refresh and access
// tokens.
func (e *env) rotate(tb testing.TB, from storage.RefreshToken, n int) (storage.RefreshToken, storage.AccessToken, error) {
	tb.Helper()
	next := e.refresh(fmt.Sprintf("%s-%d", from.FamilyID, n), from.FamilyID, 24*time.Hour)
	next.SessionID = from.SessionID // a family stays under the session it was issued under
	at := e.access(fmt.Sprintf("%s-%d", from.FamilyID, n), from.FamilyID, time.Hour)
	at.AuthRequestID = ""
	return next, at, e.s.RotateRefreshToken(e.ctx, from.Hash, next, at)
}

package bolt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// The benchmarks here measure the store's half of the token endpoint: redeeming a code and
// rotating a refresh token, each one write. The store is opened as production opens it
// (cmd/wecom-oidc: Options{Timeout: time.Second}) and every commit is fsynced, so the sequential
// figures (one request at a time, each write waiting for its own commit) are mostly the disk's
// fsync latency, and the parallel ones (many requests in flight, as on a busy server) show how
// well the store shares commits between writers. Run them on the kind of disk the service uses.

// benchParallelism is how many goroutines per core the parallel variants run. Token requests wait
// on the disk, not the CPU, so a busy server has many more of them in flight than it has cores.
const benchParallelism = 8

func openBench(b *testing.B) *Store {
	b.Helper()
	return openTest(b, filepath.Join(b.TempDir(), "wecom-oidc.db"), Options{Timeout: time.Second})
}

// benchAuthRequest is a completed auth request as the OP stores it before issuing its code.
func benchAuthRequest(now time.Time) storage.AuthRequest {
	return storage.AuthRequest{
		ID:                  rand.Text(),
		ClientID:            "web",
		RedirectURI:         "https://rp.example.com/callback",
		State:               rand.Text(),
		Nonce:               rand.Text(),
		Scopes:              []string{"openid", "profile", "email", "groups", "offline_access"},
		ResponseType:        "code",
		CodeChallenge:       "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		CodeChallengeMethod: "S256",
		CreatedAt:           now,
		ExpiresAt:           now.Add(10 * time.Minute),
		BrowserHash:         storage.HashSecret(rand.Text()),
		Done:                true,
		Subject:             "zhangsan",
		AuthTime:            now,
		AMR:                 []string{"wecom_web"},
		SessionID:           storage.HashSecret(rand.Text()),
	}
}

// issueCode stores a completed auth request and a code for it, as the login and the authorize
// callback do, and returns the code's hash.
func issueCode(ctx context.Context, s *Store) (string, error) {
	now := time.Now()
	ar := benchAuthRequest(now)
	if err := s.CreateAuthRequest(ctx, ar); err != nil {
		return "", err
	}
	hash := storage.HashSecret(rand.Text())
	if err := s.SaveCode(ctx, hash, ar.ID, now.Add(2*time.Minute)); err != nil {
		return "", err
	}
	return hash, nil
}

// mustIssueCodes issues n codes from many goroutines, so that their writes share commits and the
// untimed setup stays short.
func mustIssueCodes(b *testing.B, s *Store, n int) []string {
	b.Helper()
	codes := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				hash, err := issueCode(context.Background(), s)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				codes[i] = hash
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	return codes
}

// consume redeems one code and checks that it gave back the request it was issued for.
func consume(ctx context.Context, s *Store, hash string) error {
	ar, err := s.ConsumeCode(ctx, hash)
	if err != nil {
		return err
	}
	if !ar.Done || ar.Subject != "zhangsan" {
		return fmt.Errorf("ConsumeCode returned %+v, want the completed request of zhangsan", ar)
	}
	return nil
}

// runIndexed runs work(i) for i from 0 to b.N-1, from one goroutine or from benchParallelism
// goroutines per core. b.N rather than b.Loop, because work may draw on values issued beforehand,
// one per iteration.
func runIndexed(b *testing.B, parallel bool, work func(i int) error) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for i := range b.N {
			if err := work(i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var next atomic.Int64
	b.SetParallelism(benchParallelism)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() { // exactly b.N iterations in all
			if err := work(int(next.Add(1) - 1)); err != nil {
				b.Error(err) // b.Fatal may only be called from the benchmark's own goroutine
				return
			}
		}
	})
}

// BenchmarkConsumeCode measures redeeming an authorization code (ConsumeCode: one write that reads
// the code and its auth request and marks the code used):
//
//   - consume: the codes are issued before the timer starts, so only the redemption is timed;
//   - consume+unknown: every other iteration presents a code the store never issued and must get
//     ErrNotFound, as a broken or hostile client would (a public client needs no secret to try).
//     Those writes change nothing, so the figure per iteration should not exceed consume's; when
//     it does, failing writes are slowing down the good ones that share their commit;
//   - issue+consume: every storage write of a code's life — the auth request's create, SaveCode,
//     ConsumeCode.
func BenchmarkConsumeCode(b *testing.B) {
	ctx := context.Background()
	unknown := storage.HashSecret("a code this store never issued")
	tests := []struct {
		name string
		// prepare runs before the timer starts, with b.N known, and returns iteration i's work.
		prepare func(b *testing.B, s *Store) func(i int) error
	}{
		{"consume", func(b *testing.B, s *Store) func(int) error {
			codes := mustIssueCodes(b, s, b.N)
			return func(i int) error { return consume(ctx, s, codes[i]) }
		}},
		{"consume+unknown", func(b *testing.B, s *Store) func(int) error {
			codes := mustIssueCodes(b, s, (b.N+1)/2)
			return func(i int) error {
				if i%2 == 0 {
					return consume(ctx, s, codes[i/2])
				}
				if _, err := s.ConsumeCode(ctx, unknown); !errors.Is(err, storage.ErrNotFound) {
					return fmt.Errorf("ConsumeCode(unknown) = %v, want ErrNotFound", err)
				}
				return nil
			}
		}},
		{"issue+consume", func(_ *testing.B, s *Store) func(int) error {
			return func(int) error {
				hash, err := issueCode(ctx, s)
				if err != nil {
					return err
				}
				return consume(ctx, s, hash)
			}
		}},
	}
	for _, tt := range tests {
		for _, mode := range []string{"sequential", "parallel"} {
			b.Run(tt.name+"/"+mode, func(b *testing.B) {
				s := openBench(b)
				runIndexed(b, mode == "parallel", tt.prepare(b, s))
			})
		}
	}
}

// benchFamily is one refresh family and its current (unrotated) token.
type benchFamily struct {
	id, current string
}

// newBenchFamily starts a family as a code exchange with offline_access does (CreateTokens with
// a refresh token).
func newBenchFamily(ctx context.Context, s *Store) (*benchFamily, error) {
	now := time.Now()
	f := &benchFamily{id: "rf_" + rand.Text(), current: storage.HashSecret(rand.Text())}
	rt := storage.RefreshToken{
		Hash: f.current, ID: "rt_" + rand.Text(), FamilyID: f.id, ClientID: "web", Subject: "zhangsan",
		Audience: []string{"web"}, Scopes: []string{"openid", "profile", "email", "groups", "offline_access"},
		AuthTime: now, AMR: []string{"wecom_web"}, SessionID: storage.HashSecret(rand.Text()),
		CreatedAt: now, ExpiresAt: now.Add(30 * 24 * time.Hour),
	}
	at := storage.AccessToken{
		ID: "at_" + rand.Text(), ClientID: "web", Subject: "zhangsan", Audience: rt.Audience, Scopes: rt.Scopes,
		FamilyID: f.id, AuthRequestID: rand.Text(), CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}
	if err := s.CreateTokens(ctx, at, &rt); err != nil {
		return nil, err
	}
	return f, nil
}

// rotate exchanges the family's current token for a new one and a new access token, as the
// refresh grant does.
func (f *benchFamily) rotate(ctx context.Context, s *Store) error {
	now := time.Now()
	next := storage.RefreshToken{
		Hash: storage.HashSecret(rand.Text()), ID: "rt_" + rand.Text(), FamilyID: f.id, ClientID: "web", Subject: "zhangsan",
		Audience: []string{"web"}, Scopes: []string{"openid", "profile", "email", "groups", "offline_access"},
		AuthTime: now, AMR: []string{"wecom_web"}, CreatedAt: now, ExpiresAt: now.Add(30 * 24 * time.Hour),
	}
	at := storage.AccessToken{
		ID: "at_" + rand.Text(), ClientID: "web", Subject: "zhangsan", Audience: next.Audience, Scopes: next.Scopes,
		FamilyID: f.id, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}
	if err := s.RotateRefreshToken(ctx, f.current, next, at); err != nil {
		return err
	}
	f.current = next.Hash
	return nil
}

// BenchmarkRotateRefreshToken measures one refresh-token rotation (RotateRefreshToken: a write
// transaction that re-checks the presented token and its family, marks it rotated, stores its
// successor and a new access token, and extends the family and its links). Sequential rotates one
// family over and over; parallel gives each goroutine a family of its own, as with many clients
// refreshing at once, so the only thing they contend for is the store's writer.
func BenchmarkRotateRefreshToken(b *testing.B) {
	ctx := context.Background()
	b.Run("sequential", func(b *testing.B) {
		s := openBench(b)
		f, err := newBenchFamily(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := f.rotate(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.GetRefreshToken(ctx, f.current); err != nil {
			b.Fatalf("the last successor is not live: %v", err)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := openBench(b)
		// RunParallel starts benchParallelism × GOMAXPROCS goroutines; each takes one family.
		families := make(chan *benchFamily, benchParallelism*runtime.GOMAXPROCS(0))
		for range cap(families) {
			f, err := newBenchFamily(ctx, s)
			if err != nil {
				b.Fatal(err)
			}
			families <- f
		}
		b.SetParallelism(benchParallelism)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			f := <-families
			for pb.Next() {
				if err := f.rotate(ctx, s); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

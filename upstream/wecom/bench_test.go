package wecom_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
)

// tokenParallelism is how many goroutines per core ask for the access token at once
// (b.SetParallelism): 32 on two cores, more logins in flight than a corp's morning rush, and
// enough to show lock contention on the cache or a stampede of refreshes.
const tokenParallelism = 16

// benchConnector is a connector on env's simulator that logs nowhere and keeps an idle connection
// for every goroutine: with http.Transport's default of two idle connections per host, the
// benchmark would measure TCP set-up rather than the token cache.
func benchConnector(b *testing.B, e *env) *wecom.Connector {
	b.Helper()
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
	b.Cleanup(tr.CloseIdleConnections)
	return e.MustConnector(b, func(cfg *wecom.Config) {
		cfg.Logger = slog.New(slog.DiscardHandler)
		cfg.HTTPClient = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	})
}

// BenchmarkAccessTokenContention measures WeCom calls made by many goroutines at once, each of
// which takes the corp access token from the connector's shared cache: a user/get (one API call,
// what a refresh's re-check costs) and a whole web-login callback (auth/getuserinfo, user/get and
// the cached department names). The simulator answers over loopback HTTP, so most of the time is
// the HTTP exchange; what the benchmark guards is that the token costs nothing on top of it and
// that gettoken is called once however many goroutines ask:
//
//   - warm: the token is already in memory;
//   - cold: nothing is cached anywhere, so the first callers race one refresh, which they must
//     share;
//   - shared: another process has fetched the token into the TokenStore, and this connector's
//     memory is empty: it must load it from the store instead of calling gettoken.
//
// The simulator's clock does not move, so a token never nears its expiry during a run.
func BenchmarkAccessTokenContention(b *testing.B) {
	ctx := context.Background()
	calls := []struct {
		name string
		call func(e *env, c *wecom.Connector) error
	}{
		{"user_get", func(_ *env, c *wecom.Connector) error {
			u, err := c.GetUser(ctx, "zhangsan")
			if err != nil {
				return err
			}
			if u.UserID != "zhangsan" || u.Status != wecom.StatusActive {
				return fmt.Errorf("user/get answered %+v, want active zhangsan", u)
			}
			return nil
		}},
		{"callback", func(e *env, c *wecom.Connector) error {
			code := e.sim.Code("zhangsan", false, "")
			id, err := c.HandleCallback(ctx, codeCallback(code, uaBrowser))
			if err != nil {
				return err
			}
			if id.UserID != "zhangsan" || len(id.Departments) != 2 || id.Departments[1].Name != "平台组" {
				return fmt.Errorf("callback gave %+v, want zhangsan in 研发中心 and 平台组", id)
			}
			return nil
		}},
	}
	starts := []struct {
		name string
		// prepare readies the token cache and returns the gettoken calls the run may add.
		prepare func(b *testing.B, e *env, c *wecom.Connector) (budget int)
	}{
		{"warm", func(b *testing.B, e *env, c *wecom.Connector) int {
			if _, err := c.GetUser(ctx, "zhangsan"); err != nil {
				b.Fatal(err)
			}
			return 0
		}},
		{"cold", func(*testing.B, *env, *wecom.Connector) int { return 1 }},
		{"shared", func(b *testing.B, e *env, _ *wecom.Connector) int {
			other := benchConnector(b, e) // the other process, on the same TokenStore
			if _, err := other.GetUser(ctx, "zhangsan"); err != nil {
				b.Fatal(err)
			}
			if e.store.token(e.tokenKey()) == "" {
				b.Fatal("the other connector left no token in the store")
			}
			return 0
		}},
	}
	for _, call := range calls {
		for _, start := range starts {
			b.Run(call.name+"/"+start.name, func(b *testing.B) {
				e := MustEnv(b, nil, nil)
				c := benchConnector(b, e)
				budget := start.prepare(b, e, c)
				before := e.sim.Calls("gettoken")
				b.SetParallelism(tokenParallelism)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := call.call(e, c); err != nil {
							b.Error(err) // b.Fatal may only be called from the benchmark's own goroutine
							return
						}
					}
				})
				b.StopTimer()
				if got := e.sim.Calls("gettoken") - before; got > budget {
					b.Fatalf("%d goroutines made %d gettoken calls, want at most %d", tokenParallelism, got, budget)
				}
			})
		}
	}
}

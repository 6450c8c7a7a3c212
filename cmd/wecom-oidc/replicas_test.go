package main

// The replica test: three `wecom-oidc serve` processes (the real binary, built once) on one etcd
// (a real one, started by the test) behind one issuer, with WeCom simulated by a wecomsim
// server they all call.
//
// The issuer is what a load balancer would answer on: a reverse proxy in the test. It sends
// each request to the replica the test names in the X-Test-Replica header, so the test decides
// which replica serves each step of a flow while every URL — redirects, WeCom's callback, the
// token endpoint — is the issuer's, as it would be behind a real balancer. (Talking to each
// replica's own address with a shared issuer string would work for the back channel, but
// redirects built from the issuer, WeCom's callback above all, would then leave the replica
// the test meant.)
//
// What it shows: replicas started together on an empty prefix agree on their keys (one JWKS,
// one symmetric key: a code minted on one is redeemed on another); a sign-in whose browser steps
// run on replica 1 is exchanged on 2, refreshed on 3, and its access token read on 1; a client
// registered through replica 1's admin socket is usable at once through the others; stopping
// replica 1 (SIGTERM) in the middle of a loop of logins on 2 and 3 fails none of them, and what
// replica 1 wrote (refresh tokens, leases) outlives it; with every replica stopped the CLI works
// on etcd directly: it lists the clients, backs the prefix up and restores it into another.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/internal/etcdtest"
)

func TestReplicasOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and three servers")
	}
	start := time.Now()
	etcd := etcdtest.MustStart(t)
	bin := buildBinary(t)
	h := newReplicaHarness(t, etcd.Endpoint)
	t.Logf("etcd and the binary ready after %s", time.Since(start).Round(time.Millisecond))

	// Three replicas start together on an empty prefix: they race to create the keys.
	for n := 1; n <= 3; n++ {
		h.start(t, bin, n)
	}
	for n := 1; n <= 3; n++ {
		h.replicas[n].waitServing(t)
	}
	t.Logf("three replicas serving after %s", time.Since(start).Round(time.Millisecond))
	h.checkSameKeys(t)

	app := replicaClient{id: "app", secret: h.appSecret}
	t.Run("flow across replicas", func(t *testing.T) {
		code, verifier, nonce := h.mustSignIn(t, app, 1)
		tok := h.mustExchange(t, app, code, verifier, 2)
		h.checkIDToken(t, tok.IDToken, app.id, nonce, 3)
		refreshed := h.mustRefresh(t, app, tok.RefreshToken, 3)
		h.checkIDToken(t, refreshed.IDToken, app.id, "", 1)
		if sub := h.mustUserinfo(t, refreshed.AccessToken, 1); sub != "zhangsan" {
			t.Fatalf("userinfo on replica 1: sub %q", sub)
		}
		// The rotated refresh token is dead on every replica: reuse is refused on replica 2
		// and revokes the family, so the new one fails on replica 1 too.
		if _, err := h.refresh(app, tok.RefreshToken, 2); err == nil {
			t.Fatal("the rotated refresh token refreshed again on replica 2")
		}
		if _, err := h.refresh(app, refreshed.RefreshToken, 1); err == nil {
			t.Fatal("the family survived the reuse of its rotated token")
		}
	})

	t.Run("client registered through one replica", func(t *testing.T) {
		out := h.cli(t, 1, "client", "add", "--id", "late", "--redirect-uri", appRedirect)
		m := clientSecretLine.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("client add printed no secret:\n%s", out)
		}
		late := replicaClient{id: "late", secret: m[1]}
		code, verifier, _ := h.mustSignIn(t, late, 2)
		tok := h.mustExchange(t, late, code, verifier, 3)
		if sub := h.mustUserinfo(t, tok.AccessToken, 2); sub != "zhangsan" {
			t.Fatalf("userinfo for the new client: sub %q", sub)
		}
	})

	t.Run("stop a replica under load", func(t *testing.T) {
		// A family issued through replica 1, refreshed after replica 1 is gone.
		code, verifier, _ := h.mustSignIn(t, app, 1)
		before := h.mustExchange(t, app, code, verifier, 1)

		const workers = 3
		var ok, failed atomic.Int64
		var failures sync.Map
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					browser, back := 2, 3 // browser steps on one of 2 and 3, the token on the other
					if r.IntN(2) == 0 {
						browser, back = 3, 2
					}
					if err := h.login(app, browser, back); err != nil {
						failed.Add(1)
						failures.Store(fmt.Sprintf("worker %d login %d (%d→%d)", w, i, browser, back), err)
						continue
					}
					ok.Add(1)
				}
			})
		}
		waitFor(t, "20 logins on replicas 2 and 3", func() bool { return ok.Load() >= 20 })
		atStop := ok.Load()
		h.replicas[1].stop(t)
		stopped := time.Now()
		waitFor(t, "20 more logins after the stop", func() bool { return ok.Load() >= atStop+20 && time.Since(stopped) > time.Second })
		close(stop)
		wg.Wait()
		failures.Range(func(k, v any) bool { t.Errorf("%s: %v", k, v); return true })
		if failed.Load() > 0 {
			t.Fatalf("%d of %d logins failed", failed.Load(), failed.Load()+ok.Load())
		}
		t.Logf("%d logins, %d of them after replica 1 stopped", ok.Load(), ok.Load()-atStop)

		after := h.mustRefresh(t, app, before.RefreshToken, 3)
		if sub := h.mustUserinfo(t, after.AccessToken, 2); sub != "zhangsan" {
			t.Fatalf("userinfo after replica 1 stopped: sub %q", sub)
		}
	})

	t.Run("CLI on etcd with every replica stopped", func(t *testing.T) {
		h.replicas[2].stop(t)
		h.replicas[3].stop(t)
		if out := h.cli(t, 0, "client", "list"); !strings.Contains(out, "app") || !strings.Contains(out, "late") {
			t.Fatalf("client list on etcd:\n%s", out)
		}
		copyPath := filepath.Join(h.dir, "etcd-backup.jsonl")
		h.cli(t, 0, "backup", "--out", copyPath)
		first, err := os.ReadFile(copyPath)
		if err != nil || !bytes.HasPrefix(first, []byte(`{"format":"wecom-oidc/etcd-backup"`)) {
			t.Fatalf("backup: %.200s (%v)", first, err)
		}
		h.env["WECOM_OIDC_STORAGE__ETCD__PREFIX"] = "/wecom-oidc-restored/"
		if out := h.cli(t, 0, "storage", "restore", "--from", copyPath); !strings.Contains(out, "restored") {
			t.Fatalf("storage restore: %s", out)
		}
		if out := h.cli(t, 0, "client", "list"); !strings.Contains(out, "late") {
			t.Fatalf("client list on the restored prefix:\n%s", out)
		}
		if _, err := h.run(0, "storage", "restore", "--from", copyPath); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("a second restore into the same prefix: %v", err)
		}
	})
	t.Logf("done after %s", time.Since(start).Round(time.Millisecond))
}

package main

// The migration test: a `wecom-oidc serve` process on bolt signs a person in and refreshes once;
// it stops; `storage migrate` moves its database to an empty etcd prefix; a `wecom-oidc serve`
// process on etcd, behind the same issuer, then honours what the first one issued. It reuses the
// replica test's harness (replicaharness_test.go): the simulated WeCom, the balancer standing for
// the issuer, the processes.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/internal/etcdtest"
)

func TestMigrateBoltToEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and two servers")
	}
	start := time.Now()
	etcd := etcdtest.MustStart(t)
	bin := buildBinary(t)
	h := newReplicaHarness(t, etcd.Endpoint)
	etcdConfig := h.config
	dbPath := filepath.Join(h.dir, "data", "wecom-oidc.db")
	h.env["WECOM_OIDC_CONFIG"] = mustBoltConfig(t, etcdConfig, dbPath)
	app := replicaClient{id: "app", secret: h.appSecret}

	// Before: one server on bolt (replica 1). The sign-in leaves a user, a session, keys, the
	// cached WeCom token; the exchange a refresh family, which is rotated once.
	h.start(t, bin, 1)
	h.replicas[1].waitServing(t)
	code, verifier, nonce := h.mustSignIn(t, app, 1)
	first := h.mustExchange(t, app, code, verifier, 1)
	h.checkIDToken(t, first.IDToken, app.id, nonce, 1)
	second := h.mustRefresh(t, app, first.RefreshToken, 1) // first.RefreshToken is now rotated
	kidsBefore := mustKids(t, h, 1)
	t.Logf("signed in and refreshed on bolt after %s", time.Since(start).Round(time.Millisecond))

	h.env["WECOM_OIDC_CONFIG"] = etcdConfig
	if out, err := h.run(0, "storage", "migrate", "--from", dbPath, "--to", "etcd"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("migrate while the bolt server runs: %v\n%s", err, out)
	}
	h.replicas[1].stop(t)

	sumBefore := mustFileSum(t, dbPath)
	out := h.cli(t, 0, "storage", "migrate", "--from", dbPath, "--to", "etcd")
	t.Logf("storage migrate:\n%s", out)
	for kind, moved := range map[string]string{
		"clients": "1", "users": "1", "sessions": "1", "session_families": "1",
		"refresh_families": "1", "refresh_tokens": "2", "access_tokens": "2", "auth_request_tokens": "2",
		// The cached WeCom token, and the refresh claim beside it when the build keeps one.
		"upstream_tokens": `[12]`,
		"keys":            `[2-9]`, // the signing keys and the symmetric key
	} {
		if !regexp.MustCompile(`(?m)^` + kind + ` +` + moved + ` +0$`).MatchString(out) {
			t.Errorf("migrate did not report %s moved of %s", moved, kind)
		}
	}
	if !strings.Contains(out, "live in etcd now:") || !strings.Contains(out, "refresh_tokens 1") {
		t.Errorf("migrate did not report the live counts (one refresh token: the rotated one is not live)")
	}
	if mustFileSum(t, dbPath) != sumBefore {
		t.Error("storage migrate changed the bolt database")
	}
	if out, err := h.run(0, "storage", "migrate", "--from", dbPath, "--to", "etcd"); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("a second migrate into the same prefix: %v\n%s", err, out)
	}

	// After: one server on etcd (replica 2), same issuer.
	h.start(t, bin, 2)
	h.replicas[2].waitServing(t)
	if kidsAfter := mustKids(t, h, 2); !slices.Equal(kidsAfter, kidsBefore) {
		t.Fatalf("JWKS after the migration %v, before %v", kidsAfter, kidsBefore)
	}
	if sub := h.mustUserinfo(t, second.AccessToken, 2); sub != "zhangsan" {
		t.Fatalf("userinfo with the access token issued before the migration: sub %q", sub)
	}
	third := h.mustRefresh(t, app, second.RefreshToken, 2)
	h.checkIDToken(t, third.IDToken, app.id, "", 2)
	if sub := h.mustUserinfo(t, third.AccessToken, 2); sub != "zhangsan" {
		t.Fatalf("userinfo after the refresh on etcd: sub %q", sub)
	}
	// The token rotated on bolt is refused on etcd, and its reuse revokes the family: the
	// token issued on etcd and its access token die with it.
	if _, err := h.refresh(app, first.RefreshToken, 2); err == nil {
		t.Fatal("the refresh token rotated before the migration refreshed after it")
	}
	if _, err := h.refresh(app, third.RefreshToken, 2); err == nil {
		t.Fatal("the family survived the reuse of a token rotated before the migration")
	}
	if _, err := h.userinfo(third.AccessToken, 2); err == nil {
		t.Fatal("an access token of the revoked family still reads userinfo")
	}
	h.replicas[2].stop(t)
	t.Logf("done after %s", time.Since(start).Round(time.Millisecond))
}

// TestMigrateRefusals covers the command line's refusals, which come before any store is opened.
func TestMigrateRefusals(t *testing.T) {
	dir := t.TempDir()
	boltConfig := filepath.Join(dir, "bolt.yaml")
	if err := os.WriteFile(boltConfig, []byte("storage:\n  backend: bolt\n  path: "+filepath.Join(dir, "w.db")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no --from", []string{"--to", "etcd"}, "usage:"},
		{"no --to", []string{"--from", "w.db"}, "usage:"},
		{"to bolt", []string{"--from", "w.db", "--to", "bolt"}, "to etcd only"},
		{"bolt configuration", []string{"--from", "w.db", "--to", "etcd"}, "storage.backend is bolt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"storage", "migrate", "--config", boltConfig}, tt.args...)
			err := run(context.Background(), args, nil, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v: %v, want an error containing %q", args, err, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "w.db")); err == nil {
		t.Error("a refused migrate created the database")
	}
}

// mustBoltConfig writes, beside the harness's etcd configuration, the same configuration with
// storage on bolt at dbPath, and returns its path.
func mustBoltConfig(t *testing.T, etcdConfig, dbPath string) string {
	t.Helper()
	raw, err := os.ReadFile(etcdConfig)
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)\nstorage:\n.*?\n(\S)`)
	if !block.Match(raw) {
		t.Fatalf("no storage block in the harness's configuration:\n%s", raw)
	}
	bolt := block.ReplaceAll(raw, []byte("\nstorage:\n  backend: bolt\n  path: "+dbPath+"\n$1"))
	path := filepath.Join(filepath.Dir(etcdConfig), "bolt.yaml")
	if err := os.WriteFile(path, bolt, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustKids returns the key ids replica n publishes, sorted.
func mustKids(t *testing.T, h *replicaHarness, n int) []string {
	t.Helper()
	set, err := h.jwks(n)
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	slices.Sort(kids)
	if len(kids) == 0 {
		t.Fatalf("replica %d publishes no keys", n)
	}
	return kids
}

func mustFileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(raw)
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"golang.org/x/oauth2"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/bolt"
)

const appRedirect = "https://app.example.com/cb"

// cli runs wecom-oidc commands against the database in dir, as an operator would beside a
// running (or stopped) `dev --data dir`.
type cli struct {
	t      *testing.T
	getenv func(string) string
}

func newCLI(t *testing.T, dir string) cli {
	env := map[string]string{"WECOM_OIDC_STORAGE__PATH": filepath.Join(dir, "wecom-oidc.db")}
	return cli{t: t, getenv: func(k string) string { return env[k] }}
}

// run returns the command's stdout and error.
func (c cli) run(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, c.getenv, &out, &errOut)
	return out.String(), err
}

// must runs the command and fails the test on error.
func (c cli) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("wecom-oidc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

var clientSecretLine = regexp.MustCompile(`client_secret: (\S+)`)

// addClient registers a confidential client redirecting to appRedirect and returns its secret.
func (c cli) addClient(id string) string {
	c.t.Helper()
	out := c.must("client", "add", "--id", id, "--redirect-uri", appRedirect)
	m := clientSecretLine.FindStringSubmatch(out)
	if m == nil {
		c.t.Fatalf("client add printed no secret:\n%s", out)
	}
	return m[1]
}

// newParty is a relying party for a client registered with addClient.
func newParty(t *testing.T, issuer, id, secret string, scopes ...string) rp.RelyingParty {
	t.Helper()
	party, err := rp.NewRelyingPartyOIDC(context.Background(), issuer, id, secret, appRedirect, append([]string{"openid", "profile"}, scopes...))
	if err != nil {
		t.Fatal(err)
	}
	return party
}

var memberLink = regexp.MustCompile(`data-userid="zhangsan" href="([^"]+)"`)

// authorize runs the front channel in a fresh browser, signing in as zhangsan at the simulated
// WeCom, and returns the query the provider sent the browser back to the app with (a code, or an
// error) and the PKCE verifier. It reports failures as errors so that it can run in goroutines.
func authorize(party rp.RelyingParty) (url.Values, string, error) {
	verifier := rand.Text() + rand.Text()
	browser := &http.Client{Timeout: 10 * time.Second}
	browser.Jar, _ = cookiejar.New(nil)
	browser.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == "app.example.com" {
			return http.ErrUseLastResponse
		}
		return nil
	}
	res, err := browser.Get(rp.AuthURL("st", party, rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier))))
	if err != nil {
		return nil, "", err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := memberLink.FindSubmatch(body)
	if m == nil {
		return nil, "", fmt.Errorf("no member link on %s (status %d):\n%s", res.Request.URL, res.StatusCode, body)
	}
	next, err := res.Request.URL.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		return nil, "", err
	}
	if res, err = browser.Get(next.String()); err != nil {
		return nil, "", err
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || loc.Host != "app.example.com" {
		return nil, "", fmt.Errorf("login did not return to the app: status %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	return loc.Query(), verifier, nil
}

// login signs zhangsan in to party and redeems the code.
func login(party rp.RelyingParty) (*oidc.Tokens[*oidc.IDTokenClaims], error) {
	q, verifier, err := authorize(party)
	if err != nil {
		return nil, err
	}
	if q.Get("code") == "" {
		return nil, fmt.Errorf("no code: error=%q (%s)", q.Get("error"), q.Get("error_description"))
	}
	return rp.CodeExchange[*oidc.IDTokenClaims](context.Background(), q.Get("code"), party, rp.WithCodeVerifier(verifier))
}

func mustLogin(t *testing.T, party rp.RelyingParty) *oidc.Tokens[*oidc.IDTokenClaims] {
	t.Helper()
	tokens, err := login(party)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	return tokens
}

// oauthError is the OAuth error code of a failed token request ("" when err is not one).
func oauthError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	var oe *oidc.Error
	if errors.As(err, &oe) {
		return string(oe.ErrorType)
	}
	return ""
}

func refresh(party rp.RelyingParty, token string) (*oidc.Tokens[*oidc.IDTokenClaims], error) {
	return rp.RefreshTokens[*oidc.IDTokenClaims](context.Background(), party, token, "", "")
}

// TestCLIClientWhileServing is the test: a client registered through the CLI while the
// server runs signs in at once; list, show and rotate-secret work through the admin socket, and
// a rotated secret takes effect at the token endpoint at once.
func TestCLIClientWhileServing(t *testing.T) {
	data := t.TempDir()
	d := startDev(t, data, nil)
	c := newCLI(t, data)

	fi, err := os.Lstat(filepath.Join(data, "wecom-oidc.sock"))
	if err != nil {
		t.Fatalf("no admin socket beside the database: %v", err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode = %v, want a socket with 0600", fi.Mode())
	}

	secret := c.addClient("live-app")
	if len(secret) < 43 { // 256 bits in base64url
		t.Fatalf("client secret %q is shorter than 256 bits", secret)
	}
	if strings.Contains(d.stderr.String(), secret) {
		t.Fatal("the new client's secret appears in the server's log")
	}
	party := newParty(t, d.issuer, "live-app", secret, "offline_access")
	tokens := mustLogin(t, party)
	if tokens.IDTokenClaims.Subject != "zhangsan" || tokens.RefreshToken == "" {
		t.Fatalf("sub = %q, refresh token %t", tokens.IDTokenClaims.Subject, tokens.RefreshToken != "")
	}

	out := c.must("client", "list")
	if !strings.Contains(out, "live-app") || !strings.Contains(out, "demo") {
		t.Fatalf("client list while serving:\n%s", out)
	}
	out = c.must("client", "show", "live-app", "--config", "")
	if strings.Contains(out, secret) || strings.Contains(out, storage.HashSecret(secret)) || !strings.Contains(out, appRedirect) {
		t.Fatalf("client show:\n%s", out)
	}
	if _, err := c.run("client", "add", "--id", "live-app", "--redirect-uri", appRedirect); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate add through the socket: %v", err)
	}
	if _, err := c.run("client", "add", "--id", "bad", "--redirect-uri", "javascript:alert(1)"); err == nil {
		t.Fatal("javascript: redirect URI accepted")
	}

	// rotate-secret: the old secret fails at the token endpoint at once, the new one works.
	out = c.must("client", "rotate-secret", "live-app")
	m := clientSecretLine.FindStringSubmatch(out)
	if m == nil || m[1] == secret {
		t.Fatalf("rotate-secret printed no new secret:\n%s", out)
	}
	newSecret := m[1]
	if _, err := refresh(party, tokens.RefreshToken); oauthError(err) != "invalid_client" {
		t.Fatalf("refresh with the old secret after rotate-secret: %v, want invalid_client", err)
	}
	rotated := newParty(t, d.issuer, "live-app", newSecret, "offline_access")
	if _, err := refresh(rotated, tokens.RefreshToken); err != nil {
		t.Fatalf("refresh with the new secret: %v", err)
	}
	if got := mustLogin(t, rotated); got.IDTokenClaims.Subject != "zhangsan" {
		t.Fatalf("login with the new secret: sub %q", got.IDTokenClaims.Subject)
	}
	if strings.Contains(d.stderr.String(), newSecret) {
		t.Fatal("the rotated secret appears in the server's log")
	}

	// Secrets are only rotated where they exist and belong to the CLI.
	for _, tc := range []struct{ id, want string }{
		{"demo", "config file"},
		{"spa", "public"},
		{"missing", `no client "missing"`},
	} {
		if tc.id == "spa" {
			c.must("client", "add", "--id", "spa", "--public", "--redirect-uri", "https://spa.example.com/cb")
		}
		if _, err := c.run("client", "rotate-secret", tc.id); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rotate-secret %s: %v, want an error about %q", tc.id, err, tc.want)
		}
	}

	// remove while serving: the client cannot start a login any more.
	c.must("client", "remove", "live-app")
	if _, _, err := authorize(rotated); err == nil {
		t.Fatal("a removed client still reaches the login page")
	}

	d.shutdown(t)
	if _, err := os.Lstat(filepath.Join(data, "wecom-oidc.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("admin socket left behind after shutdown: %v", err)
	}
}

// TestCLIUsersWhileServing: the person appears after a login; disabling them while the server
// runs kills their refresh token and refuses their next login at once; enabling lets them in
// again without reviving the old token. With the server stopped the same commands work directly.
func TestCLIUsersWhileServing(t *testing.T) {
	data := t.TempDir()
	d := startDev(t, data, nil)
	c := newCLI(t, data)
	party := newParty(t, d.issuer, "users-app", c.addClient("users-app"), "offline_access")
	tokens := mustLogin(t, party)

	out := c.must("users", "list")
	if !regexp.MustCompile(`(?m)^zhangsan\s+张三\s+\S+/wecom\s+active\s+no\s+\d{4}-`).MatchString(out) {
		t.Fatalf("users list:\n%s", out)
	}
	out = c.must("users", "show", "zhangsan")
	for _, want := range []string{"subject:         zhangsan", "name:            张三", "email:           zhangsan@corp.example",
		"研发中心", "平台组", "first seen:", "last login:", "last checked:", "disabled:        no"} {
		if !strings.Contains(out, want) {
			t.Errorf("users show lacks %q:\n%s", want, out)
		}
	}
	if _, err := c.run("users", "show", "nobody"); err == nil || !strings.Contains(err.Error(), `no user "nobody"`) {
		t.Fatalf("users show nobody: %v", err)
	}
	if _, err := c.run("users", "disable", "nobody"); err == nil || !strings.Contains(err.Error(), `no user "nobody"`) {
		t.Fatalf("users disable nobody: %v", err)
	}
	if out, _ := c.run("users", "list"); strings.Contains(out, "nobody") {
		t.Fatal("disabling an unknown subject created a user")
	}

	out = c.must("users", "disable", "zhangsan")
	if !strings.Contains(out, `disabled user "zhangsan"`) || !strings.Contains(out, "revoked 1 refresh token family") {
		t.Fatalf("users disable:\n%s", out)
	}
	if _, err := refresh(party, tokens.RefreshToken); oauthError(err) != "invalid_grant" {
		t.Fatalf("refresh after disable: %v, want invalid_grant", err)
	}
	q, _, err := authorize(party)
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("error") != "access_denied" || q.Get("code") != "" {
		t.Fatalf("login of a disabled user came back with %v, want error=access_denied", q)
	}
	if out := c.must("users", "list"); !regexp.MustCompile(`(?m)^zhangsan\s.*\syes\s`).MatchString(out) {
		t.Fatalf("users list does not show the user disabled:\n%s", out)
	}

	out = c.must("users", "enable", "zhangsan")
	if !strings.Contains(out, `enabled user "zhangsan"`) {
		t.Fatalf("users enable:\n%s", out)
	}
	fresh := mustLogin(t, party)
	if _, err := refresh(party, fresh.RefreshToken); err != nil {
		t.Fatalf("refresh of a token issued after enable: %v", err)
	}
	if _, err := refresh(party, tokens.RefreshToken); oauthError(err) != "invalid_grant" {
		t.Fatalf("the token revoked at disable works again after enable: %v", err)
	}
	d.shutdown(t)

	// Server stopped: the database directly.
	out = c.must("users", "disable", "zhangsan")
	if !strings.Contains(out, `disabled user "zhangsan"`) {
		t.Fatalf("users disable (stopped):\n%s", out)
	}
	if out := c.must("users", "show", "zhangsan"); !strings.Contains(out, "disabled:        yes") {
		t.Fatalf("users show (stopped):\n%s", out)
	}
	c.must("users", "enable", "zhangsan")
}

// jwksKids fetches the provider's published key ids.
func jwksKids(t *testing.T, issuer string) []string {
	t.Helper()
	var disc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(t, issuer+"/.well-known/openid-configuration", &disc)
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	getJSON(t, disc.JWKSURI, &set)
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", u, err)
	}
}

// idTokenKid is the kid in a JWS's header.
func idTokenKid(t *testing.T, raw string) string {
	t.Helper()
	head, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(head, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

var keyLine = regexp.MustCompile(`(?m)^(\S+)\s+(\S+)\s+(next|active|retired)\s`)

// keyStates parses `keys list` into kid → state.
func keyStates(t *testing.T, out string) (states map[string]string, active string) {
	t.Helper()
	states = map[string]string{}
	for _, m := range keyLine.FindAllStringSubmatch(out, -1) {
		states[m[1]] = m[3]
		if m[3] == "active" {
			active = m[1]
		}
	}
	if active == "" {
		t.Fatalf("keys list shows no active key:\n%s", out)
	}
	return states, active
}

// TestCLIKeysRotate: `keys rotate` while serving switches the serving process at once: the JWKS
// publishes the new active key (the old one stays), and the next ID token carries it. With the
// server stopped, a rotation is picked up at the next start.
func TestCLIKeysRotate(t *testing.T) {
	data := t.TempDir()
	d := startDev(t, data, nil)
	c := newCLI(t, data)
	secret := c.addClient("keys-app")
	party := newParty(t, d.issuer, "keys-app", secret)

	states, oldKid := keyStates(t, c.must("keys", "list"))
	if !slices.ContainsFunc(mapsValues(states), func(s string) bool { return s == "next" }) {
		t.Errorf("keys list shows no next key: %v", states)
	}
	if kid := idTokenKid(t, mustLogin(t, party).IDToken); kid != oldKid {
		t.Fatalf("ID token kid %s, keys list says %s is active", kid, oldKid)
	}

	out := c.must("keys", "rotate")
	states, newKid := keyStates(t, out)
	if newKid == oldKid || states[oldKid] != "retired" {
		t.Fatalf("keys rotate: active %s (was %s), old key %q:\n%s", newKid, oldKid, states[oldKid], out)
	}
	kids := jwksKids(t, d.issuer)
	if !slices.Contains(kids, newKid) || !slices.Contains(kids, oldKid) {
		t.Fatalf("JWKS after rotate = %v, want %s and the retired %s", kids, newKid, oldKid)
	}
	for kid, st := range states {
		if !slices.Contains(kids, kid) {
			t.Errorf("%s key %s is not in the JWKS %v", st, kid, kids)
		}
	}
	if kid := idTokenKid(t, mustLogin(t, party).IDToken); kid != newKid {
		t.Fatalf("ID token after rotate signed with %s, want %s", kid, newKid)
	}
	d.shutdown(t)

	// Stopped: rotate on the database; the next start signs with the new key.
	_, stoppedKid := keyStates(t, c.must("keys", "rotate"))
	if stoppedKid == newKid {
		t.Fatal("keys rotate with the server stopped did not change the active key")
	}
	d = startDev(t, data, nil)
	party = newParty(t, d.issuer, "keys-app", secret)
	if kid := idTokenKid(t, mustLogin(t, party).IDToken); kid != stoppedKid {
		t.Fatalf("after a restart the ID token is signed with %s, want %s", kid, stoppedKid)
	}
}

func mapsValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestCLIBackupUnderLoad: `backup --out` while logins keep writing gives a file bolt opens,
// holding every client and user committed before the backup started; the file is 0600, an
// existing file is kept unless --force; with the server stopped the database is copied directly.
func TestCLIBackupUnderLoad(t *testing.T) {
	data := t.TempDir()
	d := startDev(t, data, nil)
	c := newCLI(t, data)
	secret := c.addClient("load-app")
	party := newParty(t, d.issuer, "load-app", secret, "offline_access")
	mustLogin(t, party)

	// A login loop writes auth requests, sessions, tokens and the user record all along.
	stop := make(chan struct{})
	var loops atomic.Int64
	var loopErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 500; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := login(party); err != nil {
				loopErr = err
				return
			}
			loops.Add(1)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for loops.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var committed []string
	for i := range 5 {
		id := fmt.Sprintf("committed-%d", i)
		c.addClient(id)
		committed = append(committed, id)
	}
	out := filepath.Join(t.TempDir(), "backup.db")
	if res := c.must("backup", "--out", out); !strings.Contains(res, "wrote "+out) {
		t.Fatalf("backup: %s", res)
	}
	close(stop)
	wg.Wait()
	if loopErr != nil {
		t.Fatalf("login loop: %v", loopErr)
	}
	if loops.Load() < 2 {
		t.Fatal("the login loop did not run while the backup was taken")
	}
	checkBackup(t, out, append(committed, "load-app", "demo"), "zhangsan")

	if _, err := c.run("backup", "--out", out); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("backup over an existing file: %v", err)
	}
	c.must("backup", "--force", "--out", out)
	checkBackup(t, out, committed, "zhangsan")
	if _, err := os.Lstat(out + ".tmp"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	d.shutdown(t)

	stopped := filepath.Join(t.TempDir(), "stopped.db")
	c.must("backup", "--out", stopped)
	checkBackup(t, stopped, committed, "zhangsan")

	// Restore: the backup serves as the database.
	restored := t.TempDir()
	raw, err := os.ReadFile(stopped)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(restored, "wecom-oidc.db"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	d = startDev(t, restored, nil)
	rc := newCLI(t, restored)
	if out := rc.must("client", "list"); !strings.Contains(out, "committed-4") {
		t.Fatalf("client list on the restored database:\n%s", out)
	}
	mustLogin(t, newParty(t, d.issuer, "load-app", secret))
}

// checkBackup opens the backup as a database and looks for the records.
func checkBackup(t *testing.T, path string, clients []string, users ...string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want 0600", fi.Mode().Perm())
	}
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, id := range clients {
		if _, err := s.GetClient(ctx, id); err != nil {
			t.Errorf("backup lacks client %s: %v", id, err)
		}
	}
	for _, sub := range users {
		if _, err := s.GetUser(ctx, sub); err != nil {
			t.Errorf("backup lacks user %s: %v", sub, err)
		}
	}
	if ks, err := s.ListKeys(ctx); err != nil || len(ks) == 0 {
		t.Errorf("backup keys: %d, %v", len(ks), err)
	}
}

// TestAdminSocketStale: a socket file left by a dead process does not stop the server; one that
// another process answers on, or a file that is not a socket, does.
func TestAdminSocketStale(t *testing.T) {
	data := t.TempDir()
	sock := filepath.Join(data, "wecom-oidc.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the process "died": the file stays, nothing answers
	if _, err := os.Lstat(sock); err != nil {
		t.Fatal(err)
	}
	// With the server stopped, the CLI sees that nothing answers and uses the database.
	if out := newCLI(t, data).must("client", "list"); !strings.HasPrefix(out, "ID") {
		t.Fatalf("client list beside a stale socket:\n%s", out)
	}

	d := startDev(t, data, nil)
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket after replacing a stale one: %v, %v", fi, err)
	}
	if out := newCLI(t, data).must("client", "list"); !strings.Contains(out, "demo") {
		t.Fatalf("client list through the new socket:\n%s", out)
	}
	d.shutdown(t)
	if entries, _ := os.ReadDir(data); slices.ContainsFunc(entries, func(e os.DirEntry) bool { return e.Name() != "wecom-oidc.db" }) {
		t.Fatalf("left in the data directory after shutdown: %v", entries)
	}

	// Someone answers on the socket: the server refuses to start rather than take it over.
	live, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"dev", "--listen", "127.0.0.1:0", "--data", data}, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "answers") {
		t.Fatalf("dev beside a live admin socket: %v", err)
	}
	live.Close()

	if err := os.WriteFile(sock, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"dev", "--listen", "127.0.0.1:0", "--data", data}, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("dev beside a regular file at the socket path: %v", err)
	}
}

// TestCLIDatabaseLocked: when another process holds the database and nothing answers on the
// admin socket, the CLI says so at once.
func TestCLIDatabaseLocked(t *testing.T) {
	data := t.TempDir()
	s, err := openStore(t.Context(), StorageConfig{Backend: BackendBolt, Path: filepath.Join(data, "wecom-oidc.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := newCLI(t, data)
	for _, args := range [][]string{{"client", "list"}, {"users", "list"}, {"keys", "list"}, {"backup", "--out", filepath.Join(data, "b.db")}} {
		start := time.Now()
		_, err := c.run(args...)
		if err == nil || !strings.Contains(err.Error(), "in use by another process") ||
			!strings.Contains(err.Error(), filepath.Join(data, "wecom-oidc.sock")) {
			t.Errorf("%s on a locked database: %v", strings.Join(args, " "), err)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%s took %v", strings.Join(args, " "), time.Since(start))
		}
	}
	if _, err := os.Lstat(filepath.Join(data, "b.db.tmp")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed backup left its temporary file: %v", err)
	}
}

// TestCLIUsage: each command explains itself and refuses what it does not take.
func TestCLIUsage(t *testing.T) {
	c := newCLI(t, t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"users"}, "usage:"},
		{[]string{"users", "frob"}, "unknown users command"},
		{[]string{"users", "show"}, "usage: wecom-oidc users show SUB"},
		{[]string{"keys", "list", "extra"}, "usage: wecom-oidc keys list"},
		{[]string{"client", "rotate-secret"}, "usage: wecom-oidc client rotate-secret ID"},
		{[]string{"backup"}, "--out FILE"},
	} {
		if _, err := c.run(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if out := c.must("help"); !strings.Contains(out, "users list|show|disable|enable") || !strings.Contains(out, "backup --out FILE") {
		t.Errorf("usage text:\n%s", out)
	}
}

// TestAdminServesProfiles: the admin socket's handler serves pprof (the network port does not:
// the provider's router has no /debug route).
func TestAdminServesProfiles(t *testing.T) {
	h := adminHandler(nil, slog.New(slog.DiscardHandler))
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/cmdline"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("GET %s over the admin socket: %d, %d bytes", path, rec.Code, rec.Body.Len())
		}
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// syncBuffer is an io.Writer safe to read while run writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// devServer is `wecom-oidc dev` running in-process on a free loopback port.
type devServer struct {
	issuer, secret string
	stdout, stderr *syncBuffer
	done           chan error
	stop           context.CancelFunc
}

var (
	issuerLine = regexp.MustCompile(`(?m)^\s*issuer\s+(\S+)$`)
	secretLine = regexp.MustCompile(`(?m)^\s*client secret\s+(\S+)$`)
)

func startDev(t *testing.T, dataDir string, env map[string]string, extra ...string) *devServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devServer{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1), stop: cancel}
	args := append([]string{"dev", "--listen", "127.0.0.1:0", "--data", dataDir}, extra...)
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		if k == "WECOM_OIDC_DEV__DESKTOP_SCAN" {
			return "off" // the tests' logins go straight to the simulated web login
		}
		return ""
	}
	go func() { d.done <- run(ctx, args, getenv, d.stdout, d.stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := issuerLine.FindStringSubmatch(d.stdout.String()); m != nil {
			d.issuer = m[1]
			d.secret = secretLine.FindStringSubmatch(d.stdout.String())[1]
			t.Cleanup(func() { d.shutdown(t) })
			return d
		}
		select {
		case err := <-d.done:
			t.Fatalf("dev exited early: %v\nstderr:\n%s", err, d.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	t.Fatalf("dev did not print its issuer; stdout:\n%s\nstderr:\n%s", d.stdout.String(), d.stderr.String())
	return nil
}

// shutdown stops the server as SIGINT would and checks it exits cleanly.
func (d *devServer) shutdown(t *testing.T) {
	t.Helper()
	if d.stop == nil {
		return
	}
	d.stop()
	d.stop = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("dev returned %v after shutdown", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("dev did not shut down")
	}
}

func newJarClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

var zhangsanLink = regexp.MustCompile(`data-userid="zhangsan" href="([^"]+)"`)

// clickThrough loads raw (which leads to the simulated WeCom page) and clicks zhangsan, following
// redirects; it returns the final response.
func clickThrough(t *testing.T, c *http.Client, raw string) *http.Response {
	t.Helper()
	res, err := c.Get(raw)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := zhangsanLink.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no member link on %s (status %d):\n%s", res.Request.URL, res.StatusCode, body)
	}
	next, err := res.Request.URL.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		t.Fatal(err)
	}
	res, err = c.Get(next.String())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestDevDemoSignIn is the quick start: `wecom-oidc dev`, open the demo page, sign in, click a
// member, and see their claims.
func TestDevDemoSignIn(t *testing.T) {
	d := startDev(t, t.TempDir(), nil)
	res := clickThrough(t, newJarClient(t), d.issuer+"/demo/login")
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	page := html.UnescapeString(string(body))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("demo ended with status %d:\n%s", res.StatusCode, page)
	}
	for _, want := range []string{
		`<dd id="claim-name">张三</dd>`,
		`<dd id="claim-email">zhangsan@corp.example</dd>`,
		`<dd id="claim-groups">研发中心, 平台组</dd>`,
		`"iss": "` + d.issuer + `"`,
		`"sub": "zhangsan"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("demo page lacks %s", want)
		}
	}
	if strings.Contains(d.stderr.String(), d.secret) {
		t.Error("the demo client's secret appears in the log")
	}
}

// TestClientRegisteredFromCLI: a client added with `client add` (server stopped) signs in once
// the server runs; list works through the admin socket while it runs, and list/show/remove on
// the database once it has stopped.
func TestClientRegisteredFromCLI(t *testing.T) {
	data := t.TempDir()
	ctx := context.Background()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"client", "add", "--data-dir-unused"}, nil, &out, &errOut)
	if err == nil {
		t.Fatal("unknown flag accepted")
	}
	env := map[string]string{"WECOM_OIDC_STORAGE__PATH": filepath.Join(data, "wecom-oidc.db")}
	getenv := func(k string) string { return env[k] }
	out.Reset()
	if err := run(ctx, []string{"client", "add", "--id", "cli-app", "--name", "CLI app",
		"--redirect-uri", "https://app.example.com/cb"}, getenv, &out, &errOut); err != nil {
		t.Fatalf("client add: %v", err)
	}
	m := regexp.MustCompile(`client_secret: (\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("client add printed no secret:\n%s", out.String())
	}
	secret := m[1]
	if err := run(ctx, []string{"client", "add", "--id", "cli-app", "--redirect-uri", "https://x.example/cb"}, getenv, &out, &errOut); err == nil ||
		!strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate client add: %v", err)
	}
	if err := run(ctx, []string{"client", "add", "--id", "bad", "--redirect-uri", "javascript:alert(1)"}, getenv, &out, &errOut); err == nil {
		t.Fatal("javascript: redirect URI accepted")
	}
	if err := run(ctx, []string{"client", "add", "--id", "tool", "--public", "--device-flow",
		"--redirect-uri", "http://127.0.0.1/cb"}, getenv, &out, &errOut); err != nil {
		t.Fatalf("client add --device-flow: %v", err)
	}
	out.Reset()
	if err := run(ctx, []string{"client", "show", "tool"}, getenv, &out, &errOut); err != nil || !strings.Contains(out.String(), "device_flow:               true") {
		t.Fatalf("client show of a device-flow client: %v\n%s", err, out.String())
	}

	d := startDev(t, data, nil)
	// Only the client registered for it may start a device flow.
	for id, want := range map[string]int{"tool": http.StatusOK, "cli-app": http.StatusBadRequest} {
		form := url.Values{"client_id": {id}, "scope": {"openid"}}
		if id == "cli-app" {
			form.Set("client_secret", secret)
		}
		res, err := http.PostForm(d.issuer+"/device_authorization", form)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("device authorization for %s: %d, want %d", id, res.StatusCode, want)
		}
	}
	// While the server holds the database, the CLI goes through its admin socket.
	out.Reset()
	if err := run(ctx, []string{"client", "list"}, getenv, &out, &errOut); err != nil || !strings.Contains(out.String(), "cli-app") {
		t.Fatalf("client list while serving: err=%v\n%s", err, out.String())
	}

	party, err := rp.NewRelyingPartyOIDC(ctx, d.issuer, "cli-app", secret, "https://app.example.com/cb", []string{"openid", "profile"})
	if err != nil {
		t.Fatal(err)
	}
	verifier := rand.Text() + rand.Text()
	browser := newJarClient(t)
	browser.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == "app.example.com" {
			return http.ErrUseLastResponse
		}
		return nil
	}
	res := clickThrough(t, browser, rp.AuthURL("st", party, rp.WithCodeChallenge(oidc.NewSHACodeChallenge(verifier))))
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("no code for the CLI client: status %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	tokens, err := rp.CodeExchange[*oidc.IDTokenClaims](ctx, loc.Query().Get("code"), party, rp.WithCodeVerifier(verifier))
	if err != nil {
		t.Fatalf("code exchange with the CLI client's secret: %v", err)
	}
	if tokens.IDTokenClaims.Subject != "zhangsan" {
		t.Fatalf("sub = %q", tokens.IDTokenClaims.Subject)
	}
	d.shutdown(t)

	out.Reset()
	if err := run(ctx, []string{"client", "list"}, getenv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "cli-app") || !strings.Contains(out.String(), "demo") {
		t.Fatalf("client list:\n%s", out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"client", "show", "cli-app"}, getenv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), secret) || !strings.Contains(out.String(), "https://app.example.com/cb") {
		t.Fatalf("client show:\n%s", out.String())
	}
	if err := run(ctx, []string{"client", "remove", "cli-app"}, getenv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"client", "show", "cli-app"}, getenv, &out, &errOut); err == nil {
		t.Fatal("removed client still shown")
	}
}

// TestConfigCheck: every problem is printed, each naming its key, and the command fails.
func TestConfigCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	bad := "issuer: http://sso.example.com/\nwecom:\n  agent_id: abc\n  scope: snsapi_userinfo\nclients:\n  - id: app\n    redirect_uris: []\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"config", "check", "--config", path}, nil, &out, &errOut)
	if err == nil {
		t.Fatal("config check accepted a bad file")
	}
	for _, key := range []string{"issuer:", "wecom.corp_id:", "wecom.agent_id:", "wecom.secret:", "wecom.scope:", "clients[0].redirect_uris:", "clients[0].secret:"} {
		if !strings.Contains(out.String(), key) {
			t.Errorf("config check output lacks %s:\n%s", key, out.String())
		}
	}

	out.Reset()
	example := filepath.Join("..", "..", "config.example.yaml")
	env := map[string]string{"WECOM_OIDC_WECOM__SECRET": "s3cret-from-env", "GRAFANA_CLIENT_SECRET": "0123456789abcdef0123"}
	if err := run(context.Background(), []string{"config", "check", "--config", example}, func(k string) string { return env[k] }, &out, &errOut); err != nil {
		t.Fatalf("config check of the example: %v\n%s", err, out.String())
	}
}

func TestVersionAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, nil, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "wecom-oidc ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"frobnicate"}, nil, &out, &errOut); err == nil {
		t.Fatal("unknown command accepted")
	}
	if err := run(context.Background(), nil, nil, &out, &errOut); err == nil || !strings.Contains(errOut.String(), "Usage:") {
		t.Fatalf("no command: err=%v, stderr %q", err, errOut.String())
	}
}

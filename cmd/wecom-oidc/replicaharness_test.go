package main

// The harness of the replica test (replicas_test.go): the deployment, the balancer standing for
// the issuer, and the replica processes.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// replicaHeader names the replica the test's balancer sends a request to.
const replicaHeader = "X-Test-Replica"

// replicaHarness is the deployment: the simulated WeCom, the balancer, the configuration every
// replica shares, and the replicas.
type replicaHarness struct {
	dir       string
	issuer    string
	config    string            // path of the shared configuration file
	env       map[string]string // the environment every replica and CLI run gets
	appSecret string
	replicas  map[int]*replica
	balancer  *balancer
	transport *http.Transport
}

func newReplicaHarness(t *testing.T, etcdEndpoint string) *replicaHarness {
	t.Helper()
	seed := wecomsim.DefaultSeed()
	seed.AutoLogin = "zhangsan"
	sim := httptest.NewServer(wecomsim.New(seed))
	t.Cleanup(sim.Close)
	b := &balancer{addrs: map[int]string{}}
	lb := httptest.NewServer(b)
	t.Cleanup(lb.Close)

	h := &replicaHarness{
		// A short directory: the admin sockets live in it (Unix socket paths are short).
		dir:       mustShortTempDir(t),
		issuer:    lb.URL,
		appSecret: randomSecret(),
		replicas:  map[int]*replica{},
		balancer:  b,
		transport: &http.Transport{MaxIdleConnsPerHost: 16},
	}
	t.Cleanup(h.transport.CloseIdleConnections)
	h.config = filepath.Join(h.dir, "config.yaml")
	yaml := fmt.Sprintf(`issuer: %s
listen: 127.0.0.1:0
log: {level: info, format: json}
storage:
  backend: etcd
  etcd:
    endpoints: [%s]
    prefix: /wecom-oidc-replicas/
wecom:
  corp_id: %s
  agent_id: "%s"
  secret_env: SIM_SECRET
  api_base_url: %s
  oauth_base_url: %s
  login_base_url: %s
clients:
  - id: app
    secret_env: APP_SECRET
    redirect_uris: [%s]
`, h.issuer, etcdEndpoint, seed.CorpID, seed.AgentID, sim.URL, sim.URL, sim.URL, appRedirect)
	if err := os.WriteFile(h.config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	h.env = map[string]string{"SIM_SECRET": seed.Secret, "APP_SECRET": h.appSecret, "WECOM_OIDC_CONFIG": h.config}
	return h
}

// mustShortTempDir is a temporary directory under /tmp, removed at the end of the test.
func mustShortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func randomSecret() string { return randomBase32() + randomBase32() }

func randomBase32() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	b := make([]byte, 26)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// socket is replica n's admin socket.
func (h *replicaHarness) socket(n int) string {
	return filepath.Join(h.dir, "r"+strconv.Itoa(n)+".sock")
}

// start starts replica n without waiting for it.
func (h *replicaHarness) start(t *testing.T, bin string, n int) {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "WECOM_OIDC_ADMIN__SOCKET="+h.socket(n))
	for k, v := range h.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	r := &replica{n: n, cmd: cmd, log: &syncBuffer{}, serving: make(chan string, 1), exited: make(chan struct{}), balancer: h.balancer}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go r.read(stderr)
	t.Cleanup(r.kill)
	h.replicas[n] = r
}

// cli runs a wecom-oidc command in-process as an operator would beside replica n (through its
// admin socket; n = 0: no socket answers, so the command opens etcd itself) and returns its
// output.
func (h *replicaHarness) cli(t *testing.T, n int, args ...string) string {
	t.Helper()
	out, err := h.run(n, args...)
	if err != nil {
		t.Fatalf("wecom-oidc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (h *replicaHarness) run(n int, args ...string) (string, error) {
	socket := filepath.Join(h.dir, "none.sock")
	if n > 0 {
		socket = h.socket(n)
	}
	getenv := func(k string) string {
		if k == "WECOM_OIDC_ADMIN__SOCKET" {
			return socket
		}
		return h.env[k]
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, getenv, &out, &errOut)
	return out.String(), err
}

// checkSameKeys fails unless every replica publishes the same keys.
func (h *replicaHarness) checkSameKeys(t *testing.T) {
	t.Helper()
	var first []string
	for n := 1; n <= 3; n++ {
		set, err := h.jwks(n)
		if err != nil {
			t.Fatal(err)
		}
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.KeyID)
		}
		slices.Sort(kids)
		if len(kids) != 2 {
			t.Fatalf("replica %d publishes %d keys, want 2 (active and next): %v", n, len(kids), kids)
		}
		if n == 1 {
			first = kids
		} else if !slices.Equal(kids, first) {
			t.Fatalf("replica %d publishes %v, replica 1 %v", n, kids, first)
		}
	}
}

// --- HTTP through the balancer ---

// client is an HTTP client whose requests to the issuer go to replica n; redirects are followed
// except back to the application.
func (h *replicaHarness) client(n int, jar http.CookieJar) *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Jar:       jar,
		Transport: pinned{n: n, host: strings.TrimPrefix(h.issuer, "http://"), base: h.transport},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), appRedirect) || len(via) > 10 {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
}

// pinned sends requests for the issuer's host to replica n.
type pinned struct {
	n    int
	host string
	base http.RoundTripper
}

func (p pinned) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == p.host {
		req = req.Clone(req.Context())
		req.Header.Set(replicaHeader, strconv.Itoa(p.n))
	}
	return p.base.RoundTrip(req)
}

// replicaClient is a confidential client of the test.
type replicaClient struct{ id, secret string }

// signIn runs the browser's part of a login on replica n: /authorize, the simulated WeCom
// (which signs zhangsan in at once), the callback, back to the application with a code.
func (h *replicaHarness) signIn(c replicaClient, n int) (code, verifier, nonce string, err error) {
	jar, _ := cookiejar.New(nil)
	browser := h.client(n, jar)
	verifier, nonce = randomSecret(), randomBase32()
	v := url.Values{
		"response_type": {"code"}, "client_id": {c.id}, "redirect_uri": {appRedirect},
		"scope": {"openid profile offline_access"}, "state": {randomBase32()}, "nonce": {nonce},
		"code_challenge": {oidc.NewSHACodeChallenge(verifier)}, "code_challenge_method": {"S256"},
	}
	res, err := browser.Get(h.issuer + "/authorize?" + v.Encode())
	if err != nil {
		return "", "", "", err
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), appRedirect) || loc.Query().Get("code") == "" {
		return "", "", "", fmt.Errorf("sign-in on replica %d: status %d at %s, Location %q: %.300s", n, res.StatusCode, res.Request.URL, res.Header.Get("Location"), body)
	}
	return loc.Query().Get("code"), verifier, nonce, nil
}

// replicaTokens is a token response.
type replicaTokens struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
}

// token posts a grant to replica n's token endpoint as c.
func (h *replicaHarness) token(c replicaClient, form url.Values, n int) (replicaTokens, error) {
	req, err := http.NewRequest(http.MethodPost, h.issuer+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		return replicaTokens{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.id), url.QueryEscape(c.secret))
	res, err := h.client(n, nil).Do(req)
	if err != nil {
		return replicaTokens{}, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var tok replicaTokens
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
		return replicaTokens{}, fmt.Errorf("%s on replica %d: status %d: %s", form.Get("grant_type"), n, res.StatusCode, body)
	}
	return tok, nil
}

func (h *replicaHarness) exchange(c replicaClient, code, verifier string, n int) (replicaTokens, error) {
	return h.token(c, url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {appRedirect}, "code_verifier": {verifier}}, n)
}

func (h *replicaHarness) refresh(c replicaClient, refreshToken string, n int) (replicaTokens, error) {
	return h.token(c, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}, n)
}

// login signs in with the browser on one replica and redeems the code on another.
func (h *replicaHarness) login(c replicaClient, browser, back int) error {
	code, verifier, _, err := h.signIn(c, browser)
	if err != nil {
		return err
	}
	tok, err := h.exchange(c, code, verifier, back)
	if err == nil && tok.RefreshToken == "" {
		err = errors.New("no refresh token")
	}
	return err
}

// userinfo returns the sub replica n's userinfo endpoint answers for the access token.
func (h *replicaHarness) userinfo(accessToken string, n int) (string, error) {
	req, err := http.NewRequest(http.MethodGet, h.issuer+"/userinfo", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	res, err := h.client(n, nil).Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var info struct {
		Sub string `json:"sub"`
	}
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &info) != nil {
		return "", fmt.Errorf("userinfo on replica %d: status %d: %s", n, res.StatusCode, body)
	}
	return info.Sub, nil
}

// jwks is replica n's key set.
func (h *replicaHarness) jwks(n int) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	res, err := h.client(n, nil).Get(h.issuer + "/keys")
	if err != nil {
		return set, err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&set); err != nil || res.StatusCode != http.StatusOK {
		return set, fmt.Errorf("keys of replica %d: status %d (%v)", n, res.StatusCode, err)
	}
	return set, nil
}

// checkIDToken verifies an ID token with the keys replica n publishes, and its iss, aud and nonce
// (nonce "" is not checked: a refreshed ID token need not repeat it).
func (h *replicaHarness) checkIDToken(t *testing.T, raw, clientID, nonce string, n int) {
	t.Helper()
	set, err := h.jwks(n)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("replica %d does not publish the ID token's key %q", n, jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("the ID token does not verify with replica %d's keys: %v", n, err)
	}
	var claims struct {
		Iss   string `json:"iss"`
		Sub   string `json:"sub"`
		Aud   any    `json:"aud"`
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Iss != h.issuer || claims.Sub != "zhangsan" || !strings.Contains(fmt.Sprint(claims.Aud), clientID) ||
		(nonce != "" && claims.Nonce != nonce) {
		t.Fatalf("ID token claims %+v; want iss %s, sub zhangsan, aud %s, nonce %q", claims, h.issuer, clientID, nonce)
	}
}

func (h *replicaHarness) mustSignIn(t *testing.T, c replicaClient, n int) (code, verifier, nonce string) {
	t.Helper()
	code, verifier, nonce, err := h.signIn(c, n)
	if err != nil {
		t.Fatal(err)
	}
	return code, verifier, nonce
}

func (h *replicaHarness) mustExchange(t *testing.T, c replicaClient, code, verifier string, n int) replicaTokens {
	t.Helper()
	tok, err := h.exchange(c, code, verifier, n)
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" || tok.IDToken == "" {
		t.Fatalf("code exchange on replica %d: %+v", n, tok)
	}
	return tok
}

func (h *replicaHarness) mustRefresh(t *testing.T, c replicaClient, refreshToken string, n int) replicaTokens {
	t.Helper()
	tok, err := h.refresh(c, refreshToken, n)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (h *replicaHarness) mustUserinfo(t *testing.T, accessToken string, n int) string {
	t.Helper()
	sub, err := h.userinfo(accessToken, n)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// waitFor polls cond for up to 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --- the balancer ---

// balancer is the issuer's address: a reverse proxy to the replica a request names in
// replicaHeader. The Host header is kept, as a load balancer keeps it.
type balancer struct {
	mu    sync.Mutex
	addrs map[int]string // replica → host:port, while it serves
}

func (b *balancer) set(n int, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if addr == "" {
		delete(b.addrs, n)
	} else {
		b.addrs[n] = addr
	}
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.Header.Get(replicaHeader))
	b.mu.Lock()
	addr := b.addrs[n]
	b.mu.Unlock()
	if addr == "" {
		http.Error(w, fmt.Sprintf("balancer: replica %q is not serving", r.Header.Get(replicaHeader)), http.StatusBadGateway)
		return
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(&url.URL{Scheme: "http", Host: addr})
		pr.Out.Host = pr.In.Host
		pr.Out.Header.Del(replicaHeader)
	}}
	proxy.ServeHTTP(w, r)
}

// --- a replica process ---

// replica is one `wecom-oidc serve` process.
type replica struct {
	n        int
	cmd      *exec.Cmd
	log      *syncBuffer   // its stderr: JSON log lines
	serving  chan string   // receives the listen address once it logs "serving"
	exited   chan struct{} // closed once the process has been waited for
	waitErr  error
	balancer *balancer
}

// read copies the process's stderr into log, reports the "serving" line, and waits for the
// process once stderr closes.
func (r *replica) read(stderr io.Reader) {
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		r.log.Write(append(line, '\n'))
		var rec struct {
			Msg    string `json:"msg"`
			Listen string `json:"listen"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "serving" && rec.Listen != "" {
			select {
			case r.serving <- rec.Listen:
			default:
			}
		}
	}
	r.waitErr = r.cmd.Wait()
	close(r.exited)
}

// waitServing waits until the replica serves and puts it behind the balancer.
func (r *replica) waitServing(t *testing.T) {
	t.Helper()
	select {
	case addr := <-r.serving:
		r.balancer.set(r.n, addr)
	case <-r.exited:
		t.Fatalf("replica %d exited before serving (%v):\n%s", r.n, r.waitErr, r.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %d did not serve within 30s:\n%s", r.n, r.log.String())
	}
}

// stop takes the replica out of the balancer, sends SIGTERM and waits for a clean exit.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.balancer.set(r.n, "")
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.exited:
		if r.waitErr != nil {
			t.Fatalf("replica %d exited with %v after SIGTERM:\n%s", r.n, r.waitErr, r.log.String())
		}
	case <-time.After(20 * time.Second):
		r.kill()
		t.Fatalf("replica %d did not stop within 20s of SIGTERM", r.n)
	}
}

// kill ends the process if it still runs (a failed test leaves no server behind).
func (r *replica) kill() {
	select {
	case <-r.exited:
	default:
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

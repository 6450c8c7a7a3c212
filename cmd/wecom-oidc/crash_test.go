//go:build crash

package main

// The crash test (`make crash`): the real binary, `wecom-oidc dev`, under a write-heavy load —
// clients registered through the admin socket, logins and refresh-token rotations through the
// demo client, a public client and the registered clients — is killed with SIGKILL at a random
// moment, three times. After each kill the database must pass bbolt's consistency check, the
// server must start again on it, and every write the server acknowledged (a 201 for a client, a
// 200 for a token response) must still hold: each client exists and its secret authenticates at
// the token endpoints, and each refresh-token family's latest acknowledged token refreshes. A
// family whose refresh was in flight at the kill may have either outcome: its last acknowledged
// token refreshes (the rotation was not committed) or is refused with invalid_grant (it was; the
// new token was lost with the connection, and presenting the old one revokes the family).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	bbolt "go.etcd.io/bbolt"
)

const (
	crashCycles   = 3
	crashBudget   = 60 * time.Second // every cycle together, the build excluded
	crashSPA      = "crash-spa"
	crashSPARedir = "http://127.0.0.1:5173/callback"
	crashAppRedir = "https://app.example.com/cb"
	// crashRegistrations bounds the clients each registrar adds per cycle.
	crashRegistrations = 150
)

// crashServer is one run of the binary.
type crashServer struct {
	cmd        *exec.Cmd
	issuer     string
	demoSecret string
	stderr     *syncBuffer
	exited     chan struct{} // closed once the process has been waited for
	waitErr    error
}

var crashSecretLine = regexp.MustCompile(`(?m)^\s*client secret\s+(\S+)$`)

// startCrashServer starts `bin dev --listen 127.0.0.1:0 --data dir` and waits for its issuer.
func startCrashServer(t *testing.T, bin, dir string) *crashServer {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--listen", "127.0.0.1:0", "--data", dir)
	cmd.Env = append(os.Environ(), "WECOM_OIDC_DEV__AUTO_LOGIN=zhangsan", "WECOM_OIDC_DEV__DESKTOP_SCAN=off", "WECOM_OIDC_LOG__LEVEL=warn")
	s := &crashServer{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = s.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.kill) // a failed test leaves no server behind
	var out strings.Builder
	deadline := time.After(15 * time.Second)
	for s.issuer == "" || s.demoSecret == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the server exited before printing its issuer:\n%s\nstderr:\n%s", out.String(), s.stderr.String())
			}
			out.WriteString(l + "\n")
			if m := issuerLine.FindStringSubmatch(l); m != nil {
				s.issuer = m[1]
			}
			if m := crashSecretLine.FindStringSubmatch(l); m != nil {
				s.demoSecret = m[1]
			}
		case <-deadline:
			s.kill()
			t.Fatalf("the server printed no issuer within 15s:\n%s\nstderr:\n%s", out.String(), s.stderr.String())
		}
	}
	// The banner is printed just before serving; wait until it answers.
	for range 100 {
		if res, err := http.Get(s.issuer + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.kill()
	t.Fatalf("the server does not answer /healthz; stderr:\n%s", s.stderr.String())
	return nil
}

// kill sends SIGKILL and waits for the process to be gone; it does nothing once it is.
func (s *crashServer) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// stop asks the server to shut down (SIGTERM) and waits.
func (s *crashServer) stop(t *testing.T) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if s.waitErr != nil {
			t.Errorf("the server exited with %v after SIGTERM; stderr:\n%s", s.waitErr, s.stderr.String())
		}
	case <-time.After(20 * time.Second):
		s.kill()
		t.Error("the server did not stop within 20s of SIGTERM")
	}
}

// crashClient is a client the test signs in with.
type crashClient struct {
	id, secret, redirect string // secret "" for the public client
}

// crashFamily is a refresh-token family: the latest token the server acknowledged, and whether a
// refresh presenting it was in flight when the server died.
type crashFamily struct {
	client   crashClient
	latest   string
	inFlight bool
}

// crashState is what the server acknowledged, across cycles.
type crashState struct {
	mu         sync.Mutex
	clients    []crashClient  // registrations answered 201
	families   []*crashFamily // token families whose code exchange was answered 200
	demoSecret atomic.Value   // string: the demo client's secret changes at every start
	writes     atomic.Int64   // acknowledged writes during the load
}

func (st *crashState) demo() crashClient {
	return crashClient{id: devClientID, secret: st.demoSecret.Load().(string)}
}

// crashHTTP is the test's HTTP side: one transport for the provider, one for the admin socket.
type crashHTTP struct {
	issuer string
	web    *http.Client
	admin  *http.Client
}

func newCrashHTTP(issuer, socket string) *crashHTTP {
	var d net.Dialer
	return &crashHTTP{
		issuer: issuer,
		web:    &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		admin: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "unix", socket) },
		}},
	}
}

func (h *crashHTTP) close() {
	h.web.CloseIdleConnections()
	h.admin.CloseIdleConnections()
}

// register adds a confidential client through the admin socket; ok is false unless the server
// answered 201 with a secret.
func (h *crashHTTP) register(id string) (crashClient, error) {
	body, _ := json.Marshal(map[string]any{"id": id, "name": "crash " + id, "redirect_uris": []string{crashAppRedir}, "id_token_claims": true})
	res, err := h.admin.Post("http://wecom-oidc/v1/clients", "application/json", bytes.NewReader(body))
	if err != nil {
		return crashClient{}, err
	}
	defer res.Body.Close()
	var out struct {
		Secret string `json:"secret"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return crashClient{}, fmt.Errorf("register %s: status %d, body: %w", id, res.StatusCode, err)
	}
	if res.StatusCode != http.StatusCreated || out.Secret == "" {
		return crashClient{}, fmt.Errorf("register %s: status %d", id, res.StatusCode)
	}
	return crashClient{id: id, secret: out.Secret, redirect: crashAppRedir}, nil
}

// registerPublic adds the public client (once; an existing one is fine).
func (h *crashHTTP) registerPublic() error {
	body, _ := json.Marshal(map[string]any{"id": crashSPA, "public": true, "redirect_uris": []string{crashSPARedir}, "id_token_claims": true})
	res, err := h.admin.Post("http://wecom-oidc/v1/clients", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusConflict {
		return fmt.Errorf("register %s: status %d", crashSPA, res.StatusCode)
	}
	return nil
}

// showClient reports whether the admin socket knows the client.
func (h *crashHTTP) showClient(id string) error {
	res, err := h.admin.Get("http://wecom-oidc/v1/clients/" + url.PathEscape(id))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var c struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&c); err != nil || res.StatusCode != http.StatusOK || c.ID != id {
		return fmt.Errorf("client show %s: status %d (%v)", id, res.StatusCode, err)
	}
	return nil
}

// listClients returns the ids the admin socket lists.
func (h *crashHTTP) listClients() (map[string]bool, error) {
	res, err := h.admin.Get("http://wecom-oidc/v1/clients")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var cs []struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&cs); err != nil || res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client list: status %d (%v)", res.StatusCode, err)
	}
	ids := make(map[string]bool, len(cs))
	for _, c := range cs {
		ids[c.ID] = true
	}
	return ids, nil
}

// tokenResult is a token endpoint answer.
type tokenResult struct {
	status       int
	errCode      string
	refreshToken string
}

// postToken calls the token endpoint (or introspection, with endpoint) as c.
func (h *crashHTTP) postForm(endpoint string, c crashClient, form url.Values) (int, []byte, error) {
	if c.secret == "" {
		form.Set("client_id", c.id)
	}
	req, err := http.NewRequest(http.MethodPost, h.issuer+endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if c.secret != "" {
		req.SetBasicAuth(url.QueryEscape(c.id), url.QueryEscape(c.secret))
	}
	res, err := h.web.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res.StatusCode, body, err
}

func (h *crashHTTP) token(c crashClient, form url.Values) (tokenResult, error) {
	status, body, err := h.postForm("/oauth/token", c, form)
	if err != nil {
		return tokenResult{}, err
	}
	var out struct {
		RefreshToken string `json:"refresh_token"`
		Error        string `json:"error"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return tokenResult{}, fmt.Errorf("token endpoint: status %d, not JSON: %w", status, err)
	}
	return tokenResult{status: status, errCode: out.Error, refreshToken: out.RefreshToken}, nil
}

func (h *crashHTTP) refresh(c crashClient, token string) (tokenResult, error) {
	return h.token(c, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}})
}

// secretWorks asks the introspection endpoint about a token that does not exist: a client whose
// secret is right gets 200 {"active": false}, a wrong secret 401.
func (h *crashHTTP) secretWorks(c crashClient) error {
	status, body, err := h.postForm("/oauth/introspect", c, url.Values{"token": {"not-a-token"}})
	if err != nil {
		return err
	}
	if status != http.StatusOK || !bytes.Contains(body, []byte(`"active":false`)) {
		return fmt.Errorf("introspection as %s: status %d: %s", c.id, status, body)
	}
	return nil
}

// login signs zhangsan in to c (the simulator's auto-login clicks for us) and redeems the code;
// it returns the refresh token of the new family.
func (h *crashHTTP) login(c crashClient) (string, error) {
	redirect := c.redirect
	if c.id == devClientID {
		redirect = h.issuer + demoCallbackPath
	}
	verifier := randomText() + randomText()
	v := url.Values{
		"response_type": {"code"}, "client_id": {c.id}, "redirect_uri": {redirect},
		"scope": {"openid profile offline_access"}, "state": {randomText()}, "nonce": {randomText()},
		"code_challenge": {oidc.NewSHACodeChallenge(verifier)}, "code_challenge_method": {"S256"},
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Timeout: 10 * time.Second, Jar: jar, Transport: h.web.Transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), redirect) || len(via) > 10 {
				return http.ErrUseLastResponse
			}
			return nil
		}}
	res, err := browser.Get(h.issuer + "/authorize?" + v.Encode())
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), redirect) || loc.Query().Get("code") == "" {
		return "", fmt.Errorf("login to %s: status %d, Location %q", c.id, res.StatusCode, res.Header.Get("Location"))
	}
	tr, err := h.token(c, url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier}})
	if err != nil {
		return "", err
	}
	if tr.status != http.StatusOK || tr.refreshToken == "" {
		return "", fmt.Errorf("code exchange for %s: status %d, error %q, refresh token %t", c.id, tr.status, tr.errCode, tr.refreshToken != "")
	}
	return tr.refreshToken, nil
}

func randomText() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 24)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// checkFile opens the database file as bbolt and runs its consistency check.
func checkFile(path string) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("the database does not open: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
		var problems []string
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		if len(problems) > 0 {
			return fmt.Errorf("bbolt check: %s", strings.Join(problems, "; "))
		}
		return nil
	})
}

// TestCrashUnderWriteLoad is the crash test; see the top of the file.
func TestCrashUnderWriteLoad(t *testing.T) {
	bin := buildBinary(t)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("random seed %d", seed)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "wecom-oidc.db")
	socket := filepath.Join(dir, "wecom-oidc.sock")
	began := time.Now()

	st := &crashState{}
	srv := startCrashServer(t, bin, dir)
	st.demoSecret.Store(srv.demoSecret)
	h := newCrashHTTP(srv.issuer, socket)
	if err := h.registerPublic(); err != nil {
		srv.kill()
		t.Fatal(err)
	}

	var checked, lost, inFlightCommitted, inFlightNot int
	secretChecked := map[string]bool{}
	// The secret check can fail: a wrong secret is refused.
	if err := h.secretWorks(crashClient{id: devClientID, secret: "wrong-" + srv.demoSecret}); err == nil {
		t.Fatal("introspection accepted a wrong client secret: the secret check proves nothing")
	}
	for cycle := 1; cycle <= crashCycles; cycle++ {
		// Load: 2 registrars, 4 login-and-refresh workers, until the kill.
		writesAtStart := st.writes.Load()
		var killed atomic.Bool
		var loadErrs []error
		var errMu sync.Mutex
		fail := func(err error) {
			if killed.Load() {
				return // the connection died with the server: the outcome is unknown, not a failure
			}
			errMu.Lock()
			loadErrs = append(loadErrs, err)
			errMu.Unlock()
		}
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Go(func() {
				for i := 0; i < crashRegistrations && !killed.Load(); i++ {
					c, err := h.register(fmt.Sprintf("crash-%d-%d-%d", cycle, w, i))
					if err != nil {
						fail(err)
						continue
					}
					st.mu.Lock()
					st.clients = append(st.clients, c)
					st.mu.Unlock()
					st.writes.Add(1)
				}
			})
		}
		const workers = 4
		st.mu.Lock()
		owned := make([][]*crashFamily, workers) // the families of earlier cycles, dealt out
		for i, f := range st.families {
			owned[i%workers] = append(owned[i%workers], f)
		}
		st.mu.Unlock()
		for w := range workers {
			wg.Go(func() {
				wrng := rand.New(rand.NewPCG(uint64(seed), uint64(cycle*10+w)))
				mine := owned[w] // refreshed only by this worker: never two refreshes of a family at once
				for i := 0; i < 100000 && !killed.Load(); i++ {
					if len(mine) == 0 || wrng.IntN(3) == 0 {
						var c crashClient
						switch k := wrng.IntN(3); {
						case k == 0:
							c = st.demo()
						case k == 1:
							c = crashClient{id: crashSPA, redirect: crashSPARedir}
						default:
							st.mu.Lock()
							if len(st.clients) > 0 {
								c = st.clients[wrng.IntN(len(st.clients))]
							} else {
								c = st.demo()
							}
							st.mu.Unlock()
						}
						rt, err := h.login(c)
						if err != nil {
							fail(err)
							continue
						}
						f := &crashFamily{client: c, latest: rt}
						mine = append(mine, f)
						st.mu.Lock()
						st.families = append(st.families, f)
						st.mu.Unlock()
						st.writes.Add(1)
						continue
					}
					f := mine[wrng.IntN(len(mine))]
					c := f.client
					if c.id == devClientID {
						c = st.demo()
					}
					st.mu.Lock()
					f.inFlight = true
					st.mu.Unlock()
					tr, err := h.refresh(c, f.latest)
					if err != nil {
						fail(fmt.Errorf("refresh (%s): %w", c.id, err))
						if killed.Load() {
							return // f stays in flight
						}
						continue
					}
					st.mu.Lock()
					if tr.status == http.StatusOK && tr.refreshToken != "" {
						f.latest, f.inFlight = tr.refreshToken, false
						st.writes.Add(1)
					}
					st.mu.Unlock()
					if tr.status != http.StatusOK {
						fail(fmt.Errorf("refresh (%s): status %d, error %q", c.id, tr.status, tr.errCode))
						return
					}
				}
			})
		}

		loadFor := 1500*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Second)))
		time.Sleep(loadFor)
		killed.Store(true)
		srv.kill()
		wg.Wait()
		h.close()
		st.mu.Lock()
		nInFlight := 0
		for _, f := range st.families {
			if f.inFlight {
				nInFlight++
			}
		}
		st.mu.Unlock()
		t.Logf("cycle %d: SIGKILL after %v of load: %d writes acknowledged in this cycle (%d in all), %d clients, %d live families, %d refreshes in flight",
			cycle, loadFor.Round(time.Millisecond), st.writes.Load()-writesAtStart, st.writes.Load(), len(st.clients), len(st.families), nInFlight)
		if len(loadErrs) > 0 {
			t.Errorf("cycle %d: %d requests failed before the kill, first: %v", cycle, len(loadErrs), loadErrs[0])
		}

		// The file as the kill left it: bbolt opens it and its check passes.
		if err := checkFile(dbPath); err != nil {
			t.Fatalf("cycle %d: after SIGKILL: %v", cycle, err)
		}

		// Restart on the same directory (a stale admin socket is left behind) and check.
		restartAt := time.Now()
		srv = startCrashServer(t, bin, dir)
		t.Logf("cycle %d: restarted in %v", cycle, time.Since(restartAt).Round(time.Millisecond))
		st.demoSecret.Store(srv.demoSecret)
		h = newCrashHTTP(srv.issuer, socket)
		st.mu.Lock()
		clients := append([]crashClient(nil), st.clients...)
		families := append([]*crashFamily(nil), st.families...)
		st.mu.Unlock()
		// Every acknowledged client is listed; the secret of each one not checked before (and of
		// a sample of the others) authenticates. (Checking every secret at every cycle would
		// cost O(clients²): each token-endpoint request lists every client, see the report.)
		listed, err := h.listClients()
		if err != nil {
			t.Fatalf("cycle %d: client list after the restart: %v", cycle, err)
		}
		for i, c := range clients {
			checked++
			if !listed[c.id] {
				lost++
				t.Errorf("cycle %d: acknowledged client %s lost", cycle, c.id)
				continue
			}
			if secretChecked[c.id] && rng.IntN(len(clients)) >= 100 {
				continue
			}
			if err := h.secretWorks(c); err != nil {
				lost++
				t.Errorf("cycle %d: acknowledged client %s (#%d): its secret no longer works: %v", cycle, c.id, i, err)
			}
			secretChecked[c.id] = true
		}
		t.Logf("cycle %d: %d clients checked in %v", cycle, len(clients), time.Since(restartAt).Round(time.Millisecond))
		var live []*crashFamily
		for _, f := range families {
			c := f.client
			if c.id == devClientID {
				c = st.demo()
			}
			tr, err := h.refresh(c, f.latest)
			if err != nil {
				t.Fatalf("cycle %d: refresh after the restart: %v", cycle, err)
			}
			switch {
			case tr.status == http.StatusOK && tr.refreshToken != "":
				if f.inFlight {
					inFlightNot++ // the rotation in flight was not committed
				} else {
					checked++
				}
				f.latest, f.inFlight = tr.refreshToken, false
				live = append(live, f)
			case f.inFlight && tr.errCode == "invalid_grant":
				// The rotation in flight was committed and its answer lost: the old token is
				// spent (and presenting it revoked the family). Nothing acknowledged was lost.
				inFlightCommitted++
			default:
				checked++
				lost++
				t.Errorf("cycle %d: the latest acknowledged refresh token of a %s family is refused: status %d, error %q",
					cycle, c.id, tr.status, tr.errCode)
			}
		}
		st.mu.Lock()
		st.families = live
		st.mu.Unlock()
		t.Logf("cycle %d: %d families checked; restart and checks took %v", cycle, len(families), time.Since(restartAt).Round(time.Millisecond))
		if time.Since(began) > crashBudget {
			t.Fatalf("the crash cycles took %v, over the %v budget", time.Since(began), crashBudget)
		}
	}
	srv.stop(t)
	if err := checkFile(dbPath); err != nil {
		t.Fatalf("after the final shutdown: %v", err)
	}
	summary := fmt.Sprintf("crash test: %d acknowledged writes checked, %d lost (%d SIGKILLs; %d refreshes in flight at a kill: %d had been committed, %d had not; %v)",
		checked, lost, crashCycles, inFlightCommitted+inFlightNot, inFlightCommitted, inFlightNot, time.Since(began).Round(100*time.Millisecond))
	t.Log(summary)
	fmt.Println(summary)
	if lost > 0 {
		t.Fail()
	}
}

package main

// The management commands (client, users, keys, backup) work the same whether the server runs or
// not. Each is a method of admin. localAdmin does the work on an open store; the running server
// serves it over HTTP on a Unix socket (mode 0600, never on the network), and the CLI reaches it
// there through remoteAdmin. When nothing answers on the socket, the CLI opens the database itself
// and uses localAdmin directly, so both paths share one implementation and one set of messages.
//
// The admin API, JSON in and out, errors as {"error": "..."} with an HTTP status:
//
//	GET    /v1/clients                      list (secret hashes never leave the server)
//	POST   /v1/clients                      add; the response carries the one-time secret
//	GET    /v1/clients/{id}                 show
//	DELETE /v1/clients/{id}                 remove
//	POST   /v1/clients/{id}/rotate-secret   new one-time secret; the old one fails at once
//	GET    /v1/users                        list
//	GET    /v1/users/{sub}                  show
//	POST   /v1/users/{sub}/disable          disable and revoke their tokens
//	POST   /v1/users/{sub}/enable           enable
//	GET    /v1/keys                         list signing keys and their states
//	POST   /v1/keys/rotate                  a new signing key signs from now on
//	GET    /v1/backup                       a consistent copy of the database (trailer Backup-Status)

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/wecom-oidc/wecom-oidc/keys"
	"github.com/wecom-oidc/wecom-oidc/provider"
	"github.com/wecom-oidc/wecom-oidc/storage"
)

// admin is every management operation.
type admin interface {
	ListClients(ctx context.Context) ([]storage.Client, error)
	GetClient(ctx context.Context, id string) (storage.Client, error)
	// AddClient registers c (Source cli) and returns it with its one-time secret.
	AddClient(ctx context.Context, c storage.Client) (clientSecret, error)
	RemoveClient(ctx context.Context, id string) (storage.Client, error)
	RotateClientSecret(ctx context.Context, id string) (clientSecret, error)

	ListUsers(ctx context.Context) ([]storage.User, error)
	GetUser(ctx context.Context, subject string) (storage.User, error)
	// DisableUser marks the user disabled and revokes every token issued to them.
	DisableUser(ctx context.Context, subject string) (userChange, error)
	EnableUser(ctx context.Context, subject string) (userChange, error)

	ListKeys(ctx context.Context) ([]keyInfo, error)
	// RotateKeys makes a new signing key sign from now on and returns the keys after.
	RotateKeys(ctx context.Context) ([]keyInfo, error)

	// Backup writes a consistent copy of the database to w.
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// clientSecret is a client as the admin API returns it (never with its secret hash) and, after
// add or rotate-secret, the secret in clear: the only time it is shown.
type clientSecret struct {
	Client storage.Client `json:"client"`
	Secret string         `json:"secret,omitempty"`
}

// userChange is the outcome of disable or enable.
type userChange struct {
	User storage.User `json:"user"`
	// Changed is false when the user already was in the requested state.
	Changed bool `json:"changed"`
	// RevokedFamilies counts the refresh token families a disable revoked.
	RevokedFamilies int `json:"revoked_families"`
}

// keyInfo is keys.Info with JSON names.
type keyInfo struct {
	ID          string    `json:"id"`
	Algorithm   string    `json:"alg"`
	State       string    `json:"state"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatesAt time.Time `json:"activates_at,omitzero"`
	NotAfter    time.Time `json:"not_after,omitzero"`
}

func keyInfos(in []keys.Info) []keyInfo {
	out := make([]keyInfo, len(in))
	for i, k := range in {
		out[i] = keyInfo{ID: k.ID, Algorithm: k.Algorithm, State: k.State, CreatedAt: k.CreatedAt, ActivatesAt: k.ActivatesAt, NotAfter: k.NotAfter}
	}
	return out
}

// adminError is an operation's refusal: a message for the operator and the HTTP status it travels
// with.
type adminError struct {
	status int
	msg    string
}

func (e *adminError) Error() string { return e.msg }

func notFound(format string, args ...any) error {
	return &adminError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &adminError{http.StatusConflict, fmt.Sprintf(format, args...)}
}

// --- the work, on an open store ---

// localAdmin does the work on an open store. The server holds one for its lifetime; the CLI one
// for a single command when the server is stopped.
type localAdmin struct {
	store storage.Store
	// keys returns the key set to list and rotate: the running server's own (so that a rotation
	// switches the serving process at once), or one opened on the store.
	keys func(ctx context.Context) (*keys.Set, error)
	log  *slog.Logger
	// clientMu serializes the read-modify-writes of clients (rotate-secret against remove).
	clientMu sync.Mutex
}

var _ admin = (*localAdmin)(nil)

func newLocalAdmin(store storage.Store, keySet func(context.Context) (*keys.Set, error), log *slog.Logger) *localAdmin {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &localAdmin{store: store, keys: keySet, log: log}
}

// newClientSecret returns a 256-bit random secret, base64url.
func newClientSecret() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails: crypto/rand crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

// hasSecret reports whether the client authenticates with a client secret.
func hasSecret(c storage.Client) bool {
	return !c.Public && c.AuthMethod != provider.AuthMethodPrivateKeyJWT
}

// redacted is c as the admin API shows it: without the secret hash.
func redacted(c storage.Client) storage.Client {
	c.SecretHash = ""
	return c
}

func (a *localAdmin) ListClients(ctx context.Context) ([]storage.Client, error) {
	cs, err := a.store.ListClients(ctx)
	if err != nil {
		return nil, err
	}
	for i := range cs {
		cs[i] = redacted(cs[i])
	}
	return cs, nil
}

func (a *localAdmin) GetClient(ctx context.Context, id string) (storage.Client, error) {
	c, err := a.store.GetClient(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Client{}, notFound("no client %q", id)
	}
	return redacted(c), err
}

func (a *localAdmin) AddClient(ctx context.Context, c storage.Client) (clientSecret, error) {
	c.SecretHash = ""
	if err := validateClient(c); err != nil {
		return clientSecret{}, err
	}
	var secret string
	if hasSecret(c) {
		secret = newClientSecret()
		c.SecretHash = storage.HashSecret(secret)
	}
	now := time.Now().UTC()
	c.Source, c.CreatedAt, c.UpdatedAt = storage.SourceCLI, now, now
	if err := a.store.CreateClient(ctx, c); err != nil {
		if errors.Is(err, storage.ErrAlreadyExists) {
			return clientSecret{}, conflict("client %q already exists", c.ID)
		}
		return clientSecret{}, err
	}
	a.log.InfoContext(ctx, "admin: client added", "client_id", c.ID, "type", clientType(c))
	return clientSecret{Client: redacted(c), Secret: secret}, nil
}

func (a *localAdmin) RemoveClient(ctx context.Context, id string) (storage.Client, error) {
	a.clientMu.Lock()
	defer a.clientMu.Unlock()
	c, err := a.store.GetClient(ctx, id)
	if err == nil {
		err = a.store.DeleteClient(ctx, id)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Client{}, notFound("no client %q", id)
	}
	if err != nil {
		return storage.Client{}, err
	}
	a.log.InfoContext(ctx, "admin: client removed", "client_id", id)
	return redacted(c), nil
}

func (a *localAdmin) RotateClientSecret(ctx context.Context, id string) (clientSecret, error) {
	a.clientMu.Lock()
	defer a.clientMu.Unlock()
	c, err := a.store.GetClient(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return clientSecret{}, notFound("no client %q", id)
	}
	if err != nil {
		return clientSecret{}, err
	}
	switch {
	case c.Source == storage.SourceConfig:
		return clientSecret{}, conflict("client %q comes from the config file: change its secret there and restart", id)
	case c.Public:
		return clientSecret{}, conflict("client %q is public: it has no secret (it proves itself with PKCE)", id)
	case c.AuthMethod == provider.AuthMethodPrivateKeyJWT:
		return clientSecret{}, conflict("client %q authenticates with private_key_jwt: it has no secret (rotate its own keys instead)", id)
	}
	secret := newClientSecret()
	c.SecretHash = storage.HashSecret(secret)
	c.UpdatedAt = time.Now().UTC()
	if err := a.store.PutClient(ctx, c); err != nil {
		return clientSecret{}, err
	}
	a.log.InfoContext(ctx, "admin: client secret rotated", "client_id", id)
	return clientSecret{Client: redacted(c), Secret: secret}, nil
}

func (a *localAdmin) ListUsers(ctx context.Context) ([]storage.User, error) {
	return a.store.ListUsers(ctx)
}

func (a *localAdmin) GetUser(ctx context.Context, subject string) (storage.User, error) {
	u, err := a.store.GetUser(ctx, subject)
	if errors.Is(err, storage.ErrNotFound) {
		return storage.User{}, notFound("no user %q", subject)
	}
	return u, err
}

func (a *localAdmin) DisableUser(ctx context.Context, subject string) (userChange, error) {
	ch, err := a.setDisabled(ctx, subject, true)
	if err != nil {
		return ch, err
	}
	// Revoke even when the user already was disabled: a token issued in a race with the first
	// disable goes too.
	n, err := a.store.RevokeUserTokens(ctx, subject)
	if err != nil {
		return ch, fmt.Errorf("user %q is disabled, but revoking their tokens failed (run disable again): %w", subject, err)
	}
	ch.RevokedFamilies = n
	a.log.InfoContext(ctx, "admin: user disabled", "sub", subject, "revoked_families", n)
	return ch, nil
}

func (a *localAdmin) EnableUser(ctx context.Context, subject string) (userChange, error) {
	ch, err := a.setDisabled(ctx, subject, false)
	if err == nil && ch.Changed {
		a.log.InfoContext(ctx, "admin: user enabled", "sub", subject)
	}
	return ch, err
}

func (a *localAdmin) setDisabled(ctx context.Context, subject string, disabled bool) (userChange, error) {
	var changed bool
	u, err := a.store.UpdateUser(ctx, subject, func(u *storage.User, exists bool) error {
		if !exists {
			return notFound("no user %q (people appear once they have signed in)", subject)
		}
		changed = u.Disabled != disabled
		u.Disabled = disabled
		if disabled {
			u.DisabledAt = time.Now() // SSO sessions older than this stay dead after enable
		}
		return nil
	})
	if err != nil {
		return userChange{}, err
	}
	return userChange{User: u, Changed: changed}, nil
}

func (a *localAdmin) ListKeys(ctx context.Context) ([]keyInfo, error) {
	ks, err := a.keys(ctx)
	if err != nil {
		return nil, err
	}
	return keyInfos(ks.Info()), nil
}

func (a *localAdmin) RotateKeys(ctx context.Context) ([]keyInfo, error) {
	ks, err := a.keys(ctx)
	if err != nil {
		return nil, err
	}
	if err := ks.Rotate(ctx); err != nil {
		return nil, err
	}
	a.log.InfoContext(ctx, "admin: signing key rotated", "kid", ks.SigningKey().ID())
	return keyInfos(ks.Info()), nil
}

func (a *localAdmin) Backup(ctx context.Context, w io.Writer) (int64, error) {
	return a.store.Backup(ctx, w)
}

// --- the server side ---

// adminHandler serves a over HTTP.
func adminHandler(a admin, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, fn func(r *http.Request) (int, any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			status, v, err := fn(r)
			if err != nil {
				writeAdminError(w, r, log, err)
				return
			}
			writeJSON(w, status, v)
		})
	}
	ok := func(v any, err error) (int, any, error) { return http.StatusOK, v, err }

	handle("GET /v1/clients", func(r *http.Request) (int, any, error) { return ok(a.ListClients(r.Context())) })
	handle("POST /v1/clients", func(r *http.Request) (int, any, error) {
		var c storage.Client
		if err := readJSON(r, &c); err != nil {
			return 0, nil, err
		}
		res, err := a.AddClient(r.Context(), c)
		return http.StatusCreated, res, err
	})
	handle("GET /v1/clients/{id}", func(r *http.Request) (int, any, error) {
		return ok(a.GetClient(r.Context(), r.PathValue("id")))
	})
	handle("DELETE /v1/clients/{id}", func(r *http.Request) (int, any, error) {
		return ok(a.RemoveClient(r.Context(), r.PathValue("id")))
	})
	handle("POST /v1/clients/{id}/rotate-secret", func(r *http.Request) (int, any, error) {
		return ok(a.RotateClientSecret(r.Context(), r.PathValue("id")))
	})
	handle("GET /v1/users", func(r *http.Request) (int, any, error) { return ok(a.ListUsers(r.Context())) })
	handle("GET /v1/users/{sub}", func(r *http.Request) (int, any, error) {
		return ok(a.GetUser(r.Context(), r.PathValue("sub")))
	})
	handle("POST /v1/users/{sub}/disable", func(r *http.Request) (int, any, error) {
		return ok(a.DisableUser(r.Context(), r.PathValue("sub")))
	})
	handle("POST /v1/users/{sub}/enable", func(r *http.Request) (int, any, error) {
		return ok(a.EnableUser(r.Context(), r.PathValue("sub")))
	})
	handle("GET /v1/keys", func(r *http.Request) (int, any, error) { return ok(a.ListKeys(r.Context())) })
	handle("POST /v1/keys/rotate", func(r *http.Request) (int, any, error) { return ok(a.RotateKeys(r.Context())) })
	mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) { serveBackup(w, r, a, log) })
	// Profiles for the operator (and `make bench -cpuprofile`): only on the socket, never on the
	// network port, since they reveal the process's memory and stacks.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAdminError(w, r, log, &adminError{http.StatusNotFound, "unknown admin request " + r.Method + " " + r.URL.Path +
			" (is the server an older or newer version than this command?)"})
	})
	return mux
}

// backupStatusTrailer tells the client whether the streamed copy is complete: "ok", or the error.
const backupStatusTrailer = "Backup-Status"

// serveBackup streams a's backup. The status is sent before the body, so a failure after the
// first byte can only be reported in the trailer; the client discards a copy without "ok" there.
func serveBackup(w http.ResponseWriter, r *http.Request, a admin, log *slog.Logger) {
	w.Header().Set("Trailer", backupStatusTrailer)
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &countingWriter{w: w}
	n, err := a.Backup(r.Context(), cw)
	if err != nil && cw.n == 0 {
		w.Header().Del("Trailer")
		writeAdminError(w, r, log, fmt.Errorf("backup: %w", err))
		return
	}
	if err != nil {
		log.ErrorContext(r.Context(), "admin: backup failed", "error", err, "bytes", cw.n)
		w.Header().Set(backupStatusTrailer, "failed: "+err.Error())
		return
	}
	log.InfoContext(r.Context(), "admin: backup written", "bytes", n)
	w.Header().Set(backupStatusTrailer, "ok")
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// errorBody is the admin API's error response.
type errorBody struct {
	Error string `json:"error"`
}

func writeAdminError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status := http.StatusInternalServerError
	var ae *adminError
	var ve *ValidationError
	switch {
	case errors.As(err, &ae):
		status = ae.status
	case errors.As(err, &ve):
		status = http.StatusBadRequest
	default:
		log.ErrorContext(r.Context(), "admin request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	writeJSON(w, status, errorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// maxAdminBody bounds a request body (a client with an inline key set is a few kB).
const maxAdminBody = 1 << 20

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &adminError{http.StatusBadRequest, "bad request body: " + err.Error()}
	}
	return nil
}

// adminServer is the admin API on its Unix socket.
type adminServer struct {
	srv  *http.Server
	ln   *adminListener
	done chan error
}

// startAdmin serves a on the socket at path until shutdown.
func startAdmin(path string, a admin, log *slog.Logger) (*adminServer, error) {
	ln, err := listenAdmin(path)
	if err != nil {
		return nil, err
	}
	s := &adminServer{
		srv: &http.Server{
			Handler:           adminHandler(a, log),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	log.Info("admin socket listening", "socket", path)
	return s, nil
}

// startServerAdmin starts the admin API of the serving process on cfg's admin socket; it rotates
// keySet itself, so the serving process switches keys at once. stop shuts it down (requests in
// flight get shutdownGrace) and removes the socket.
func startServerAdmin(cfg *Config, store storage.Store, keySet *keys.Set, log *slog.Logger) (stop func(), err error) {
	la := newLocalAdmin(store, func(context.Context) (*keys.Set, error) { return keySet, nil }, log)
	s, err := startAdmin(cfg.AdminSocket(), la, log)
	if err != nil {
		return nil, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := s.shutdown(ctx); err != nil {
			log.Warn("admin socket shutdown", "error", err)
		}
	}, nil
}

// shutdown stops accepting, lets requests in flight finish until ctx ends, and removes the socket.
func (s *adminServer) shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.ln.Close()
	if serr := <-s.done; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// adminListener is the admin socket's listener; Close removes the socket file if it still is ours.
type adminListener struct {
	*net.UnixListener
	path  string
	file  os.FileInfo
	close sync.Once
	err   error
}

func (l *adminListener) Close() error {
	l.close.Do(func() {
		l.err = l.UnixListener.Close()
		if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.file) {
			os.Remove(l.path)
		}
	})
	return l.err
}

// listenAdmin listens on a new Unix socket at path that only this user can connect to. A socket
// another process answers on is left alone (an error); a stale one, left by a process that died,
// is replaced. The socket is bound inside a fresh private directory, set to mode 0600 there and
// only then renamed into place, so no other user can connect even for an instant, whatever the
// umask.
func listenAdmin(path string) (*adminListener, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("admin socket %s: the file exists and is not a socket; remove it or set admin.socket", path)
	case err == nil:
		if answering(path) {
			return nil, fmt.Errorf("admin socket %s: another process answers on it (another wecom-oidc with the same admin.socket?)", path)
		}
		// Stale: the rename below replaces it.
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	private, err := os.MkdirTemp(dir, ".admin")
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return nil, fmt.Errorf("admin socket %s: the path is too long for a Unix socket (about 100 bytes at most); set admin.socket", path)
		}
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // the file moves; adminListener.Close removes it
	if err := os.Chmod(tmp, 0o600); err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		fi, err = os.Lstat(path)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return &adminListener{UnixListener: ln, path: path, file: fi}, nil
}

// answering reports whether a process accepts connections on the socket at path.
func answering(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// --- the CLI side ---

// remoteAdmin calls the running server's admin API.
type remoteAdmin struct {
	socket string
	http   *http.Client
}

var _ admin = (*remoteAdmin)(nil)

func newRemoteAdmin(socket string) *remoteAdmin {
	var d net.Dialer
	return &remoteAdmin{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}}}
}

// adminCallTimeout bounds every admin call but backup.
const adminCallTimeout = 30 * time.Second

func (c *remoteAdmin) call(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, adminCallTimeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	res, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("admin socket %s: bad response to %s %s: %w", c.socket, method, path, err)
	}
	return nil
}

// do sends the request and turns an error status into its message.
func (c *remoteAdmin) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://wecom-oidc"+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", c.socket, err)
	}
	if res.StatusCode < 300 {
		return res, nil
	}
	defer res.Body.Close()
	var e errorBody
	if json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("admin socket %s: %s %s: %s", c.socket, method, path, res.Status)
	}
	return nil, &adminError{res.StatusCode, e.Error}
}

func (c *remoteAdmin) ListClients(ctx context.Context) (cs []storage.Client, err error) {
	return cs, c.call(ctx, http.MethodGet, "/v1/clients", nil, &cs)
}

func (c *remoteAdmin) GetClient(ctx context.Context, id string) (cl storage.Client, err error) {
	return cl, c.call(ctx, http.MethodGet, "/v1/clients/"+url.PathEscape(id), nil, &cl)
}

func (c *remoteAdmin) AddClient(ctx context.Context, cl storage.Client) (res clientSecret, err error) {
	return res, c.call(ctx, http.MethodPost, "/v1/clients", cl, &res)
}

func (c *remoteAdmin) RemoveClient(ctx context.Context, id string) (cl storage.Client, err error) {
	return cl, c.call(ctx, http.MethodDelete, "/v1/clients/"+url.PathEscape(id), nil, &cl)
}

func (c *remoteAdmin) RotateClientSecret(ctx context.Context, id string) (res clientSecret, err error) {
	return res, c.call(ctx, http.MethodPost, "/v1/clients/"+url.PathEscape(id)+"/rotate-secret", nil, &res)
}

func (c *remoteAdmin) ListUsers(ctx context.Context) (us []storage.User, err error) {
	return us, c.call(ctx, http.MethodGet, "/v1/users", nil, &us)
}

func (c *remoteAdmin) GetUser(ctx context.Context, subject string) (u storage.User, err error) {
	return u, c.call(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(subject), nil, &u)
}

func (c *remoteAdmin) DisableUser(ctx context.Context, subject string) (ch userChange, err error) {
	return ch, c.call(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(subject)+"/disable", nil, &ch)
}

func (c *remoteAdmin) EnableUser(ctx context.Context, subject string) (ch userChange, err error) {
	return ch, c.call(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(subject)+"/enable", nil, &ch)
}

func (c *remoteAdmin) ListKeys(ctx context.Context) (ks []keyInfo, err error) {
	return ks, c.call(ctx, http.MethodGet, "/v1/keys", nil, &ks)
}

func (c *remoteAdmin) RotateKeys(ctx context.Context) (ks []keyInfo, err error) {
	return ks, c.call(ctx, http.MethodPost, "/v1/keys/rotate", nil, &ks)
}

// Backup copies the server's backup stream to w; it fails unless the server's trailer says the
// copy is complete.
func (c *remoteAdmin) Backup(ctx context.Context, w io.Writer) (int64, error) {
	res, err := c.do(ctx, http.MethodGet, "/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	n, err := io.Copy(w, res.Body)
	if err != nil {
		return n, fmt.Errorf("admin socket %s: backup: %w", c.socket, err)
	}
	if st := res.Trailer.Get(backupStatusTrailer); st != "ok" {
		if st == "" {
			st = "the server did not confirm the copy"
		}
		return n, fmt.Errorf("backup incomplete: %s", st)
	}
	return n, nil
}

// --- choosing the path ---

// openAdmin returns the running server's admin API when one answers on the configured socket;
// otherwise it opens the database directly. release frees what it opened.
func openAdmin(ctx context.Context, cfg *Config) (a admin, release func() error, err error) {
	socket := cfg.AdminSocket()
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := d.DialContext(dctx, "unix", socket)
	cancel()
	if err == nil {
		conn.Close()
		ra := newRemoteAdmin(socket)
		return ra, func() error { ra.http.CloseIdleConnections(); return nil }, nil
	}
	// Nothing listens: no file, a stale file, or a path no socket can have (too long).
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EINVAL) {
		// Something is there but will not let us in (permissions, another user's server): the
		// database is surely locked as well, so say what is wrong with the socket.
		return nil, nil, fmt.Errorf("cannot reach the running server on its admin socket: %w", err)
	}
	// etcd has no lock to wait for: the CLI works on the cluster beside any running replicas
	// (whose admin sockets are elsewhere, or which are all stopped).
	store, err := openStore(ctx, cfg.Storage)
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, nil, fmt.Errorf("database %s is in use by another process, and no wecom-oidc server answers on the admin socket %s "+
				"(a server still starting, one with a different admin.socket, or an older version?)", cfg.Storage.Path, socket)
		}
		return nil, nil, err
	}
	keySet := func(ctx context.Context) (*keys.Set, error) {
		return openKeys(ctx, cfg, store, slog.New(slog.DiscardHandler))
	}
	return newLocalAdmin(store, keySet, nil), store.Close, nil
}

// withAdmin runs fn on the admin API (see openAdmin) for one command.
func withAdmin(ctx context.Context, cfg *Config, fn func(admin) error) (err error) {
	a, release, err := openAdmin(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := release(); cerr != nil && err == nil {
			err = fmt.Errorf("close database: %w", cerr)
		}
	}()
	return fn(a)
}

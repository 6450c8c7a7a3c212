package provider

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Failed client authentication is limited so a client secret cannot be guessed online: after
// authFailureLimit failures within authFailureWindow, for one client id or from one address,
// every further attempt for that client or from that address is refused with 429 until the
// window ends — the right secret included, or the limit would tell the attacker when they
// guessed it. Successes do not count.
const (
	authFailureLimit  = 10
	authFailureWindow = time.Minute
	// authFailureKeys bounds the limiter's memory; past it, expired entries are dropped, and if
	// none are, the table is cleared (the per-address limit still holds after a flood of ids).
	authFailureKeys = 100_000
)

type failureLimiter struct {
	mu      sync.Mutex
	windows map[string]*failureWindow
	now     func() time.Time
}

type failureWindow struct {
	start time.Time
	count int
}

// blocked reports whether key is over the limit, and until when.
func (l *failureLimiter) blocked(key string) (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.windows[key]
	if !ok {
		return false, time.Time{}
	}
	end := w.start.Add(authFailureWindow)
	if !l.now().Before(end) {
		delete(l.windows, key)
		return false, time.Time{}
	}
	return w.count >= authFailureLimit, end
}

// fail counts one failed authentication for key.
func (l *failureLimiter) fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.windows == nil {
		l.windows = make(map[string]*failureWindow)
	}
	w, ok := l.windows[key]
	if !ok || !now.Before(w.start.Add(authFailureWindow)) {
		if len(l.windows) >= authFailureKeys {
			l.prune(now)
		}
		w = &failureWindow{start: now}
		l.windows[key] = w
	}
	w.count++
}

func (l *failureLimiter) prune(now time.Time) {
	for k, w := range l.windows {
		if !now.Before(w.start.Add(authFailureWindow)) {
			delete(l.windows, k)
		}
	}
	if len(l.windows) >= authFailureKeys {
		clear(l.windows)
	}
}

// authKeys names what a token, introspection or revocation request authenticates as: its
// client id (from Basic credentials, the form, or a client assertion's issuer is not read here —
// private_key_jwt failures are counted by address) and its remote address.
func (p *Provider) authKeys(r *http.Request) (client, addr string) {
	if id, _, ok := r.BasicAuth(); ok {
		client = id
	} else if r.ParseForm() == nil {
		client, _ = formValueFold(r.Form, "client_id") // as the library reads it
	}
	host := p.remoteAddr(r)
	// Client ids are at most 64 characters; a longer one is no client, and keying on it would let
	// an attacker park megabytes in the limiter. Its failures count against the address only.
	if client != "" && len(client) <= 64 {
		client = "client:" + client
	} else {
		client = ""
	}
	return client, "addr:" + host
}

// limitAuthFailures wraps a client-authenticating endpoint: refuses blocked clients and
// addresses, and counts a 401 answer (failed client authentication) against both.
func (p *Provider) limitAuthFailures(w http.ResponseWriter, r *http.Request, next http.Handler) {
	client, addr := p.authKeys(r)
	for _, key := range []string{client, addr} {
		if key == "" {
			continue
		}
		if blocked, until := p.authFailures.blocked(key); blocked {
			secs := int(time.Until(until).Seconds()) + 1
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			p.log.WarnContext(r.Context(), "client authentication rate-limited", "key", strings.SplitN(key, ":", 2)[0])
			writeOAuthError(w, http.StatusTooManyRequests, "invalid_client", "too many failed client authentications; retry later", "")
			return
		}
	}
	sw := &statusWriter{ResponseWriter: w}
	next.ServeHTTP(sw, r)
	if sw.status == http.StatusUnauthorized {
		if client != "" {
			p.authFailures.fail(client)
		}
		p.authFailures.fail(addr)
	}
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// remoteAddr is the address a request came from: the connection's peer, or — when the peer is a
// trusted reverse proxy — the last address in X-Forwarded-For that is not itself a trusted proxy.
// Behind a proxy every connection comes from the proxy, and one attacker's failures would
// otherwise lock out everyone.
func (p *Provider) remoteAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !p.trustedProxy(peer) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a malformed hop: stop at what can be trusted
		}
		if !p.trustedProxy(a) {
			return a.String()
		}
	}
	return host
}

func (p *Provider) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, pre := range p.cfg.TrustedProxies {
		if pre.Contains(a) {
			return true
		}
	}
	return false
}

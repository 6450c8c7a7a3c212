package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"time"
)

// errChecksFailed is returned, after the report, when -check is set and a target was missed.
var errChecksFailed = errors.New("a target was missed")

// secretEnv may hold the client secret for -url, keeping it off the command line.
const secretEnv = "WECOM_OIDC_BENCH_CLIENT_SECRET"

// options are the command line, validated.
type options struct {
	serverBin    string
	url          string // "": start serverBin
	clientID     string
	clientSecret string
	redirectURI  string
	pid          int

	concurrency     int
	duration        time.Duration
	warmup          time.Duration
	ceilingDuration time.Duration
	timeout         time.Duration
	phases          []string
	soak            time.Duration
	soakBaseline    time.Duration

	jsonPath   string
	cpuprofile string
	check      bool
	targets    targets
}

// parseOptions reads the flags; a mistake is an error naming it.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("wecom-oidc-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.serverBin, "server", "bin/wecom-oidc", "wecom-oidc binary to start in dev mode")
	fs.StringVar(&o.url, "url", "", "use this running server (a loopback URL) instead of starting one; needs -client-id, -client-secret and -redirect-uri")
	fs.StringVar(&o.clientID, "client-id", "", "with -url: a confidential client (client_secret_basic) of the running server")
	fs.StringVar(&o.clientSecret, "client-secret", "", "with -url: its secret (default $"+secretEnv+")")
	fs.StringVar(&o.redirectURI, "redirect-uri", "", "with -url: one of its registered redirect URIs (never requested)")
	fs.IntVar(&o.pid, "pid", 0, "with -url: the server's process id, to measure its CPU and memory")
	fs.IntVar(&o.concurrency, "concurrency", 32, "workers per phase")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "length of each measured phase")
	fs.DurationVar(&o.warmup, "warmup", 5*time.Second, "load before the measured phases (with -soak: before the soak, to reach the store's steady state), not reported")
	fs.DurationVar(&o.ceilingDuration, "ceiling-duration", 5*time.Second, "length of each ceiling measurement")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout of each HTTP request")
	phaseList := fs.String("phases", "logins,exchange,refresh,userinfo", "measured phases, comma-separated (run in this order: logins, exchange, refresh, userinfo)")
	fs.DurationVar(&o.soak, "soak", 0, "instead of the phases: a mixed load for this long, watching the server's memory, database and records")
	fs.DurationVar(&o.soakBaseline, "soak-baseline", time.Minute, "with -soak: compare the end with the sample taken this far into the soak")
	fs.StringVar(&o.jsonPath, "json", "", "also write the whole result as JSON to this file")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the server during the first measured phase (see -phases) to this file (a server we start)")
	fs.BoolVar(&o.check, "check", false, "exit non-zero, after the report, when a target is missed")
	fs.Float64Var(&o.targets.LoginsRatio, "target-logins", 0.55, "target: logins/s ≥ this × RS256 signatures/s")
	fs.Float64Var(&o.targets.RefreshRatio, "target-refresh", 0.85, "target: refreshes/s ≥ this × RS256 signatures/s")
	fs.Float64Var(&o.targets.UserinfoRatio, "target-userinfo", 0.55, "target: userinfo/s ≥ this × bare handler requests/s")
	fs.DurationVar(&o.targets.LoginP99, "target-login-p99", 60*time.Millisecond, "target: login latency p99 ≤ this")
	fs.Float64Var(&o.targets.PeakRSSMiB, "target-peak-mib", 48, "target: the server's peak RSS ≤ this many MiB")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.clientSecret == "" && getenv != nil {
		o.clientSecret = getenv(secretEnv)
	}
	phases, err := parsePhases(*phaseList)
	if err != nil {
		return o, err
	}
	o.phases = phases
	return o, o.validate()
}

// parsePhases reads -phases: known names, each once; they run in the fixed order regardless.
func parsePhases(list string) ([]string, error) {
	var out []string
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.ContainsFunc(phases, func(p struct{ name, ceiling string }) bool { return p.name == name }) {
			return nil, fmt.Errorf("-phases: unknown phase %q (known: logins, exchange, refresh, userinfo)", name)
		}
		if slices.Contains(out, name) {
			return nil, fmt.Errorf("-phases: %q given twice", name)
		}
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, errors.New("-phases: no phase")
	}
	return out, nil
}

func (o *options) validate() error {
	var problems []string
	if o.concurrency < 1 {
		problems = append(problems, "-concurrency must be at least 1")
	}
	if o.duration <= 0 || o.ceilingDuration <= 0 || o.timeout <= 0 {
		problems = append(problems, "-duration, -ceiling-duration and -timeout must be positive")
	}
	if o.warmup < 0 || o.soak < 0 || o.soakBaseline <= 0 {
		problems = append(problems, "-warmup and -soak cannot be negative, -soak-baseline must be positive")
	}
	if o.url != "" {
		base, err := loopbackURL(o.url)
		if err != nil {
			problems = append(problems, err.Error())
		}
		o.url = base
		if o.clientID == "" || o.clientSecret == "" || o.redirectURI == "" {
			problems = append(problems, "-url needs -client-id, -client-secret (or $"+secretEnv+") and -redirect-uri")
		}
		if o.pid < 0 {
			problems = append(problems, "-pid must be a process id")
		}
	} else if o.clientID != "" || o.clientSecret != "" || o.redirectURI != "" || o.pid != 0 {
		problems = append(problems, "-client-id, -client-secret, -redirect-uri and -pid go with -url")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// loopbackURL checks that raw is an http(s) URL on a loopback host (localhost, 127.0.0.0/8,
// ::1) and returns it without a trailing slash: this tool never sends load anywhere else.
func loopbackURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("-url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("-url %q: want http(s)://HOST:PORT", raw)
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", fmt.Errorf("-url %q: not a loopback host; this tool only loads loopback servers", raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// budget is the run's global deadline: every phase at its length plus what its preparation
// may take, the server's start and stop, and a margin. The program always ends within it.
func (o options) budget() time.Duration {
	b := readyTimeout + stopGrace + time.Minute
	if o.soak > 0 {
		return b + 2*prepareTimeout + o.warmup + o.soak + soakEvery
	}
	b += 2*o.ceilingDuration + o.warmup + prepareTimeout
	for _, name := range o.phases {
		b += o.duration + prepareTimeout
		if name == "exchange" {
			b += poolTime
		}
	}
	return b
}

// run is the whole program: it parses args, measures, prints the report to stdout (progress to
// stderr) and returns an error instead of exiting.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.budget())
	defer cancel()

	load := loadAverage() // before we add to it
	srv, err := o.connect(ctx, stderr)
	if err != nil {
		return err
	}
	defer srv.close(stderr)
	tr := newTransport(o.concurrency)
	defer tr.CloseIdleConnections()
	t, err := newTarget(ctx, srv, tr, o.timeout)
	if err != nil {
		return err
	}

	res := &result{
		Server:          describeServer(srv),
		ServerPID:       srv.pid,
		Concurrency:     o.concurrency,
		Duration:        o.duration.String(),
		Warmup:          o.warmup.String(),
		CeilingDuration: o.ceilingDuration.String(),
		GOMAXPROCS:      runtime.GOMAXPROCS(0),
		LoadAverage:     load,
	}
	if o.soak > 0 {
		res.Soak, err = runSoak(ctx, t, srv, o.concurrency, o.warmup, o.soak, o.soakBaseline, stdout)
		if err != nil {
			return err
		}
	} else if err := o.bench(ctx, srv, t, res, stderr); err != nil {
		// What was measured before the failure is still worth seeing.
		res.Memory = measureMemory(srv)
		writeReport(stdout, res)
		return err
	}
	res.Memory = measureMemory(srv)
	if o.check && res.Soak == nil {
		res.Checks = check(res, o.targets)
	}
	writeReport(stdout, res)
	if o.jsonPath != "" {
		if err := writeJSON(o.jsonPath, res); err != nil {
			return err
		}
	}
	if !srv.alive() {
		return errors.New("the server exited during the run")
	}
	if o.check && (failed(res.Checks) || res.Soak != nil && failed([]checkResult{res.Soak.Check})) {
		return errChecksFailed
	}
	return nil
}

// connect starts the server, or describes the one at -url (newTarget then reaches it).
func (o options) connect(ctx context.Context, stderr io.Writer) (*server, error) {
	if o.url == "" {
		logf(stderr, "starting %s dev", o.serverBin)
		return startServer(ctx, o.serverBin, o.soak > 0, stderr)
	}
	if o.cpuprofile != "" {
		logf(stderr, "warning: -cpuprofile needs a server this program starts; ignored with -url")
	}
	return &server{baseURL: o.url, clientID: o.clientID, clientSecret: o.clientSecret, redirectURI: o.redirectURI, pid: o.pid}, nil
}

func describeServer(s *server) string {
	if s.started {
		return fmt.Sprintf("wecom-oidc dev started at %s (pid %d)", s.baseURL, s.pid)
	}
	if s.pid > 0 {
		return fmt.Sprintf("running server at %s (pid %d)", s.baseURL, s.pid)
	}
	return fmt.Sprintf("running server at %s (no -pid: its CPU and memory are not measured)", s.baseURL)
}

// bench measures the ceilings, warms up, then runs the chosen phases in order.
func (o options) bench(ctx context.Context, srv *server, t *target, res *result, stderr io.Writer) error {
	meter := cpuMeter{serverPID: srv.pid}
	logf(stderr, "ceiling: RS256 signatures for %s", o.ceilingDuration)
	sigs, err := signCeiling(ctx, o.ceilingDuration)
	if err != nil {
		return err
	}
	logf(stderr, "ceiling: bare handler for %s", o.ceilingDuration)
	bare, err := bareCeiling(ctx, o.concurrency, o.ceilingDuration, o.timeout, cpuMeter{})
	if err != nil {
		return err
	}
	res.Ceilings = &ceilings{SignaturesPerSec: sigs, BareRequestsPerSec: bare.OpsPerSec, Bare: bare}

	if o.warmup > 0 {
		logf(stderr, "warm-up: logins for %s", o.warmup)
		if _, err := runPhase(ctx, phaseSpec{name: "warm-up", workers: o.concurrency, duration: o.warmup, prepare: loginsPrepare(t), meter: meter}); err != nil {
			return err
		}
	}

	profiled := false // -cpuprofile covers the first measured phase
	for _, ph := range phases {
		if !slices.Contains(o.phases, ph.name) {
			continue
		}
		spec := phaseSpec{name: ph.name, workers: o.concurrency, duration: o.duration, meter: meter}
		var poolErrors map[string]int
		var profileDone chan struct{}
		if o.cpuprofile != "" && srv.started && !profiled {
			profiled = true
			profileDone = make(chan struct{})
			spec.started = func() {
				go func() {
					defer close(profileDone)
					seconds := max(1, int((o.duration-time.Second)/time.Second))
					if err := srv.fetchProfile(ctx, seconds, o.cpuprofile); err != nil {
						logf(stderr, "warning: %v", err)
					} else {
						logf(stderr, "cpu profile of the %s phase, %ds, written to %s", ph.name, seconds, o.cpuprofile)
					}
				}()
			}
		}
		switch ph.name {
		case "logins":
			spec.prepare = loginsPrepare(t)
		case "exchange":
			size := o.concurrency * poolPerWorker
			logf(stderr, "exchange: obtaining up to %d codes", size)
			pool, errs, err := fillPool(ctx, t, o.concurrency, size)
			if err != nil {
				return err
			}
			poolErrors = errs
			logf(stderr, "exchange: %d codes", len(pool))
			spec.prepare = exchangePrepare(t, pool)
		case "refresh":
			spec.prepare = refreshPrepare(t)
		case "userinfo":
			spec.prepare = userinfoPrepare(t)
		}
		logf(stderr, "%s for %s", ph.name, o.duration)
		p, err := runPhase(ctx, spec)
		if profileDone != nil {
			<-profileDone
		}
		if err != nil {
			return err
		}
		for k, n := range poolErrors {
			p.Errors[k] += n
		}
		p.Ceiling = ph.ceiling
		if c := res.Ceilings.of(ph.ceiling); c > 0 {
			p.CeilingRatio = p.OpsPerSec / c
		}
		res.Phases = append(res.Phases, p)
	}
	return nil
}

// measureMemory reads the server's peak and current RSS and its database size, as far as known.
func measureMemory(s *server) *memoryResult {
	m := &memoryResult{}
	if s.pid > 0 {
		if pm, err := readProcMem(s.pid); err == nil {
			m.PeakRSS, m.RSS = &pm.Peak, &pm.Now
			if pm.Anon >= 0 && pm.File >= 0 {
				m.RSSAnon, m.RSSFile = &pm.Anon, &pm.File
			}
		}
	}
	if size, ok := s.dbSize(); ok {
		m.DBSize = &size
	}
	return m
}

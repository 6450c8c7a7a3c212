package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// recorder collects the timed steps of one op. A nil recorder records nothing (untimed setup
// work).
type recorder struct {
	steps []step
}

type step struct {
	label string
	d     time.Duration
}

func (r *recorder) add(label string, d time.Duration) {
	if r != nil {
		r.steps = append(r.steps, step{label, d})
	}
}

// opFunc runs one op, timing its requests in rec. nil: a success. errStop: the worker has no
// more work (the exchange phase's pool is empty), which is not an error.
type opFunc func(ctx context.Context, rec *recorder) error

var errStop = errors.New("no more work")

// prepareFunc runs for each worker before the clock starts, untimed (a login to get a refresh
// token, …), and returns the worker's op.
type prepareFunc func(ctx context.Context, worker int) (opFunc, error)

// phaseSpec is one measured phase: workers run their op in a loop for duration.
type phaseSpec struct {
	name     string
	workers  int
	duration time.Duration
	prepare  prepareFunc
	meter    cpuMeter
	started  func()        // when set, called as the clock starts
	progress *progressFeed // when set, fed as ops complete
}

// progressFeed counts ops as they complete, for a live display.
type progressFeed struct {
	ops    atomic.Int64
	errors atomic.Int64
}

// prepareTimeout bounds a phase's untimed preparation.
const prepareTimeout = 60 * time.Second

// errorPause is how long a worker waits after a failed op, so that a server refusing
// everything at once is not hammered in a hot loop.
const errorPause = 5 * time.Millisecond

// tally is one worker's (then one phase's) record: successful ops with their latencies, step
// by step, and errors by kind. Steps are those of successful ops only.
type tally struct {
	ops     int
	latency []time.Duration            // of each successful op: the sum of its steps
	steps   map[string][]time.Duration // by step label
	order   []string                   // step labels in the order first seen
	errors  map[string]int
}

func newTally() *tally {
	return &tally{steps: map[string][]time.Duration{}, errors: map[string]int{}}
}

func (t *tally) success(rec *recorder) {
	t.ops++
	var sum time.Duration
	for _, s := range rec.steps {
		if _, ok := t.steps[s.label]; !ok {
			t.order = append(t.order, s.label)
		}
		t.steps[s.label] = append(t.steps[s.label], s.d)
		sum += s.d
	}
	t.latency = append(t.latency, sum)
}

func (t *tally) merge(o *tally) {
	t.ops += o.ops
	t.latency = append(t.latency, o.latency...)
	for _, label := range o.order {
		if _, ok := t.steps[label]; !ok {
			t.order = append(t.order, label)
		}
		t.steps[label] = append(t.steps[label], o.steps[label]...)
	}
	for kind, n := range o.errors {
		t.errors[kind] += n
	}
}

// runPhase prepares the workers, then runs them for the phase's duration. An op counts only if
// it completes inside the phase; errors never stop a worker, they are counted by kind. The
// phase ends at its duration or, earlier, when every worker has stopped (errStop). CPU is read
// when the phase ends. A worker whose preparation fails sits the phase out; its error is
// counted as "setup: KIND". runPhase fails only if no worker could be prepared.
func runPhase(ctx context.Context, spec phaseSpec) (*phaseResult, error) {
	ops := make([]opFunc, spec.workers)
	setupErrs := make([]error, spec.workers)
	pctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	var wg sync.WaitGroup
	for i := range spec.workers {
		wg.Go(func() { ops[i], setupErrs[i] = spec.prepare(pctx, i) })
	}
	wg.Wait()
	cancel()
	total := newTally()
	ready := 0
	for i, err := range setupErrs {
		if err != nil {
			total.errors["setup: "+errorKind(err)]++
			ops[i] = nil
		} else if ops[i] != nil {
			ready++
		}
	}
	if ready == 0 {
		return nil, fmt.Errorf("%s: no worker could be prepared, the first failed with: %w", spec.name, setupErrs[0])
	}

	tallies := make([]*tally, spec.workers)
	stopped := make([]time.Time, spec.workers)
	before := spec.meter.sample()
	start := time.Now()
	end := start.Add(spec.duration)
	if spec.started != nil {
		spec.started()
	}
	for i, op := range ops {
		if op == nil {
			continue
		}
		wg.Go(func() { tallies[i], stopped[i] = work(ctx, op, end, spec.progress) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := time.NewTimer(spec.duration)
	select {
	case <-done:
	case <-timer.C:
	case <-ctx.Done():
	}
	timer.Stop()
	after := spec.meter.sample()
	<-done

	last := start
	for i, tl := range tallies {
		if tl != nil {
			total.merge(tl)
			last = maxTime(last, stopped[i])
		}
	}
	if last.After(end) {
		last = end
	}
	elapsed := last.Sub(start)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", spec.name, err)
	}
	return newPhaseResult(spec.name, total, elapsed, before, after), nil
}

// work is one worker's loop. It returns its tally and when it stopped.
func work(ctx context.Context, op opFunc, end time.Time, feed *progressFeed) (*tally, time.Time) {
	t := newTally()
	var rec recorder
	for ctx.Err() == nil && time.Now().Before(end) {
		rec.steps = rec.steps[:0]
		err := op(ctx, &rec)
		if errors.Is(err, errStop) {
			break
		}
		if ctx.Err() != nil || time.Now().After(end) {
			break // completed outside the phase: neither a success nor an error
		}
		if err != nil {
			t.errors[errorKind(err)]++
			if feed != nil {
				feed.errors.Add(1)
			}
			time.Sleep(errorPause)
			continue
		}
		t.success(&rec)
		if feed != nil {
			feed.ops.Add(1)
		}
	}
	return t, time.Now()
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// phases are the measured phases, in the order they run, each with its ceiling.
var phases = []struct {
	name    string
	ceiling string
}{
	{"logins", ceilingSign},
	{"exchange", ceilingSign},
	{"refresh", ceilingSign},
	{"userinfo", ceilingBare},
}

// loginsPrepare: each op is a full login.
func loginsPrepare(t *target) prepareFunc {
	return func(context.Context, int) (opFunc, error) {
		return func(ctx context.Context, rec *recorder) error {
			_, err := t.login(ctx, rec)
			return err
		}, nil
	}
}

// codePool is the exchange phase's supply of unredeemed codes.
type codePool chan grant

// poolPerWorker and poolTime bound the exchange phase's code pool: concurrency × 40 codes, or
// what can be made in poolTime. Codes live two minutes on the server.
const (
	poolPerWorker = 40
	poolTime      = 60 * time.Second
)

// fillPool obtains up to size codes, running logins up to the code with workers in parallel,
// for at most poolTime. It fails if it got none.
func fillPool(ctx context.Context, t *target, workers, size int) (codePool, map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, poolTime)
	defer cancel()
	pool := make(codePool, size)
	var left atomic.Int64
	left.Store(int64(size))
	var mu sync.Mutex
	errs := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				g, err := t.authorize(ctx, nil)
				if err != nil {
					left.Add(1)
					if ctx.Err() == nil {
						mu.Lock()
						errs["pool: "+errorKind(err)]++
						mu.Unlock()
						time.Sleep(errorPause)
					}
					continue
				}
				pool <- g
			}
		})
	}
	wg.Wait()
	close(pool)
	if len(pool) == 0 {
		return nil, errs, fmt.Errorf("exchange: no code obtained for the pool (errors: %v)", errs)
	}
	return pool, errs, nil
}

// exchangePrepare: each op redeems one code of the pool (ID token verified).
func exchangePrepare(t *target, pool codePool) prepareFunc {
	return func(context.Context, int) (opFunc, error) {
		return func(ctx context.Context, rec *recorder) error {
			g, ok := <-pool
			if !ok {
				return errStop
			}
			_, err := t.redeem(ctx, rec, g)
			return err
		}, nil
	}
}

// refreshPrepare: each worker logs in once, untimed; each op redeems its refresh token and
// keeps the rotated one. After a failure the token may be dead (or its family revoked), so the
// next op first logs in again, untimed.
func refreshPrepare(t *target) prepareFunc {
	return func(ctx context.Context, _ int) (opFunc, error) {
		tok, err := t.login(ctx, nil)
		if err != nil {
			return nil, err
		}
		valid := true
		return func(ctx context.Context, rec *recorder) error {
			if !valid {
				fresh, err := t.login(ctx, nil)
				if err != nil {
					return failf("relogin: "+errorKind(err), err)
				}
				tok, valid = fresh, true
			}
			next, err := t.refresh(ctx, rec, tok)
			if err != nil {
				valid = false
				return err
			}
			tok = next
			return nil
		}, nil
	}
}

// userinfoPrepare: each worker logs in once, untimed; each op calls userinfo with its access
// token.
func userinfoPrepare(t *target) prepareFunc {
	return func(ctx context.Context, _ int) (opFunc, error) {
		tok, err := t.login(ctx, nil)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, rec *recorder) error {
			return t.userinfo(ctx, rec, tok)
		}, nil
	}
}

// logf writes a progress line; progress goes to stderr so that stdout holds the report alone.
func logf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "# "+format+"\n", args...)
}

package provider

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// Metrics are the provider's Prometheus metrics, in a registry of their own (no global state).
// Its Call and TokenRefresh methods make it a WeCom connector observer (wecom.Observer).
type Metrics struct {
	reg *prometheus.Registry

	logins         *prometheus.CounterVec
	tokensIssued   *prometheus.CounterVec
	requests       *prometheus.HistogramVec
	backchannel    *prometheus.CounterVec
	wecomCalls     *prometheus.CounterVec
	wecomDuration  *prometheus.HistogramVec
	tokenRefreshes *prometheus.CounterVec
	crossDevices   *prometheus.CounterVec

	mu               sync.Mutex
	lastRefreshAt    time.Time
	lastRefreshError error
}

// Login results, the `result` label of wecom_oidc_logins_total.
const (
	loginSuccess       = "success"       // authenticated at WeCom
	loginSession       = "session"       // completed from the SSO session, no WeCom round trip
	loginDenied        = "denied"        // WeCom or policy refused the person
	loginUnavailable   = "unavailable"   // WeCom did not answer usefully
	loginMisconfigured = "misconfigured" // WeCom refused our setup
	loginError         = "error"         // our own failure (storage)
)

// Cross-device sign-ins, the labels of wecom_oidc_cross_device_total.
const (
	flowScan   = "scan"   // a computer's QR code scanned by a phone
	flowDevice = "device" // the device authorization grant

	crossStarted   = "started"   // scan: a phone opened the link; device: a device asked for a code
	crossCompleted = "completed" // scan: the computer signed in; device: the device got its tokens
	crossExpired   = "expired"   // scan: a QR code ran out unused; device: a poll came too late
	crossDenied    = "denied"    // cancelled or denied by the person, or refused by WeCom
)

// NewMetrics creates the metrics; store feeds the records gauge at scrape time (nil: none).
func NewMetrics(store storage.Store) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecom_oidc_logins_total", Help: "Logins by result and upstream.",
		}, []string{"result", "upstream"}),
		tokensIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecom_oidc_tokens_issued_total", Help: "Token responses by grant.",
		}, []string{"grant"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wecom_oidc_http_request_duration_seconds", Help: "HTTP requests by route, method and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "code"}),
		backchannel: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecom_oidc_backchannel_logouts_total", Help: "Back-channel logout deliveries by result.",
		}, []string{"result"}),
		wecomCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecom_oidc_wecom_api_calls_total", Help: "WeCom API calls by endpoint and errcode (-2: no usable answer).",
		}, []string{"endpoint", "errcode"}),
		wecomDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wecom_oidc_wecom_api_call_duration_seconds", Help: "WeCom API call latency by endpoint.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"endpoint"}),
		tokenRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecom_oidc_wecom_token_refreshes_total", Help: "WeCom access-token fetches (gettoken) by result.",
		}, []string{"result"}),
		crossDevices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wecom_oidc_cross_device_total", Help: "Cross-device sign-ins (flow: scan, device) by result: started, completed, expired, denied.",
		}, []string{"flow", "result"}),
	}
	m.reg.MustRegister(m.logins, m.tokensIssued, m.requests, m.backchannel, m.wecomCalls, m.wecomDuration, m.tokenRefreshes, m.crossDevices,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, flow := range []string{flowScan, flowDevice} { // every series from the start, at 0
		for _, result := range []string{crossStarted, crossCompleted, crossExpired, crossDenied} {
			m.crossDevices.WithLabelValues(flow, result)
		}
	}
	if store != nil {
		m.reg.MustRegister(&recordsCollector{store: store, desc: prometheus.NewDesc(
			"wecom_oidc_records", "Live records in the database by kind.", []string{"kind"}, nil)})
	}
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Call counts one WeCom API call (wecom.Observer).
func (m *Metrics) Call(endpoint string, errcode int, d time.Duration) {
	m.wecomCalls.WithLabelValues(endpoint, strconv.Itoa(errcode)).Inc()
	m.wecomDuration.WithLabelValues(endpoint).Observe(d.Seconds())
}

// TokenRefresh counts one gettoken attempt and remembers its outcome for /readyz
// (wecom.Observer).
func (m *Metrics) TokenRefresh(err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.tokenRefreshes.WithLabelValues(result).Inc()
	m.mu.Lock()
	m.lastRefreshAt, m.lastRefreshError = time.Now(), err
	m.mu.Unlock()
}

// lastTokenRefresh reports the latest gettoken outcome (zero time: none yet).
func (m *Metrics) lastTokenRefresh() (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastRefreshAt, m.lastRefreshError
}

func (m *Metrics) login(result, upstream string) { m.logins.WithLabelValues(result, upstream).Inc() }
func (m *Metrics) issued(grant string)           { m.tokensIssued.WithLabelValues(grant).Inc() }
func (m *Metrics) delivery(result string)        { m.backchannel.WithLabelValues(result).Inc() }
func (m *Metrics) crossDevice(flow, result string) {
	m.crossDevices.WithLabelValues(flow, result).Inc()
}

func (m *Metrics) request(route, method string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Observe(d.Seconds())
}

// recordsCollector reads the record counts from the store at scrape time.
type recordsCollector struct {
	store storage.Store
	desc  *prometheus.Desc
}

func (c *recordsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *recordsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stats, err := c.store.Stats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for kind, n := range stats {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), kind)
	}
}

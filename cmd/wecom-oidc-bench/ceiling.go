package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Ceiling names: what each phase's throughput is compared with.
const (
	ceilingSign = "RS256 signatures/s"
	ceilingBare = "bare handler req/s"
)

// signingInput is what go-jose signs for an ID token: base64url(header) "." base64url(claims),
// the claims a ~600-byte JSON object like the provider's ID tokens.
func signingInput() []byte {
	header := `{"alg":"RS256","kid":"` + strings.Repeat("k", 26) + `","typ":"JWT"}`
	claims := map[string]any{
		"iss": "http://127.0.0.1:8080", "sub": "zhangsan", "aud": []string{"bench"}, "azp": "bench",
		"exp": 1767225600, "iat": 1767222000, "auth_time": 1767222000, "nonce": randomString(16),
		"amr": []string{"wecom_web"}, "sid": randomString(16), "at_hash": randomString(16),
		"name": "张三", "preferred_username": "zhangsan", "nickname": "Zhang San",
		"email": "zhangsan@example.com", "email_verified": false,
		"groups":        []string{"研发中心", "平台组"},
		"wecom_corp_id": "wwsim0000000000001", "wecom_userid": "zhangsan",
		"department": []int{2, 3}, "position": "工程师",
		"picture": "https://wework.qpic.cn/wwpic/" + strings.Repeat("a", 48) + "/0",
	}
	payload, _ := json.Marshal(claims) // a map of plain values always marshals
	return []byte(base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(payload))
}

// signCeiling measures RS256 signatures per second with GOMAXPROCS goroutines and a fresh
// RSA-2048 key for d: SHA-256 then PKCS #1 v1.5, what the provider's go-jose does for every ID
// token. It is the most a login-shaped operation that signs once can reach on this machine.
func signCeiling(ctx context.Context, d time.Duration) (float64, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, fmt.Errorf("RS256 ceiling: %w", err)
	}
	input := signingInput()
	var count atomic.Int64
	var failed atomic.Value
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for ctx.Err() == nil {
				h := sha256.Sum256(input)
				if _, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:]); err != nil {
					failed.Store(err)
					return
				}
				if time.Now().After(end) {
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return 0, fmt.Errorf("RS256 ceiling: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("RS256 ceiling: %w", err)
	}
	return float64(count.Load()) / d.Seconds(), nil
}

// bareAnswer is the bare handler's answer: a ~300-byte JSON object shaped like userinfo's.
type bareAnswer struct {
	Sub               string   `json:"sub"`
	Name              string   `json:"name"`
	PreferredUsername string   `json:"preferred_username"`
	Email             string   `json:"email"`
	EmailVerified     bool     `json:"email_verified"`
	Groups            []string `json:"groups"`
	WeComCorpID       string   `json:"wecom_corp_id"`
	WeComUserID       string   `json:"wecom_userid"`
	Department        []int    `json:"department"`
	Position          string   `json:"position"`
	Picture           string   `json:"picture"`
}

// bareHandler answers every request with bareAnswer, encoded each time as a real handler would.
func bareHandler() http.Handler {
	answer := bareAnswer{
		Sub: "zhangsan", Name: "张三", PreferredUsername: "zhangsan", Email: "zhangsan@example.com",
		Groups: []string{"研发中心", "平台组"}, WeComCorpID: "wwsim0000000000001", WeComUserID: "zhangsan",
		Department: []int{2, 3}, Position: "工程师",
		Picture: "https://wework.qpic.cn/wwpic/" + strings.Repeat("a", 40) + "/0",
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(answer)
	})
}

// bareCeiling measures a bare net/http JSON handler, in this process on 127.0.0.1:0, hit by
// concurrency workers for d with the same HTTP client setup as the other phases: what serving
// a userinfo-sized answer costs with no work behind it, on this machine.
func bareCeiling(ctx context.Context, concurrency int, d, timeout time.Duration, meter cpuMeter) (*phaseResult, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bare handler: %w", err)
	}
	srv := &http.Server{Handler: bareHandler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}()

	u := "http://" + ln.Addr().String() + "/userinfo"
	tr := newTransport(concurrency)
	defer tr.CloseIdleConnections()
	t := &target{timeout: timeout, client: &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: noRedirects}}
	prepare := func(context.Context, int) (opFunc, error) {
		return func(ctx context.Context, rec *recorder) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return failf("request at bare", err)
			}
			req.Header.Set("Authorization", "Bearer "+strings.Repeat("t", 43))
			resp, body, err := t.do(t.client, rec, "bare", req)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || len(body) == 0 {
				return failf(fmt.Sprintf("http %d at bare", resp.StatusCode), nil)
			}
			return nil
		}, nil
	}
	res, err := runPhase(ctx, phaseSpec{name: "bare handler", workers: concurrency, duration: d, prepare: prepare, meter: meter})
	if err != nil {
		return nil, fmt.Errorf("bare handler: %w", err)
	}
	if res.Ops == 0 {
		return nil, errors.New("bare handler: no request succeeded")
	}
	return res, nil
}

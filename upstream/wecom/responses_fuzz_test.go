package wecom_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
)

// FuzzWeComResponses runs a connector against a fake WeCom that answers every API with fuzzed
// bytes: gettoken with `gettoken` (HTTP 200), auth/getuserinfo and auth/getuserdetail with
// `userinfo`, department/get with `dept`, and user/get, tag/list and tag/get with `user`, all but
// gettoken with the HTTP status `status` (any value outside 200–599 means 200). A fresh connector
// (token cache, department and tag caches) per input; retries do not sleep. Properties, for
// HandleCallback, Recheck, GetUser and Department:
//   - no panic, and each returns well within the time a connector may take (5 s; every answer
//     is immediate);
//   - HandleCallback and Recheck: an error is a *upstream.DeniedError of a known kind or is in
//     upstream.ErrUnavailable or upstream.ErrMisconfigured (errors.Is) — never unclassified; a
//     success has a non-empty UserID;
//   - GetUser and Department (the raw API calls, which leave refusals to their callers): an
//     error is in one of the two classes, or is WeCom's own *wecom.APIError with a non-zero
//     errcode;
//   - no error message and no log line carries the app secret or the login code (they travel in
//     the request URLs).
func FuzzWeComResponses(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add(s.status, s.tags, []byte(s.gettoken), []byte(s.userinfo), []byte(s.user), []byte(s.dept))
	}
	fz := newResponsesFuzz(f)
	f.Fuzz(fz.run)
}

const (
	okToken      = `{"errcode":0,"errmsg":"ok","access_token":"fuzz-access-token","expires_in":7200}`
	okUserInfo   = `{"errcode":0,"errmsg":"ok","userid":"zhangsan","user_ticket":"fuzz-ticket","expires_in":1800,"gender":"1","biz_mail":"zhangsan@corp.example"}`
	okUser       = `{"errcode":0,"errmsg":"ok","userid":"zhangsan","name":"张三","department":[2,3],"main_department":2,"status":1,"taglist":[{"tagid":1,"tagname":"管理员"}],"tagname":"管理员","userlist":[{"userid":"ZhangSan"}],"partylist":[3],"extattr":{"attrs":[{"type":0,"name":"工号","text":{"value":"A-1"}}]}}`
	okDepartment = `{"errcode":0,"errmsg":"ok","department":{"id":0,"name":"研发中心","name_en":"R&D","parentid":1}}`
)

// responseSeeds are the same inputs as testdata/fuzz/FuzzWeComResponses.
var responseSeeds = []struct {
	status                         uint16
	tags                           bool
	gettoken, userinfo, user, dept string
}{
	// Valid answers: a member signs in (with a user ticket, departments and tags).
	{200, true, okToken, okUserInfo, okUser, okDepartment},
	{200, false, okToken, `{"errcode":0,"errmsg":"ok","UserId":"zhangsan","DeviceId":"d"}`, okUser, `{"errcode":0,"errmsg":"ok","department":{"name":"模拟科技","parentid":0}}`},
	// Near-valid: refusals and faults WeCom documents.
	{200, false, okToken, `{"errcode":40029,"errmsg":"invalid code"}`, okUser, okDepartment},
	{200, false, okToken, `{"errcode":0,"errmsg":"ok","openid":"oAbc","external_userid":"wmX"}`, okUser, okDepartment},
	{200, false, okToken, okUserInfo, `{"errcode":0,"errmsg":"ok","userid":"zhangsan","name":"张三","status":2}`, okDepartment},
	{200, false, okToken, okUserInfo, `{"errcode":60111,"errmsg":"userid not found"}`, `{"errcode":60011,"errmsg":"no privilege"}`},
	{200, false, `{"errcode":40001,"errmsg":"invalid secret"}`, okUserInfo, okUser, okDepartment},
	{200, false, `{"errcode":-1,"errmsg":"system busy"}`, okUserInfo, okUser, okDepartment},
	{200, true, okToken, okUserInfo, `{"errcode":45009,"errmsg":"api freq out of limit"}`, `{"errcode":45033,"errmsg":"api concurrent out of limit"}`},
	{200, false, okToken, okUserInfo, `{"errcode":42001,"errmsg":"access_token expired"}`, okDepartment},
	{502, false, okToken, "<html><body>502 Bad Gateway</body></html>", "<html>", "<html>"},
	// Hostile: not JSON, wrong types, no token, empty ids, department cycles, other members.
	{200, false, `{"errcode":0,"errmsg":"ok"}`, okUserInfo, okUser, okDepartment},
	{200, false, okToken, `{"errcode":0,"errmsg":"ok"}`, okUser, okDepartment},
	{200, false, okToken, `{"errcode":"0","userid":["zhangsan"]}`, `[]`, `null`},
	{200, true, okToken, okUserInfo, `{"errcode":0,"userid":"","status":1,"department":[5,5,-1,9223372036854775807],"taglist":[{"tagid":1},{"tagid":1}]}`, `{"errcode":0,"department":{"id":0,"name":"","parentid":5}}`},
	{200, false, okToken, okUserInfo, `{"errcode":0,"userid":"lisi","status":1,"department":[2]}`, `{"errcode":0,"department":{"name":"x","parentid":2}}`},
	{200, false, okToken + "trailing", `{"errcode":0,"userid":"zhangsan"`, "\xff\xfe", `{"errcode":1e400}`},
	// Found: department/get answering for another id is an error without a class.
	{200, false, `{"access_token":"t"}`, "", "", `{"department":{"id":7}}`},
}

type responsesFuzz struct {
	srv    *httptest.Server
	seq    atomic.Int64
	runs   sync.Map // run id → *fuzzAnswers
	secret string   // the app secret: never in an error or a log line
	code   string   // the login code: likewise
}

type fuzzAnswers struct {
	status                         int
	gettoken, userinfo, user, dept []byte
}

func newResponsesFuzz(f *testing.F) *responsesFuzz {
	fz := &responsesFuzz{secret: "secret-" + rand.Text(), code: "code-" + rand.Text()}
	// Each input gets its own path prefix, /<run>/cgi-bin/…, so a call a previous input left
	// running in the background (a token refresh, a department lookup) is answered 404.
	fz.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		run, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		v, ok := fz.runs.Load(run)
		if !ok {
			http.NotFound(w, r)
			return
		}
		a := v.(*fuzzAnswers)
		status, body := a.status, a.user
		switch strings.TrimPrefix(rest, "cgi-bin/") {
		case "gettoken":
			status, body = http.StatusOK, a.gettoken
		case "auth/getuserinfo", "auth/getuserdetail":
			body = a.userinfo
		case "department/get":
			body = a.dept
		}
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	f.Cleanup(fz.srv.Close)
	return fz
}

// callBound is how long one connector call may take here: every answer is immediate and retries
// do not sleep, so anything near it is a hang.
const callBound = 5 * time.Second

var deniedKinds = []string{upstream.DeniedDeclined, upstream.DeniedNotMember, upstream.DeniedInactive, upstream.DeniedNotVisible, upstream.DeniedCodeInvalid}

func (fz *responsesFuzz) run(t *testing.T, status uint16, tags bool, gettoken, userinfo, user, dept []byte) {
	a := &fuzzAnswers{status: int(status), gettoken: gettoken, userinfo: userinfo, user: user, dept: dept}
	if a.status < 200 || a.status > 599 {
		a.status = http.StatusOK
	}
	run := strconv.FormatInt(fz.seq.Add(1), 10)
	fz.runs.Store(run, a)
	defer fz.runs.Delete(run)

	logs := &syncBuffer{}
	base := fz.srv.URL + "/" + run
	c, err := wecom.New(wecom.Config{
		CorpID: "wwfuzz", AgentID: "1000002", Secret: fz.secret, Scope: wecom.ScopePrivateInfo,
		APIBaseURL: base, OAuthBaseURL: base, LoginBaseURL: base, RedirectURL: redirectURL,
		HTTPClient: fz.srv.Client(), Timeout: 2 * time.Second, Tokens: newMemStore(), Tags: tags,
		Sleep:  func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*callBound)
	defer cancel()

	timed := func(name string, call func() error) error {
		start := time.Now()
		err := call()
		if d := time.Since(start); d > callBound {
			t.Fatalf("%s took %s", name, d)
		}
		if err != nil && (strings.Contains(err.Error(), fz.secret) || strings.Contains(err.Error(), fz.code)) {
			t.Fatalf("%s: the error carries the secret or the login code: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
		return err
	}

	var id upstream.Identity
	err = timed("HandleCallback", func() (err error) {
		id, err = c.HandleCallback(ctx, codeCallback(fz.code, uaClient))
		return err
	})
	t.Logf("HandleCallback: userid %q", id.UserID)
	checkIdentity(t, "HandleCallback", id, err)

	err = timed("Recheck", func() (err error) {
		id, err = c.Recheck(ctx, "zhangsan")
		return err
	})
	t.Logf("Recheck: userid %q", id.UserID)
	checkIdentity(t, "Recheck", id, err)

	checkAPIError(t, "GetUser", timed("GetUser", func() error {
		_, err := c.GetUser(ctx, "zhangsan")
		return err
	}))
	checkAPIError(t, "Department", timed("Department", func() error {
		_, err := c.Department(ctx, 2)
		return err
	}))

	if out := logs.String(); strings.Contains(out, fz.secret) || strings.Contains(out, fz.code) {
		t.Fatalf("a log line carries the secret or the login code:\n%s", out)
	}
}

// checkIdentity applies the properties of HandleCallback and Recheck.
func checkIdentity(t *testing.T, name string, id upstream.Identity, err error) {
	t.Helper()
	var denied *upstream.DeniedError
	switch {
	case err == nil:
		if id.UserID == "" {
			t.Fatalf("%s succeeded with an empty UserID: %+v", name, id)
		}
	case errors.As(err, &denied):
		if !slices.Contains(deniedKinds, denied.Kind) {
			t.Fatalf("%s: DeniedError of unknown kind %q: %v", name, denied.Kind, err)
		}
	case errors.Is(err, upstream.ErrUnavailable), errors.Is(err, upstream.ErrMisconfigured):
	default:
		t.Fatalf("%s: unclassified error (%T): %v", name, err, err)
	}
}

// checkAPIError applies the properties of the raw API calls.
func checkAPIError(t *testing.T, name string, err error) {
	t.Helper()
	var apiErr *wecom.APIError
	switch {
	case err == nil, errors.Is(err, upstream.ErrUnavailable), errors.Is(err, upstream.ErrMisconfigured):
	case errors.As(err, &apiErr) && apiErr.Code != 0:
	default:
		t.Fatalf("%s: unclassified error (%T): %v", name, err, err)
	}
}

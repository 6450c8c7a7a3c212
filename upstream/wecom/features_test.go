package wecom_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom"
	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

func TestDepartmentPaths(t *testing.T) {
	t.Run("root excluded, cached", func(t *testing.T) {
		e := MustEnv(t, func(c *wecomsim.Config) {
			c.Members = append(c.Members, wecomsim.Member{UserID: "boss", Name: "老板", Departments: []int64{1}, MainDepartment: 1, Status: 1})
		}, nil)
		c := e.MustConnector(t, nil)
		id := MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		want := []upstream.Department{
			{ID: 2, Name: "研发中心", Path: []string{"研发中心"}},
			{ID: 3, Name: "平台组", Path: []string{"研发中心", "平台组"}},
		}
		if !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("departments %+v\nwant %+v", id.Departments, want)
		}
		assertCalls(t, e, "department/get", 3) // 2, 3 and the root 1

		id = MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("second login: departments %+v", id.Departments)
		}
		id = MustLogin(t, c, e.sim.Code("wangwu", false, ""), uaBrowser)
		if want := []upstream.Department{{ID: 2, Name: "研发中心", Path: []string{"研发中心"}}}; !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("wangwu: departments %+v", id.Departments)
		}
		assertCalls(t, e, "department/get", 3) // no calls for the second login, nor wangwu's

		id = MustLogin(t, c, e.sim.Code("lisi", false, ""), uaBrowser)
		if want := []upstream.Department{{ID: 4, Name: "市场部", Path: []string{"市场部"}}}; !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("lisi: departments %+v", id.Departments)
		}
		assertCalls(t, e, "department/get", 4)

		id = MustLogin(t, c, e.sim.Code("boss", false, ""), uaBrowser)
		if d := id.Departments; len(d) != 1 || d[0].Name != "模拟科技" || d[0].Path == nil || len(d[0].Path) != 0 {
			t.Errorf("member of the root: departments %+v, want the root with an empty, non-nil path", d)
		}
		assertCalls(t, e, "department/get", 4)
	})
	t.Run("withheld parent", func(t *testing.T) {
		e := MustEnv(t, func(c *wecomsim.Config) { c.Members[2].Departments = []int64{3} }, nil) // wangwu in 平台组
		c := e.MustConnector(t, nil)
		e.sim.FailNext("department/get", 0)     // 3: answered
		e.sim.FailNext("department/get", 60011) // 2: withheld
		id := MustLogin(t, c, e.sim.Code("wangwu", false, ""), uaBrowser)
		if want := []upstream.Department{{ID: 3, Name: "平台组"}}; !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("departments %+v, want %+v (name, no path)", id.Departments, want)
		}
		assertCalls(t, e, "department/get", 2)
	})
	t.Run("failed parent", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, nil)
		e.sim.FailNext("department/get", 0)     // 4: answered
		e.sim.FailNext("department/get", 40058) // 1: fails
		id := MustLogin(t, c, e.sim.Code("lisi", false, ""), uaBrowser)
		if want := []upstream.Department{{ID: 4, Name: "市场部"}}; !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("departments %+v, want %+v (name, no path)", id.Departments, want)
		}
		if e.countLines("WARN", "department path unavailable") != 1 {
			t.Errorf("no warning:\n%s", e.logs)
		}
		id = MustLogin(t, c, e.sim.Code("lisi", false, ""), uaBrowser) // the failure is not cached
		if want := []upstream.Department{{ID: 4, Name: "市场部", Path: []string{"市场部"}}}; !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("second login: departments %+v, want %+v", id.Departments, want)
		}
	})
	t.Run("nameless department on the way", func(t *testing.T) {
		e := MustEnv(t, func(c *wecomsim.Config) { c.Departments[1].Name = "" }, nil) // 研发中心 withheld by name
		c := e.MustConnector(t, nil)
		id := MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if want := []upstream.Department{{ID: 2}, {ID: 3, Name: "平台组"}}; !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("departments %+v, want %+v", id.Departments, want)
		}
	})
	t.Run("cycle", func(t *testing.T) {
		e := MustEnv(t, func(c *wecomsim.Config) {
			c.Departments = append(c.Departments,
				wecomsim.Department{ID: 10, ParentID: 11, Name: "甲"},
				wecomsim.Department{ID: 11, ParentID: 12, Name: "乙"},
				wecomsim.Department{ID: 12, ParentID: 10, Name: "丙"})
			c.Members[2].Departments = []int64{10}
		}, nil)
		c := e.MustConnector(t, nil)
		id := MustLogin(t, c, e.sim.Code("wangwu", false, ""), uaBrowser)
		if want := []upstream.Department{{ID: 10, Name: "甲"}}; !reflect.DeepEqual(id.Departments, want) {
			t.Errorf("departments %+v, want %+v", id.Departments, want)
		}
		assertCalls(t, e, "department/get", 3)
		if !strings.Contains(e.logs.String(), "cycle") {
			t.Errorf("no warning about the cycle:\n%s", e.logs)
		}
	})
	t.Run("depth", func(t *testing.T) {
		// A chain of n departments below the root 1: 100 → 101 → … → 100+n-1.
		chain := func(n int) func(*wecomsim.Config) {
			return func(c *wecomsim.Config) {
				parent := int64(1)
				for i := range n {
					id := int64(100 + i)
					c.Departments = append(c.Departments, wecomsim.Department{ID: id, ParentID: parent, Name: "L" + string(rune('A'+i))})
					parent = id
				}
				c.Members[2].Departments = []int64{parent}
			}
		}
		e := MustEnv(t, chain(16), nil)
		c := e.MustConnector(t, nil)
		id := MustLogin(t, c, e.sim.Code("wangwu", false, ""), uaBrowser)
		if p := id.Departments[0].Path; len(p) != 16 || p[0] != "LA" || p[15] != "LP" {
			t.Errorf("16 levels: path %v", p)
		}
		e = MustEnv(t, chain(40), nil)
		c = e.MustConnector(t, nil)
		id = MustLogin(t, c, e.sim.Code("wangwu", false, ""), uaBrowser)
		if d := id.Departments[0]; d.Path != nil || d.Name == "" {
			t.Errorf("40 levels: department %+v, want a name and no path", d)
		}
		if got := e.sim.Calls("department/get"); got > 17 {
			t.Errorf("department/get calls = %d, want at most 17", got)
		}
	})
}

func TestTags(t *testing.T) {
	t.Run("by userid and by department, cached", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, func(c *wecom.Config) { c.Tags = true })
		for _, tt := range []struct {
			userID string
			want   []upstream.Tag
		}{
			{"zhangsan", []upstream.Tag{{ID: 1, Name: "管理员"}}},
			{"lisi", []upstream.Tag{{ID: 2, Name: "值班"}}},
			{"wangwu", nil},
			{"ZhangSan", []upstream.Tag{{ID: 1, Name: "管理员"}}},
		} {
			id := MustLogin(t, c, e.sim.Code(tt.userID, false, ""), uaBrowser)
			if !reflect.DeepEqual(id.Tags, tt.want) {
				t.Errorf("%s: tags %+v, want %+v", tt.userID, id.Tags, tt.want)
			}
		}
		assertCalls(t, e, "tag/list", 1)
		assertCalls(t, e, "tag/get", 2)
		e.clock.Advance(wecom.DefaultDepartmentTTL)
		MustLogin(t, c, e.sim.Code("lisi", false, ""), uaBrowser)
		assertCalls(t, e, "tag/list", 2)
		assertCalls(t, e, "tag/get", 4)
	})
	t.Run("off by default", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, nil)
		if id := MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser); id.Tags != nil {
			t.Errorf("tags %+v", id.Tags)
		}
		assertCalls(t, e, "tag/list", 0)
		assertCalls(t, e, "tag/get", 0)
	})
	t.Run("sorted by id", func(t *testing.T) {
		e := MustEnv(t, func(c *wecomsim.Config) {
			c.Tags = []wecomsim.Tag{
				{ID: 9, Name: "九", UserIDs: []string{"zhangsan"}},
				{ID: 3, Name: "三", PartyIDs: []int64{3}},
				{ID: 7, Name: "七", UserIDs: []string{"lisi"}},
				{ID: 5, Name: "五", UserIDs: []string{"lisi", "ZHANGSAN"}, PartyIDs: []int64{2}},
			}
		}, nil)
		c := e.MustConnector(t, func(c *wecom.Config) { c.Tags = true })
		id := MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if want := []upstream.Tag{{ID: 3, Name: "三"}, {ID: 5, Name: "五"}, {ID: 9, Name: "九"}}; !reflect.DeepEqual(id.Tags, want) {
			t.Errorf("tags %+v, want %+v", id.Tags, want)
		}
	})
	t.Run("concurrent logins share the lookups", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, func(c *wecom.Config) { c.Tags = true })
		codes := make([]string, 20)
		for i := range codes {
			codes[i] = e.sim.Code("zhangsan", false, "")
		}
		var wg sync.WaitGroup
		for _, code := range codes {
			wg.Go(func() {
				id, err := c.HandleCallback(context.Background(), codeCallback(code, uaBrowser))
				if err != nil || len(id.Tags) != 1 {
					t.Errorf("HandleCallback = %+v, %v", id, err)
				}
			})
		}
		wg.Wait()
		assertCalls(t, e, "tag/list", 1)
		assertCalls(t, e, "tag/get", 2)
	})
	t.Run("failures degrade", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, func(c *wecom.Config) { c.Tags = true })
		e.sim.SetHTTPStatus("tag/list", http.StatusBadGateway)
		id := MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if id.Tags != nil || id.Name != "张三" {
			t.Errorf("identity %+v, want one without tags", id)
		}
		if e.countLines("WARN", "continuing without tags") != 1 {
			t.Errorf("no warning:\n%s", e.logs)
		}
		e.sim.SetHTTPStatus("tag/list", 0)
		e.sim.SetGarbage("tag/get", true)
		id = MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser)
		if id.Tags != nil {
			t.Errorf("tags %+v, want none", id.Tags)
		}
		if e.countLines("WARN", "leaving the tag out") != 2 {
			t.Errorf("want two warnings:\n%s", e.logs)
		}
		e.sim.SetGarbage("tag/get", false)
		id = MustLogin(t, c, e.sim.Code("zhangsan", false, ""), uaBrowser) // failures are not cached
		if len(id.Tags) != 1 {
			t.Errorf("tags %+v after recovery", id.Tags)
		}
	})
	t.Run("tag members outside the visible range", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, func(c *wecom.Config) { c.Tags = true })
		e.sim.SetVisible("zhangsan", false) // tag/get leaves zhangsan out; user/get denies anyway
		_, err := e.login(c, "zhangsan")
		assertOutcome(t, err, upstream.DeniedNotVisible, 60011)
		assertCalls(t, e, "tag/list", 0)
	})
}

func TestRecheck(t *testing.T) {
	var _ upstream.Rechecker = (*wecom.Connector)(nil)

	t.Run("active", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, func(c *wecom.Config) { c.Tags = true })
		login := MustLogin(t, c, e.sim.Code("zhangsan", true, wecomsim.ScopePrivateInfo), uaClient)
		id, err := c.Recheck(context.Background(), "ZhangSan")
		if err != nil {
			t.Fatal(err)
		}
		want := login
		want.Method = ""
		want.Email, want.PersonalEmail, want.Mobile, want.Gender, want.Avatar, want.Address = "", "", "", "", "", ""
		if !reflect.DeepEqual(id, want) {
			t.Errorf("recheck\n got %+v\nwant %+v", id, want)
		}
		assertCalls(t, e, "user/get", 2)
		assertCalls(t, e, "department/get", 3) // from the cache
		assertCalls(t, e, "tag/get", 2)
		assertCalls(t, e, "auth/getuserinfo", 1)
	})
	t.Run("legacy app keeps user/get's contact fields", func(t *testing.T) {
		e := MustEnv(t, func(c *wecomsim.Config) { c.LegacyContactFields = true }, nil)
		c := e.MustConnector(t, nil)
		id, err := c.Recheck(context.Background(), "lisi")
		if err != nil || id.Email != "lisi@corp.example" || id.Mobile == "" || id.Departments[0].Name != "市场部" {
			t.Errorf("Recheck = %+v, %v", id, err)
		}
	})

	denied := []struct {
		name    string
		userID  string
		setup   func(*wecomsim.Sim)
		kind    string
		errcode int
	}{
		{"disabled", "lisi", func(s *wecomsim.Sim) { s.SetStatus("lisi", 2) }, upstream.DeniedInactive, 0},
		{"left", "lisi", func(s *wecomsim.Sim) { s.SetStatus("lisi", 5) }, upstream.DeniedInactive, 0},
		{"not activated", "lisi", func(s *wecomsim.Sim) { s.SetStatus("lisi", 4) }, upstream.DeniedInactive, 0},
		{"outside the visible range", "lisi", func(s *wecomsim.Sim) { s.SetVisible("lisi", false) }, upstream.DeniedNotVisible, 60011},
		{"deleted", "nobody", func(*wecomsim.Sim) {}, upstream.DeniedNotVisible, 60111},
		{"60021", "lisi", func(s *wecomsim.Sim) { s.FailNext("user/get", 60021) }, upstream.DeniedNotVisible, 60021},
		{"50002", "lisi", func(s *wecomsim.Sim) { s.FailNext("user/get", 50002) }, upstream.DeniedNotVisible, 50002},
		{"no userid", "", func(*wecomsim.Sim) {}, upstream.DeniedNotMember, 0},
	}
	for _, tt := range denied {
		t.Run(tt.name, func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			c := e.MustConnector(t, nil)
			if _, err := c.Recheck(context.Background(), "lisi"); err != nil {
				t.Fatal(err)
			}
			tt.setup(e.sim)
			_, err := c.Recheck(context.Background(), tt.userID)
			assertOutcome(t, err, tt.kind, tt.errcode)
			// Back in: the denial is not remembered.
			e.sim.SetStatus("lisi", 1)
			e.sim.SetVisible("lisi", true)
			if _, err := c.Recheck(context.Background(), "lisi"); err != nil {
				t.Errorf("after restoring: %v", err)
			}
		})
	}

	down := []struct {
		name  string
		setup func(*wecomsim.Sim)
		want  string
	}{
		{"HTTP 502", func(s *wecomsim.Sim) { s.SetHTTPStatus("user/get", http.StatusBadGateway) }, "502"},
		{"garbage", func(s *wecomsim.Sim) { s.SetGarbage("user/get", true) }, "not WeCom JSON"},
		{"latency past the timeout", func(s *wecomsim.Sim) { s.SetLatency("user/get", time.Hour) }, "no answer within"},
		{"gettoken down", func(s *wecomsim.Sim) { s.SetHTTPStatus("gettoken", http.StatusServiceUnavailable) }, "503"},
		{"system busy", func(s *wecomsim.Sim) {
			for range 4 {
				s.FailNext("user/get", -1)
			}
		}, "errcode -1"},
	}
	for _, tt := range down {
		t.Run(tt.name, func(t *testing.T) {
			e := MustEnv(t, nil, nil)
			// Only the latency case needs a short timeout; the others must not race a loaded CI.
			timeout := 5 * time.Second
			if tt.name == "latency past the timeout" {
				timeout = 100 * time.Millisecond
			}
			c := e.MustConnector(t, func(c *wecom.Config) { c.Timeout = timeout })
			tt.setup(e.sim)
			_, err := c.Recheck(context.Background(), "lisi")
			code := 0
			if tt.name == "system busy" {
				code = -1
			}
			assertOutcome(t, err, unavailable, code)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to say %q", err, tt.want)
			}
		})
	}
	t.Run("misconfigured", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, func(c *wecom.Config) { c.Secret = "wrong-secret-value" })
		_, err := c.Recheck(context.Background(), "lisi")
		assertOutcome(t, err, misconfigured, 40001)
	})
	t.Run("cancelled", func(t *testing.T) {
		e := MustEnv(t, nil, nil)
		c := e.MustConnector(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Recheck(ctx, "lisi")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled in the chain", err)
		}
		assertOutcome(t, err, unavailable, 0)
	})
}

func TestObserver(t *testing.T) {
	e := MustEnv(t, nil, nil)
	obs := &recordingObserver{}
	c := e.MustConnector(t, func(c *wecom.Config) { c.Observer = obs; c.Timeout = 100 * time.Millisecond })

	MustLogin(t, c, e.sim.Code("lisi", false, ""), uaBrowser)
	calls, refresh := obs.Take()
	want := []observed{{"gettoken", 0}, {"auth/getuserinfo", 0}, {"user/get", 0}, {"department/get", 0}, {"department/get", 0}}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("calls %v\nwant %v", calls, want)
	}
	if len(refresh) != 1 || refresh[0] != nil {
		t.Errorf("token refreshes %v, want one success", refresh)
	}

	e.sim.FailNext("user/get", -1)
	e.sim.FailNext("user/get", 45033)
	if _, err := c.Recheck(context.Background(), "lisi"); err != nil {
		t.Fatal(err)
	}
	calls, refresh = obs.Take()
	if want := []observed{{"user/get", -1}, {"user/get", 45033}, {"user/get", 0}}; !reflect.DeepEqual(calls, want) || refresh != nil {
		t.Errorf("retries: calls %v refreshes %v, want %v and none", calls, refresh, want)
	}

	e.sim.InvalidateTokens(42001)
	if _, err := c.Recheck(context.Background(), "lisi"); err != nil {
		t.Fatal(err)
	}
	calls, refresh = obs.Take()
	if want := []observed{{"user/get", 42001}, {"gettoken", 0}, {"user/get", 0}}; !reflect.DeepEqual(calls, want) || len(refresh) != 1 || refresh[0] != nil {
		t.Errorf("token rejected: calls %v refreshes %v, want %v and one success", calls, refresh, want)
	}

	for _, fault := range []struct {
		set, unset func()
	}{
		{func() { e.sim.SetHTTPStatus("user/get", 502) }, func() { e.sim.SetHTTPStatus("user/get", 0) }},
		{func() { e.sim.SetGarbage("user/get", true) }, func() { e.sim.SetGarbage("user/get", false) }},
		{func() { e.sim.SetLatency("user/get", time.Hour) }, func() { e.sim.SetLatency("user/get", 0) }},
	} {
		fault.set()
		if _, err := c.Recheck(context.Background(), "lisi"); err == nil {
			t.Error("no error")
		}
		fault.unset()
		if calls, _ := obs.Take(); !reflect.DeepEqual(calls, []observed{{"user/get", wecom.NoAnswer}}) {
			t.Errorf("calls %v, want one with errcode -2", calls)
		}
	}

	// A failed refresh is reported with its error.
	bad := e.MustConnector(t, func(c *wecom.Config) { c.Observer = obs; c.Secret = "wrong-secret-value"; c.Tokens = newMemStore() })
	if _, err := bad.Recheck(context.Background(), "lisi"); err == nil {
		t.Fatal("no error")
	}
	calls, refresh = obs.Take()
	if !reflect.DeepEqual(calls, []observed{{"gettoken", 40001}}) || len(refresh) != 1 || wecom.ErrCode(refresh[0]) != 40001 {
		t.Errorf("calls %v refreshes %v, want gettoken 40001 both", calls, refresh)
	}

	// A call the 45009 cool-down holds back is not a call.
	e.sim.FailNext("user/get", 45009)
	_, _ = c.Recheck(context.Background(), "lisi")
	_, _ = c.Recheck(context.Background(), "lisi")
	if calls, _ := obs.Take(); !slices.Equal(calls, []observed{{"user/get", 45009}}) {
		t.Errorf("calls %v, want one 45009", calls)
	}
}

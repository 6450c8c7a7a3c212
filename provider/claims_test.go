package provider

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream"
)

func TestClaimsMapping(t *testing.T) {
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	member := upstream.Identity{
		CorpID: "ww1", UserID: "zhangsan", Name: "张三",
		Email: "zs@corp.example", PersonalEmail: "zs@personal.example", Mobile: "+86 138",
		Departments: []upstream.Department{{ID: 2, Name: "研发中心", Path: []string{"研发中心"}}, {ID: 3, Name: "平台组", Path: []string{"研发中心", "平台组"}}, {ID: 7}},
		Tags:        []upstream.Tag{{ID: 1, Name: "管理员"}},
		Position:    "工程师", Alias: "San", Extra: map[string]string{"工号": "E1001"},
	}
	noMail := upstream.Identity{CorpID: "ww1", UserID: "wangwu", Name: "王五"}
	tests := []struct {
		name   string
		cfg    ClaimsConfig
		id     upstream.Identity
		scopes []string
		// groupShapes is the client's choice for `groups` (nil: names).
		groupShapes []string
		want        map[string]any // claims that must be present with these values
		absent      []string
	}{
		{
			name:   "defaults: biz_mail first, unverified, department names and ids",
			id:     member,
			scopes: []string{"openid", "profile", "email", "groups"},
			want: map[string]any{
				"sub": "zhangsan", "name": "张三", "preferred_username": "zhangsan",
				"email": "zs@corp.example", "email_verified": false,
				"groups": []any{"研发中心", "平台组", "7"}, "department": []any{2.0, 3.0, 7.0}, "wecom_corp_id": "ww1",
			},
		},
		{
			name:   "personal email preferred and trusted",
			cfg:    ClaimsConfig{EmailSources: []string{"email", "biz_mail"}, EmailVerified: true},
			id:     member,
			scopes: []string{"openid", "email", "phone"},
			want:   map[string]any{"email": "zs@personal.example", "email_verified": true, "phone_number": "+86 138", "phone_number_verified": true},
			absent: []string{"name", "groups"},
		},
		{
			name:   "no address from WeCom and no fallback: no email claims at all",
			id:     noMail,
			scopes: []string{"openid", "email", "phone"},
			absent: []string{"email", "email_verified", "phone_number"},
		},
		{
			name:   "fallback address is never verified, even when WeCom's are trusted",
			cfg:    ClaimsConfig{EmailFallback: "{userid}@corp.example", EmailVerified: true},
			id:     noMail,
			scopes: []string{"openid", "email"},
			want:   map[string]any{"email": "wangwu@corp.example", "email_verified": false},
		},
		{
			name:   "subject template and default groups, without duplicates",
			cfg:    ClaimsConfig{SubjectTemplate: "{corp_id}.{userid}", DefaultGroups: []string{"staff", "研发中心"}},
			id:     member,
			scopes: []string{"openid", "groups"},
			want:   map[string]any{"sub": "ww1.zhangsan", "groups": []any{"研发中心", "平台组", "7", "staff"}},
		},
		{
			name:        "groups as paths, then tags, then ids",
			id:          member,
			scopes:      []string{"openid", "groups"},
			groupShapes: []string{GroupsPaths, GroupsTags, GroupsIDs},
			want:        map[string]any{"groups": []any{"研发中心", "研发中心/平台组", "管理员", "2", "3", "7"}},
		},
		{
			name:   "extra claims from user/get fields and extattr",
			cfg:    ClaimsConfig{Extra: map[string]string{"employee_id": "extattr.工号", "nick": "alias", "title": "position", "missing": "extattr.nope"}},
			id:     member,
			scopes: []string{"openid", "profile"},
			want:   map[string]any{"employee_id": "E1001", "nick": "San", "title": "工程师"},
			absent: []string{"missing"},
		},
		{
			name:   "groups scope with no departments gives an empty list, not null",
			id:     noMail,
			scopes: []string{"openid", "groups"},
			want:   map[string]any{"groups": []any{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := newClaimsMapper(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			u, err := m.user(Upstream{ID: "corp"}, tt.id, storage.User{}, now)
			if err != nil {
				t.Fatal(err)
			}
			info := new(oidc.UserInfo)
			m.setUserinfo(info, u, tt.scopes, tt.groupShapes)
			raw, err := json.Marshal(info)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := got[k]; ok {
					t.Errorf("%s present (%v), want absent", k, got[k])
				}
			}
		})
	}
}

func TestClaimsMapperRefusesUnsafeSubjects(t *testing.T) {
	if _, err := newClaimsMapper(ClaimsConfig{SubjectTemplate: "wecom:{userid}"}); err == nil {
		t.Error("template with ':' accepted")
	}
	if _, err := newClaimsMapper(ClaimsConfig{SubjectTemplate: "{corp_id}"}); err == nil {
		t.Error("template without {userid} accepted")
	}
	m, _ := newClaimsMapper(ClaimsConfig{})
	if _, err := m.user(Upstream{}, upstream.Identity{CorpID: "ww1", UserID: "a:b"}, storage.User{}, time.Now()); !errors.Is(err, errBadSubject) {
		t.Errorf("userid with ':' gave %v", err)
	}
	prev := storage.User{FirstSeen: time.Unix(1, 0), Disabled: true}
	u, err := m.user(Upstream{}, upstream.Identity{CorpID: "ww1", UserID: "x"}, prev, time.Now())
	if err != nil || !u.FirstSeen.Equal(prev.FirstSeen) || !u.Disabled {
		t.Errorf("previous record's first-seen and operator flags not kept: %+v, %v", u, err)
	}
}

func TestSubjectTemplatesAcrossCorps(t *testing.T) {
	tests := []struct {
		templates, corps []string
		ok               bool
	}{
		{[]string{"{userid}"}, []string{"wwA"}, true},
		{[]string{"{userid}", "{userid}"}, []string{"wwA", "wwB"}, false},
		{[]string{"{corp_id}.{userid}", "{corp_id}.{userid}"}, []string{"wwA", "wwB"}, true},
		{[]string{"{corp_id}.{userid}", "{corp_id}.{userid}"}, []string{"wwA", "wwA"}, false},
		{[]string{"{corp_id}{userid}", "{corp_id}{userid}"}, []string{"wwA", "wwAB"}, false},
		{[]string{"{corp_id}.{userid}", "{userid}.{corp_id}"}, []string{"wwA", "wwB"}, false},
		{[]string{"a-{userid}", "b-{userid}"}, []string{"wwA", "wwB"}, true},
		{[]string{"a-{userid}", "a-b{userid}"}, []string{"wwA", "wwB"}, false},
		{[]string{"a-{userid}", "{userid}"}, []string{"wwA", "wwB"}, false},
	}
	for _, tt := range tests {
		err := CheckSubjectTemplates(tt.templates, tt.corps)
		if (err == nil) != tt.ok {
			t.Errorf("CheckSubjectTemplates(%q, %q) = %v, want ok=%v", tt.templates, tt.corps, err, tt.ok)
		}
	}
}

// TestUndisclosedFieldsAreKept: a desktop login (no consent door, no e-mail) after an in-client
// login with consent keeps the address learned then; a fallback address never displaces it.
func TestUndisclosedFieldsAreKept(t *testing.T) {
	now := time.Now()
	m, err := newClaimsMapper(ClaimsConfig{EmailFallback: "{userid}@fallback.example"})
	if err != nil {
		t.Fatal(err)
	}
	inClient := upstream.Identity{CorpID: "ww1", UserID: "zs", Email: "zs@corp.example", Mobile: "+86 1", Gender: "male"}
	first, _ := m.user(Upstream{}, inClient, storage.User{}, now)
	desktop := upstream.Identity{CorpID: "ww1", UserID: "zs", Name: "张三"}
	second, _ := m.user(Upstream{}, desktop, first, now)
	if second.Email != "zs@corp.example" || second.Mobile != "+86 1" || second.Gender != "male" || second.Name != "张三" {
		t.Fatalf("after a desktop login: %+v", second)
	}
	never, _ := m.user(Upstream{}, desktop, storage.User{}, now)
	if never.Email != "zs@fallback.example" || never.EmailVerified {
		t.Fatalf("without an earlier address the fallback applies, unverified: %+v", never)
	}
	again, _ := m.user(Upstream{}, desktop, never, now)
	if again.Email != "zs@fallback.example" {
		t.Fatalf("fallback recomputed: %+v", again)
	}
}

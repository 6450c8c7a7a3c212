package record

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// TestJSONUnchanged pins the JSON of every record type. The wanted strings are what the types'
// definitions in storage/bolt and storage/etcd produced (identically) before they moved here,
// at commit 1cfc4e0: databases written then must still read, and records written now must still
// read there.
func TestJSONUnchanged(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	t1 := time.Date(2026, 3, 2, 8, 0, 0, 0, time.FixedZone("CST", 8*3600))
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"code-zero", Code{}, `{"auth_request_id":"","expires_at":"0001-01-01T00:00:00Z"}`},
		{"code", Code{AuthRequestID: "ar1", ExpiresAt: t0, Used: true},
			`{"auth_request_id":"ar1","expires_at":"2026-03-01T12:00:00.123456789Z","used":true}`},
		{"access-zero", Access{},
			`{"id":"","client_id":"","subject":"","scopes":null,"created_at":"0001-01-01T00:00:00Z","expires_at":"0001-01-01T00:00:00Z"}`},
		{"access", Access{AccessToken: storage.AccessToken{ID: "at_1", ClientID: "app", Subject: "sub", Audience: []string{"app", "api"},
			Scopes: []string{"openid"}, FamilyID: "fam", AuthRequestID: "ar1", CreatedAt: t0, ExpiresAt: t1}, Revoked: true},
			`{"id":"at_1","client_id":"app","subject":"sub","audience":["app","api"],"scopes":["openid"],"family_id":"fam","auth_request_id":"ar1","created_at":"2026-03-01T12:00:00.123456789Z","expires_at":"2026-03-02T08:00:00+08:00","revoked":true}`},
		{"family-zero", Family{}, `{"expires_at":"0001-01-01T00:00:00Z"}`},
		{"family", Family{Revoked: true, ExpiresAt: t1, SessionID: "sess", AuthRequestID: "ar1"},
			`{"revoked":true,"expires_at":"2026-03-02T08:00:00+08:00","session_id":"sess","auth_request_id":"ar1"}`},
		{"link-zero", Link{}, `{"expires_at":"0001-01-01T00:00:00Z"}`},
		{"link", Link{ExpiresAt: t0}, `{"expires_at":"2026-03-01T12:00:00.123456789Z"}`},
		{"user-code-zero", UserCode{}, `{"device_code_hash":"","expires_at":"0001-01-01T00:00:00Z"}`},
		{"user-code", UserCode{DeviceCodeHash: "dch", ExpiresAt: t1},
			`{"device_code_hash":"dch","expires_at":"2026-03-02T08:00:00+08:00"}`},
		{"owner-zero", TokenOwner{},
			`{"subject":"","family_id":"","expires_at":"0001-01-01T00:00:00Z","rotated_at":null,"revoked":false}`},
		{"owner", TokenOwner{Subject: "sub", FamilyID: "fam", ExpiresAt: t0, RotatedAt: &t1, Revoked: true},
			`{"subject":"sub","family_id":"fam","expires_at":"2026-03-01T12:00:00.123456789Z","rotated_at":"2026-03-02T08:00:00+08:00","revoked":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := Encode(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(raw) != tt.want {
				t.Errorf("Encode = %s\nwant      %s", raw, tt.want)
			}
			// And back: decoding the stored form and encoding it again changes nothing.
			back := reflect.New(reflect.TypeOf(tt.v))
			if err := json.Unmarshal(raw, back.Interface()); err != nil {
				t.Fatal(err)
			}
			again, err := Encode(back.Elem().Interface())
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != tt.want {
				t.Errorf("re-encoded = %s\nwant         %s", again, tt.want)
			}
		})
	}
}

func TestDecodeNamesTheKey(t *testing.T) {
	_, err := Decode[Code]("codes/h1", []byte("{"))
	if err == nil || !strings.HasPrefix(err.Error(), `decode record "codes/h1": `) {
		t.Errorf("Decode(string key) error = %v", err)
	}
	_, err = Decode[Code]([]byte("h1"), []byte("{"))
	if err == nil || !strings.HasPrefix(err.Error(), `decode record "h1": `) {
		t.Errorf("Decode([]byte key) error = %v", err)
	}
}

func TestExpiry(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if !Expired(now, now) || Expired(now.Add(time.Nanosecond), now) || !Expired(time.Time{}, now) {
		t.Error("Expired: a record is dead from its ExpiresAt on")
	}
	for _, tt := range []struct {
		t    time.Time
		want uint64
	}{
		{time.Time{}, 0},
		{time.Unix(-1, 0), 0},
		{time.Unix(0, 0), 0},
		{time.Unix(1, 5), 1_000_000_005},
		{time.Date(2262, 4, 12, 0, 0, 0, 0, time.UTC), math.MaxUint64},
		{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxUint64},
	} {
		if got := ExpiryNanos(tt.t); got != tt.want {
			t.Errorf("ExpiryNanos(%v) = %d, want %d", tt.t, got, tt.want)
		}
	}
	if exp, err := ExpiryOf([]byte(`{"id":"x","expires_at":"2026-03-01T12:00:00Z"}`)); err != nil || !exp.Equal(now) {
		t.Errorf("ExpiryOf = %v, %v", exp, err)
	}
	if _, err := ExpiryOf([]byte(`[`)); err == nil {
		t.Error("ExpiryOf of malformed JSON succeeded")
	}
}

func TestNewTokens(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rotated := t0
	at := storage.AccessToken{ID: "at", FamilyID: "f", AuthRequestID: "ar", ExpiresAt: t0.Add(2 * time.Hour)}
	rt := storage.RefreshToken{Hash: "h", FamilyID: "f", SessionID: "s", ExpiresAt: t0.Add(time.Hour), RotatedAt: &rotated}

	tok, err := NewTokens(at, &rt)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Refresh.RotatedAt != nil || rt.RotatedAt == nil {
		t.Error("the new family's first token must be stored unrotated, and the caller's left alone")
	}
	want := Family{ExpiresAt: at.ExpiresAt, SessionID: "s", AuthRequestID: "ar"}
	if tok.Family != want {
		t.Errorf("Family = %+v, want %+v (the later expiry of the two tokens)", tok.Family, want)
	}
	if f := tok.ExistingFamily(); f != "" {
		t.Errorf("ExistingFamily = %q for an access token of the new family", f)
	}

	other := at
	other.FamilyID = "g"
	if tok, err := NewTokens(other, &rt); err != nil || tok.ExistingFamily() != "g" || !tok.Family.ExpiresAt.Equal(rt.ExpiresAt) {
		t.Errorf("access token of another family: %+v, %v", tok, err)
	}
	if tok, err := NewTokens(other, nil); err != nil || tok.ExistingFamily() != "g" || tok.Refresh != nil {
		t.Errorf("access token alone: %+v, %v", tok, err)
	}
	if _, err := NewTokens(storage.AccessToken{}, nil); err == nil {
		t.Error("an access token without id was accepted")
	}
	for _, bad := range []storage.RefreshToken{{FamilyID: "f"}, {Hash: "h"}} {
		if _, err := NewTokens(at, &bad); err == nil {
			t.Errorf("refresh token %+v was accepted", bad)
		}
	}
}

func TestRotation(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rotated := t0
	next := storage.RefreshToken{Hash: "h2", FamilyID: "f", ExpiresAt: t0.Add(time.Hour), RotatedAt: &rotated}
	at := storage.AccessToken{ID: "at", FamilyID: "f", ExpiresAt: t0.Add(2 * time.Hour)}
	r, err := NewRotation(next, at)
	if err != nil {
		t.Fatal(err)
	}
	if r.Next.RotatedAt != nil {
		t.Error("the next token must be stored unrotated")
	}
	if got := r.FamilyExpiry(); !got.Equal(at.ExpiresAt) {
		t.Errorf("FamilyExpiry = %v, want the access token's later expiry", got)
	}
	if err := r.Check(storage.RefreshToken{FamilyID: "f"}); err != nil {
		t.Errorf("Check within the family: %v", err)
	}
	if err := r.Check(storage.RefreshToken{FamilyID: "g"}); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("Check of another family = %v, want ErrConflict", err)
	}

	loose := at
	loose.FamilyID = ""
	r, _ = NewRotation(next, loose)
	if got := r.FamilyExpiry(); !got.Equal(next.ExpiresAt) {
		t.Errorf("FamilyExpiry with an access token outside the family = %v, want the next token's", got)
	}
	other := at
	other.FamilyID = "g"
	r, _ = NewRotation(next, other)
	if err := r.Check(storage.RefreshToken{FamilyID: "f"}); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("Check with an access token of another family = %v, want ErrConflict", err)
	}
	if _, err := NewRotation(storage.RefreshToken{}, at); err == nil {
		t.Error("a next token without hash was accepted")
	}
	if _, err := NewRotation(next, storage.AccessToken{}); err == nil {
		t.Error("an access token without id was accepted")
	}
}

func TestChecks(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := CheckFamily("f", Family{}, false); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("CheckFamily(unknown) = %v, want ErrRevoked", err)
	}
	if err := CheckFamily("f", Family{Revoked: true}, true); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("CheckFamily(revoked) = %v, want ErrRevoked", err)
	}
	if err := CheckFamily("f", Family{ExpiresAt: now.Add(-time.Hour)}, true); err != nil {
		t.Errorf("CheckFamily(expired, not revoked) = %v: the token's expiry decides", err)
	}
	if err := CheckNotReplayed("ar", Link{ExpiresAt: now.Add(time.Minute)}, true, now); !errors.Is(err, storage.ErrRevoked) {
		t.Errorf("CheckNotReplayed(live marker) = %v, want ErrRevoked", err)
	}
	if err := CheckNotReplayed("ar", Link{ExpiresAt: now}, true, now); err != nil {
		t.Errorf("CheckNotReplayed(expired marker) = %v", err)
	}
	if err := CheckNotReplayed("ar", Link{}, false, now); err != nil {
		t.Errorf("CheckNotReplayed(no marker) = %v", err)
	}
	if !(Family{ExpiresAt: now.Add(time.Second)}).Live(now) || (Family{ExpiresAt: now}).Live(now) ||
		(Family{Revoked: true, ExpiresAt: now.Add(time.Hour)}).Live(now) {
		t.Error("Family.Live: unexpired and not revoked")
	}
	if !(Code{AuthRequestID: "ar"}).DeletedWith("ar") || (Code{AuthRequestID: "ar", Used: true}).DeletedWith("ar") ||
		(Code{AuthRequestID: "other"}).DeletedWith("ar") {
		t.Error("Code.DeletedWith: only the request's unredeemed codes")
	}
}

func TestCompletion(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := CompletionSession(storage.Completion{NewSession: &storage.Session{}}); err == nil {
		t.Error("a new session without id was accepted")
	}
	c := storage.Completion{Subject: "sub", AuthTime: t0, AMR: []string{"pwd"}, SessionID: "old",
		NewSession: &storage.Session{ID: "new"}, ExpiresAt: t0.Add(time.Hour)}
	ar := storage.AuthRequest{ID: "ar", ExpiresAt: t0.Add(time.Minute)}
	if err := Complete(&ar, c); err != nil {
		t.Fatal(err)
	}
	if !ar.Done || ar.Subject != "sub" || ar.SessionID != "new" || !ar.ExpiresAt.Equal(c.ExpiresAt) {
		t.Errorf("completed request = %+v", ar)
	}
	done := ar
	if err := Complete(&ar, storage.Completion{Subject: "other"}); !errors.Is(err, storage.ErrConflict) || !reflect.DeepEqual(ar, done) {
		t.Errorf("Complete of a done request = %v, request %+v", err, ar)
	}
	ar = storage.AuthRequest{ExpiresAt: t0.Add(2 * time.Hour)}
	c.NewSession = nil
	if err := Complete(&ar, c); err != nil || ar.SessionID != "old" || !ar.ExpiresAt.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("Complete from an existing session = %v, %+v (the expiry only moves later)", err, ar)
	}

	sess := storage.Session{Clients: []string{"a"}}
	if !AddClient(&sess, "b") || AddClient(&sess, "a") || !reflect.DeepEqual(sess.Clients, []string{"a", "b"}) {
		t.Errorf("AddClient: each client once, in order; got %v", sess.Clients)
	}
}

func TestUserTokens(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	live, dead := now.Add(time.Hour), now
	u := NewUserTokens("sub")
	u.AddRefresh(TokenOwner{Subject: "sub", FamilyID: "f1", ExpiresAt: dead}) // expired or rotated: its family still goes
	u.AddRefresh(TokenOwner{Subject: "other", FamilyID: "f2", ExpiresAt: live})
	u.AddAccess("a1", TokenOwner{Subject: "sub", FamilyID: "f3", ExpiresAt: live}, now)
	u.AddAccess("a2", TokenOwner{Subject: "sub", ExpiresAt: live}, now)
	u.AddAccess("a3", TokenOwner{Subject: "sub", ExpiresAt: dead}, now)
	u.AddAccess("a4", TokenOwner{Subject: "sub", ExpiresAt: live, Revoked: true}, now)
	u.AddAccess("a5", TokenOwner{Subject: "other", ExpiresAt: live}, now)
	if want := map[string]bool{"f1": true, "f3": true}; !reflect.DeepEqual(u.Families, want) {
		t.Errorf("Families = %v, want %v", u.Families, want)
	}
	if want := []string{"a2"}; !reflect.DeepEqual(u.Loose, want) {
		t.Errorf("Loose = %v, want %v", u.Loose, want)
	}
}

func TestCounts(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	liveFamilies := map[string]bool{"live": true, "dead": false}
	var asked []string
	family := func(id string) bool { asked = append(asked, id); return liveFamilies[id] }
	counts := map[string]Count{}
	for _, c := range Counts() {
		counts[c.Stat] = c
	}
	if len(counts) != 9 || counts[StatClients].Live != nil || counts[StatUsers].Live != nil {
		t.Fatalf("Counts = %+v", counts)
	}
	tests := []struct {
		stat, raw string
		want      bool
	}{
		{StatKeys, `{"id":"k","not_after":"0001-01-01T00:00:00Z"}`, true},
		{StatKeys, `{"id":"k"}`, true},
		{StatKeys, `{"id":"k","not_after":"2026-03-01T12:00:01Z"}`, true},
		{StatKeys, `{"id":"k","not_after":"2026-03-01T12:00:00Z"}`, false},
		{StatSessions, `{"expires_at":"2026-03-01T12:00:01Z"}`, true},
		{StatSessions, `{"expires_at":"2026-03-01T12:00:00Z"}`, false},
		{StatAuthRequests, `{"expires_at":"2026-03-01T12:00:01Z"}`, true},
		{StatAccessTokens, `{"expires_at":"2026-03-01T13:00:00Z"}`, true},
		{StatAccessTokens, `{"expires_at":"2026-03-01T13:00:00Z","family_id":"live"}`, true},
		{StatAccessTokens, `{"expires_at":"2026-03-01T13:00:00Z","family_id":"dead"}`, false},
		{StatAccessTokens, `{"expires_at":"2026-03-01T13:00:00Z","family_id":"unknown"}`, false},
		{StatAccessTokens, `{"expires_at":"2026-03-01T13:00:00Z","revoked":true}`, false},
		{StatRefreshTokens, `{"expires_at":"2026-03-01T13:00:00Z","family_id":"live"}`, true},
		{StatRefreshTokens, `{"expires_at":"2026-03-01T13:00:00Z","family_id":"dead"}`, false},
		{StatRefreshTokens, `{"expires_at":"2026-03-01T13:00:00Z","family_id":"live","rotated_at":"2026-03-01T11:00:00Z"}`, false},
		{StatScanLogins, `{"handle_hash":"h","subject":"sub","status":"approved","expires_at":"2026-03-01T12:00:01Z"}`, true},
		{StatScanLogins, `{"handle_hash":"h","expires_at":"2026-03-01T12:00:00Z"}`, false},
		{StatDeviceAuths, `{"device_code_hash":"d","status":"issued","expires_at":"2026-03-01T12:00:01Z"}`, true},
		{StatDeviceAuths, `{"device_code_hash":"d","expires_at":"2026-03-01T12:00:00Z"}`, false},
	}
	for _, tt := range tests {
		got, err := counts[tt.stat].Live([]byte(tt.raw), now, family)
		if err != nil || got != tt.want {
			t.Errorf("%s: Live(%s) = %v, %v; want %v", tt.stat, tt.raw, got, err, tt.want)
		}
	}
	asked = nil
	if _, err := counts[StatAccessTokens].Live([]byte(`{"expires_at":"2026-03-01T12:00:00Z","family_id":"live"}`), now, family); err != nil || asked != nil {
		t.Errorf("Live asked about the family of an expired token (%v, %v)", asked, err)
	}
	if _, err := counts[StatSessions].Live([]byte(`[`), now, family); err == nil {
		t.Error("Live of malformed JSON succeeded")
	}
}

func TestSwept(t *testing.T) {
	var chunk storage.GCResult
	for _, kind := range []string{KindAuthRequests, KindCodes, KindCodes, KindLoginStates, KindAccessTokens,
		KindRefreshTokens, KindSessions, KindFamilies, KindARTokens, KindSessionFamilies, KindARCodes, KindUpstream,
		KindAssertions, KindScanLogins, KindDeviceAuths, KindDeviceAuths, KindDeviceUserCodes} {
		Swept(&chunk, kind)
	}
	want := storage.GCResult{AuthRequests: 1, Codes: 2, LoginStates: 1, AccessTokens: 1, RefreshTokens: 1, Sessions: 1,
		ScanLogins: 1, DeviceAuths: 2}
	if chunk != want {
		t.Errorf("Swept = %+v, want %+v (families, links, assertions, user codes and upstream tokens are not counted)", chunk, want)
	}
	res := want
	AddSwept(&res, chunk)
	if res.Total() != 2*want.Total() || res.Codes != 4 || res.ScanLogins != 2 || res.DeviceAuths != 4 {
		t.Errorf("AddSwept = %+v", res)
	}
}

func TestCrossDeviceChecks(t *testing.T) {
	exp := time.Date(2026, 3, 1, 12, 5, 0, 0, time.UTC)
	scan := storage.ScanLogin{HandleHash: "h", AuthRequestID: "ar", Status: "pending", ExpiresAt: exp}
	dev := storage.DeviceAuthorization{DeviceCodeHash: "d", UserCode: "BCDF-GHJK", ClientID: "cli", Status: "pending", ExpiresAt: exp}
	scanWith := func(f func(*storage.ScanLogin)) storage.ScanLogin { s := scan; f(&s); return s }
	devWith := func(f func(*storage.DeviceAuthorization)) storage.DeviceAuthorization { d := dev; f(&d); return d }
	tests := []struct {
		name     string
		err      error
		ok       bool
		conflict bool // the error must wrap ErrConflict
	}{
		{"scan", CheckScanLogin(scan), true, false},
		{"scan without handle", CheckScanLogin(scanWith(func(s *storage.ScanLogin) { s.HandleHash = "" })), false, false},
		{"scan without auth request", CheckScanLogin(scanWith(func(s *storage.ScanLogin) { s.AuthRequestID = "" })), false, false},
		{"scan without expiry", CheckScanLogin(scanWith(func(s *storage.ScanLogin) { s.ExpiresAt = time.Time{} })), false, false},
		{"scan update", CheckScanLoginUpdate("h", scanWith(func(s *storage.ScanLogin) { s.Status = "finished" })), true, false},
		{"scan update of the key", CheckScanLoginUpdate("h", scanWith(func(s *storage.ScanLogin) { s.HandleHash = "h2" })), false, true},
		{"scan update dropping the expiry", CheckScanLoginUpdate("h", scanWith(func(s *storage.ScanLogin) { s.ExpiresAt = time.Time{} })), false, false},
		{"device", CheckDeviceAuthorization(dev), true, false},
		{"device without hash", CheckDeviceAuthorization(devWith(func(d *storage.DeviceAuthorization) { d.DeviceCodeHash = "" })), false, false},
		{"device without user code", CheckDeviceAuthorization(devWith(func(d *storage.DeviceAuthorization) { d.UserCode = "" })), false, false},
		{"device without client", CheckDeviceAuthorization(devWith(func(d *storage.DeviceAuthorization) { d.ClientID = "" })), false, false},
		{"device without expiry", CheckDeviceAuthorization(devWith(func(d *storage.DeviceAuthorization) { d.ExpiresAt = time.Time{} })), false, false},
		{"device update", CheckDeviceAuthorizationUpdate(dev, devWith(func(d *storage.DeviceAuthorization) { d.Status, d.Interval = "approved", 10 })), true, false},
		{"device update of the key", CheckDeviceAuthorizationUpdate(dev, devWith(func(d *storage.DeviceAuthorization) { d.DeviceCodeHash = "d2" })), false, true},
		{"device update of the user code", CheckDeviceAuthorizationUpdate(dev, devWith(func(d *storage.DeviceAuthorization) { d.UserCode = "XXXX-XXXX" })), false, true},
		{"device update dropping the client", CheckDeviceAuthorizationUpdate(dev, devWith(func(d *storage.DeviceAuthorization) { d.ClientID = "" })), false, false},
	}
	for _, tt := range tests {
		if (tt.err == nil) != tt.ok || errors.Is(tt.err, storage.ErrConflict) != tt.conflict {
			t.Errorf("%s: error %v; want ok %v, ErrConflict %v", tt.name, tt.err, tt.ok, tt.conflict)
		}
	}
}

func TestHoldsUserCode(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	d := storage.DeviceAuthorization{DeviceCodeHash: "d", UserCode: "BCDF-GHJK", ExpiresAt: now.Add(time.Nanosecond)}
	expired := d
	expired.ExpiresAt = now
	tests := []struct {
		name  string
		d     storage.DeviceAuthorization
		found bool
		code  string
		want  bool
	}{
		{"live, same code", d, true, "BCDF-GHJK", true},
		{"absent", storage.DeviceAuthorization{}, false, "BCDF-GHJK", false},
		{"expired at now", expired, true, "BCDF-GHJK", false},
		{"another code", d, true, "BCDF-GHJL", false},
	}
	for _, tt := range tests {
		if got := HoldsUserCode(tt.d, tt.found, tt.code, now); got != tt.want {
			t.Errorf("%s: HoldsUserCode = %v, want %v", tt.name, got, tt.want)
		}
	}
}

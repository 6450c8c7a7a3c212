package wecomsim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Errcodes the simulator answers, as WeCom numbers them.
const (
	errSystemBusy     = -1
	errInvalidSecret  = 40001
	errInvalidCorpID  = 40013
	errInvalidToken   = 40014
	errInvalidCode    = 40029
	errInvalidAgentID = 40056
	errInvalidParam   = 40058
	errInvalidTagID   = 40068
	errSuiteToken     = 40082
	errMissingToken   = 41001
	errMissingCorpID  = 41002
	errMissingSecret  = 41004
	errMissingCode    = 41008
	errMissingUserID  = 41009
	errTokenExpired   = 42001
	errSuiteExpired   = 42009
	errRequirePOST    = 43002
	errFreqLimit      = 45009
	errConcurrency    = 45033
	errDataFormat     = 47001
	errAPIForbidden   = 48002
	errDomain         = 50001
	errOutOfRange     = 50002
	errAppDisabled    = 50003
	errNoPrivilege    = 60011
	errUntrustedIP    = 60020
	errNotInRange     = 60021
	errUserNotFound   = 60111
	errInvalidPartyID = 60123
	errDomainICP      = 80001
	errDomainQuota    = 85004
	errDomainVerify   = 85005
	errAgentNotAuth   = 301002
)

// response is a JSON answer; every answer carries errcode and errmsg.
type response map[string]any

func errorResponse(code int) response {
	return response{"errcode": code, "errmsg": errmsg(code)}
}

func okResponse(fields response) response {
	fields["errcode"] = 0
	fields["errmsg"] = "ok"
	return fields
}

// errmsg imitates WeCom's messages, hint and help link included. Clients must not parse it.
func errmsg(code int) string {
	text := map[int]string{
		errSystemBusy:     "system busy",
		errInvalidSecret:  "invalid credential",
		errInvalidCorpID:  "invalid corpid",
		errInvalidToken:   "invalid access_token",
		errInvalidCode:    "invalid code",
		errInvalidAgentID: "invalid agentid",
		errInvalidParam:   "invalid parameter",
		errInvalidTagID:   "invalid tagid",
		errSuiteToken:     "invalid suite_token",
		errMissingToken:   "access_token missing",
		errMissingCorpID:  "corpid missing",
		errMissingSecret:  "corpsecret missing",
		errMissingCode:    "missing oauth code",
		errMissingUserID:  "missing userid",
		errTokenExpired:   "access_token expired",
		errSuiteExpired:   "suite_access_token expired",
		errRequirePOST:    "require POST method",
		errFreqLimit:      "api freq out of limit",
		errConcurrency:    "api concurrent out of limit",
		errDataFormat:     "data format error",
		errAPIForbidden:   "api forbidden",
		errDomain:         "redirect_url domain not match",
		errOutOfRange:     "user out of privilege range",
		errAppDisabled:    "app is disabled",
		errNoPrivilege:    "no privilege to access/modify contact/party/agent",
		errUntrustedIP:    "not allow to access from your ip",
		errNotInRange:     "userid not in app's visible range",
		errUserNotFound:   "invalid string value `userid`. userid not found",
		errInvalidPartyID: "invalid party id",
		errDomainICP:      "domain not ICP filed or invalid",
		errDomainQuota:    "trusted domain change quota exceeded",
		errDomainVerify:   "trusted domain ownership not verified",
		errAgentNotAuth:   "agent not authorized for this access_token",
	}[code]
	if text == "" {
		text = "simulated error"
	}
	return fmt.Sprintf("%s, hint: [wecomsim], more info at https://open.work.weixin.qq.com/devtool/query?e=%d", text, code)
}

// api counts the call, applies the network faults and FailNext, runs h and writes its answer with HTTP 200, as WeCom
// does even for errors.
func (s *Sim) api(w http.ResponseWriter, r *http.Request, name string, h func(*http.Request) response) {
	if !s.arrive(w, r, name) {
		return
	}
	s.mu.Lock()
	var fail int // 0: answer normally
	if q := s.failNext[name]; len(q) > 0 {
		fail, s.failNext[name] = q[0], q[1:]
	}
	s.mu.Unlock()

	resp := errorResponse(fail)
	if fail == 0 {
		resp = h(r)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(resp) // a failed write means the client left
}

func (s *Sim) gettoken(r *http.Request) response {
	q := r.URL.Query()
	switch {
	case q.Get("corpid") == "":
		return errorResponse(errMissingCorpID)
	case q.Get("corpid") != s.cfg.CorpID:
		return errorResponse(errInvalidCorpID)
	case q.Get("corpsecret") == "":
		return errorResponse(errMissingSecret)
	case q.Get("corpsecret") != s.cfg.Secret:
		return errorResponse(errInvalidSecret)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	for t, v := range s.tokens { // sweep long-dead tokens; recently expired ones still say 40014
		if now.After(v.expires.Add(s.cfg.TokenTTL)) {
			delete(s.tokens, t)
		}
	}
	tok := randomString()
	s.tokens[tok] = simToken{expires: now.Add(s.cfg.TokenTTL)}
	return okResponse(response{"access_token": tok, "expires_in": int64(s.cfg.TokenTTL.Seconds())})
}

// checkTokenLocked returns the errcode the request's access token earns, or 0. s.mu must be held.
func (s *Sim) checkTokenLocked(r *http.Request) int {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		return errMissingToken
	}
	t, ok := s.tokens[tok]
	switch {
	case !ok:
		return errInvalidToken
	case t.failWith != 0:
		return t.failWith
	case !s.cfg.Now().Before(t.expires):
		return errInvalidToken // WeCom reports an expired token as invalid, not as 42001
	}
	return 0
}

// getUserInfo exchanges a login code, once. old selects user/getuserinfo's CamelCase keys.
func (s *Sim) getUserInfo(r *http.Request, old bool) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code := s.checkTokenLocked(r); code != 0 {
		return errorResponse(code)
	}
	codeParam := r.URL.Query().Get("code")
	if codeParam == "" {
		return errorResponse(errMissingCode)
	}
	c, ok := s.codes[codeParam]
	delete(s.codes, codeParam) // single use, whatever happens next
	now := s.cfg.Now()
	if !ok || !now.Before(c.expires) {
		return errorResponse(errInvalidCode)
	}
	m := s.members[c.userID]
	if m == nil || m.NonMember {
		if old {
			return okResponse(response{"OpenId": s.openID(c.userID), "DeviceId": deviceID(c.userID)})
		}
		return okResponse(response{"openid": s.openID(c.userID)})
	}
	resp := okResponse(response{"userid": m.UserID})
	if old {
		resp = okResponse(response{"UserId": m.UserID, "DeviceId": deviceID(c.userID)})
	}
	if c.inClient && c.scope == ScopePrivateInfo && !m.OutsideVisibleRange {
		ticket := randomString()
		s.tickets[ticket] = simTicket{userID: c.userID, expires: now.Add(TicketTTL)}
		for t, v := range s.tickets {
			if !now.Before(v.expires) {
				delete(s.tickets, t)
			}
		}
		resp["user_ticket"] = ticket
		resp["expires_in"] = int64(TicketTTL.Seconds())
	}
	return resp
}

// openID is a non-member's stable, corp-scoped id.
func (s *Sim) openID(userKey string) string {
	sum := sha256.Sum256([]byte(s.cfg.CorpID + "/" + userKey))
	return "oSim" + hex.EncodeToString(sum[:12])
}

func deviceID(userKey string) string {
	sum := sha256.Sum256([]byte("device/" + userKey))
	return hex.EncodeToString(sum[:8])
}

// getUserDetail answers the sensitive fields a user_ticket unlocks. Like WeCom, it has no name.
func (s *Sim) getUserDetail(r *http.Request) response {
	if r.Method != http.MethodPost {
		return errorResponse(errRequirePOST)
	}
	var body struct {
		UserTicket string `json:"user_ticket"`
	}
	decodeErr := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if code := s.checkTokenLocked(r); code != 0 {
		return errorResponse(code)
	}
	if decodeErr != nil {
		return errorResponse(errDataFormat)
	}
	t, ok := s.tickets[body.UserTicket]
	if !ok || !s.cfg.Now().Before(t.expires) {
		return errorResponse(errInvalidCode)
	}
	m := s.members[t.userID]
	if m == nil {
		return errorResponse(errUserNotFound)
	}
	if m.OutsideVisibleRange {
		return errorResponse(errNoPrivilege)
	}
	return okResponse(response{
		"userid":   m.UserID,
		"gender":   genderOf(m),
		"avatar":   m.Avatar,
		"qr_code":  "https://qrcode.example.com/wecomsim/" + m.UserID,
		"mobile":   m.Mobile,
		"email":    m.Email,
		"biz_mail": m.BizMail,
		"address":  m.Address,
	})
}

func genderOf(m *Member) string {
	if m.Gender == "" {
		return "0"
	}
	return m.Gender
}

// getUser answers user/get. Contact fields only for LegacyContactFields apps.
func (s *Sim) getUser(r *http.Request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code := s.checkTokenLocked(r); code != 0 {
		return errorResponse(code)
	}
	userID := r.URL.Query().Get("userid")
	if userID == "" {
		return errorResponse(errMissingUserID)
	}
	m := s.members[strings.ToLower(userID)]
	if m == nil || m.NonMember {
		return errorResponse(errUserNotFound)
	}
	if m.OutsideVisibleRange {
		return errorResponse(errNoPrivilege)
	}
	names := make([]string, 0, len(m.ExtAttrs))
	for name := range m.ExtAttrs {
		names = append(names, name)
	}
	slices.Sort(names)
	attrs := make([]response, 0, len(names))
	for _, name := range names {
		attrs = append(attrs, response{"type": 0, "name": name, "text": response{"value": m.ExtAttrs[name]}})
	}
	depts := slices.Clone(m.Departments)
	if depts == nil {
		depts = []int64{}
	}
	resp := okResponse(response{
		"userid":            m.UserID,
		"name":              m.Name,
		"department":        depts,
		"order":             make([]int, len(depts)),
		"is_leader_in_dept": make([]int, len(depts)),
		"direct_leader":     []string{},
		"main_department":   m.MainDepartment,
		"position":          m.Position,
		"alias":             m.Alias,
		"status":            m.Status,
		"extattr":           response{"attrs": attrs},
	})
	if s.cfg.LegacyContactFields {
		resp["email"] = m.Email
		resp["biz_mail"] = m.BizMail
		resp["mobile"] = m.Mobile
		resp["gender"] = genderOf(m)
		resp["avatar"] = m.Avatar
		resp["thumb_avatar"] = m.Avatar
		resp["address"] = m.Address
	}
	return resp
}

func (s *Sim) getDepartment(r *http.Request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code := s.checkTokenLocked(r); code != 0 {
		return errorResponse(code)
	}
	id, err := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
	if err != nil {
		return errorResponse(errInvalidParam)
	}
	d, ok := s.depts[id]
	if !ok {
		return errorResponse(errInvalidPartyID)
	}
	return okResponse(response{"department": response{
		"id":                d.ID,
		"name":              d.Name,
		"name_en":           d.NameEN,
		"parentid":          d.ParentID,
		"order":             0,
		"department_leader": []string{},
	}})
}

// tagList answers the corp's tags, by id.
func (s *Sim) tagList(r *http.Request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code := s.checkTokenLocked(r); code != 0 {
		return errorResponse(code)
	}
	ids := slices.Sorted(maps.Keys(s.tags))
	list := make([]response, 0, len(ids))
	for _, id := range ids {
		list = append(list, response{"tagid": id, "tagname": s.tags[id].Name})
	}
	return okResponse(response{"taglist": list})
}

// tagGet answers a tag's members, filtered to the app's visible range as WeCom does.
func (s *Sim) tagGet(r *http.Request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code := s.checkTokenLocked(r); code != 0 {
		return errorResponse(code)
	}
	id, err := strconv.ParseInt(r.URL.Query().Get("tagid"), 10, 64)
	if err != nil {
		return errorResponse(errInvalidParam)
	}
	t, ok := s.tags[id]
	if !ok {
		return errorResponse(errInvalidTagID)
	}
	users := make([]response, 0, len(t.UserIDs))
	for _, uid := range t.UserIDs {
		m := s.members[strings.ToLower(uid)]
		if m == nil || m.NonMember || m.OutsideVisibleRange {
			continue
		}
		users = append(users, response{"userid": m.UserID, "name": m.Name})
	}
	parties := slices.Clone(t.PartyIDs)
	if parties == nil {
		parties = []int64{}
	}
	return okResponse(response{"tagname": t.Name, "userlist": users, "partylist": parties})
}

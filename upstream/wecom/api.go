package wecom

import (
	"context"
	"fmt"
	"github.com/wecom-oidc/wecom-oidc/upstream"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
)

// UserInfo is auth/getuserinfo's answer: who a login code belongs to. A member has UserID; a
// non-member has OpenID (and maybe ExternalUserID) and no UserID.
type UserInfo struct {
	UserID         string
	OpenID         string
	ExternalUserID string
	DeviceID       string
	// UserTicket unlocks auth/getuserdetail; only in-client snsapi_privateinfo logins get one.
	UserTicket string
	// TicketExpiresIn is the ticket's lifetime in seconds (1800).
	TicketExpiresIn int64
}

// LogValue keeps the user ticket out of logs.
func (u UserInfo) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("userid", u.UserID),
		slog.String("openid", u.OpenID),
		slog.Bool("user_ticket", u.UserTicket != ""),
	)
}

// userInfoResponse accepts both key casings: auth/getuserinfo answers userid/openid, the old
// user/getuserinfo (and, reportedly, some web logins) UserId/OpenId/DeviceId. Keys are matched
// exactly first, so each spelling lands in its own field.
type userInfoResponse struct {
	UserID         string `json:"userid"`
	UserIDCamel    string `json:"UserId"`
	OpenID         string `json:"openid"`
	OpenIDCamel    string `json:"OpenId"`
	DeviceID       string `json:"deviceid"`
	DeviceIDCamel  string `json:"DeviceId"`
	ExternalUserID string `json:"external_userid"`
	UserTicket     string `json:"user_ticket"`
	ExpiresIn      int64  `json:"expires_in"`
}

func (r userInfoResponse) info() UserInfo {
	return UserInfo{
		UserID:          firstNonEmpty(r.UserID, r.UserIDCamel),
		OpenID:          firstNonEmpty(r.OpenID, r.OpenIDCamel),
		DeviceID:        firstNonEmpty(r.DeviceID, r.DeviceIDCamel),
		ExternalUserID:  r.ExternalUserID,
		UserTicket:      r.UserTicket,
		TicketExpiresIn: r.ExpiresIn,
	}
}

// GetUserInfo exchanges a login code (auth/getuserinfo). A code is single use: a second exchange,
// or one after five minutes, gives an *APIError with CodeInvalidCode; it must not be retried.
func (c *Connector) GetUserInfo(ctx context.Context, code string) (UserInfo, error) {
	var r userInfoResponse
	if err := c.call(ctx, "auth/getuserinfo", url.Values{"code": {code}}, nil, &r); err != nil {
		return UserInfo{}, err
	}
	return r.info(), nil
}

// UserDetail is auth/getuserdetail's answer: the sensitive fields the member consented to share.
// It has no name (use GetUser).
type UserDetail struct {
	UserID  string `json:"userid"`
	Gender  string `json:"gender"` // "0" unknown, "1" male, "2" female
	Avatar  string `json:"avatar"`
	QRCode  string `json:"qr_code"`
	Mobile  string `json:"mobile"`
	Email   string `json:"email"`
	BizMail string `json:"biz_mail"`
	Address string `json:"address"`
}

// GetUserDetail reads the sensitive fields a user ticket unlocks (POST auth/getuserdetail).
func (c *Connector) GetUserDetail(ctx context.Context, ticket string) (UserDetail, error) {
	var d UserDetail
	body := struct {
		UserTicket string `json:"user_ticket"`
	}{ticket}
	if err := c.call(ctx, "auth/getuserdetail", nil, body, &d); err != nil {
		return UserDetail{}, err
	}
	return d, nil
}

// User is user/get's answer. Apps created after 2022-06-20 get none of Mobile, Gender, Email,
// BizMail, Avatar and Address.
type User struct {
	UserID         string  `json:"userid"`
	Name           string  `json:"name"`
	Department     []int64 `json:"department"`
	MainDepartment int64   `json:"main_department"`
	Position       string  `json:"position"`
	Mobile         string  `json:"mobile"`
	Gender         string  `json:"gender"`
	Email          string  `json:"email"`
	BizMail        string  `json:"biz_mail"`
	Avatar         string  `json:"avatar"`
	Address        string  `json:"address"`
	Alias          string  `json:"alias"`
	// Status: 1 active, 2 disabled, 4 not activated, 5 left the corp.
	Status  int `json:"status"`
	ExtAttr struct {
		Attrs []ExtAttr `json:"attrs"`
	} `json:"extattr"`
}

// ExtAttr is a custom profile attribute. Type 0 is text (Text set), 1 web (Web set).
type ExtAttr struct {
	Type int    `json:"type"`
	Name string `json:"name"`
	Text *struct {
		Value string `json:"value"`
	} `json:"text,omitempty"`
	Web *struct {
		URL   string `json:"url"`
		Title string `json:"title"`
	} `json:"web,omitempty"`
}

// TextAttrs returns the text attributes by name, or nil if there are none.
func (u User) TextAttrs() map[string]string {
	var m map[string]string
	for _, a := range u.ExtAttr.Attrs {
		if a.Type != 0 || a.Text == nil || a.Name == "" {
			continue
		}
		if m == nil {
			m = make(map[string]string)
		}
		m[a.Name] = a.Text.Value
	}
	return m
}

// Member statuses in User.Status.
const (
	StatusActive       = 1
	StatusDisabled     = 2
	StatusNotActivated = 4
	StatusLeft         = 5
)

// GetUser reads a member (user/get). Members outside the app's visible range or unknown give an
// *APIError with 60011, 60021 or 60111.
func (c *Connector) GetUser(ctx context.Context, userID string) (User, error) {
	var u User
	if err := c.call(ctx, "user/get", url.Values{"userid": {userID}}, nil, &u); err != nil {
		return User{}, err
	}
	return u, nil
}

// Department is a unit of the corp (department/get). The organisation's root has ParentID 0.
type Department struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	NameEN   string `json:"name_en"`
	ParentID int64  `json:"parentid"`
}

// Department returns department id, cached for Config.DepartmentTTL; concurrent lookups of one
// uncached id share one department/get call. A department withheld from the app (60011, outside
// its visible range) is an *APIError, cached like an answer; other failures are not cached.
func (c *Connector) Department(ctx context.Context, id int64) (Department, error) {
	return c.depts.get(ctx, id, func(ctx context.Context) (Department, error) {
		d, err := c.fetchDepartment(ctx, id)
		if withheld(err) {
			c.log.WarnContext(ctx, "wecom: department withheld from the app (outside its visible range); its name and the paths through it stay empty",
				slog.Int64("department", id), slog.Int("errcode", ErrCode(err)), slog.Duration("cached_for", c.cfg.DepartmentTTL))
		}
		return d, err
	})
}

func (c *Connector) fetchDepartment(ctx context.Context, id int64) (Department, error) {
	var r struct {
		Department Department `json:"department"`
	}
	if err := c.call(ctx, "department/get", url.Values{"id": {strconv.FormatInt(id, 10)}}, nil, &r); err != nil {
		return Department{}, err
	}
	if r.Department.ID != 0 && r.Department.ID != id {
		return Department{}, fmt.Errorf("wecom: department/get: asked for %d, got %d: %w", id, r.Department.ID, upstream.ErrUnavailable)
	}
	r.Department.ID = id
	return r.Department, nil
}

// withheld reports whether err is WeCom's 60011 (no privilege): the department or tag is outside
// the app's visible range. It is an answer, not a fault, and is cached.
func withheld(err error) bool { return ErrCode(err) == CodeNoPrivilege }

// tagRef is a tag in tag/list's answer.
type tagRef struct {
	ID   int64  `json:"tagid"`
	Name string `json:"tagname"`
}

// tagMembers is tag/get's answer: the tag's members within the app's visible range.
type tagMembers struct {
	Name    string
	UserIDs map[string]bool // lower case: userids are case-insensitive
	Parties map[int64]bool
}

// has reports whether the member userID in departments carries the tag: the userid is listed, or
// one of the departments is.
func (m tagMembers) has(userID string, departments []int64) bool {
	if m.UserIDs[strings.ToLower(userID)] {
		return true
	}
	for _, d := range departments {
		if m.Parties[d] {
			return true
		}
	}
	return false
}

// tagList returns the corp's tags (tag/list), cached for Config.DepartmentTTL.
func (c *Connector) tagList(ctx context.Context) ([]tagRef, error) {
	return c.tagLists.get(ctx, struct{}{}, func(ctx context.Context) ([]tagRef, error) {
		var r struct {
			TagList []tagRef `json:"taglist"`
		}
		if err := c.call(ctx, "tag/list", nil, nil, &r); err != nil {
			return nil, err
		}
		return r.TagList, nil
	})
}

// tag returns a tag's members (tag/get), cached for Config.DepartmentTTL like departments; a tag
// withheld from the app (60011) is cached as such.
func (c *Connector) tag(ctx context.Context, id int64) (tagMembers, error) {
	return c.tags.get(ctx, id, func(ctx context.Context) (tagMembers, error) {
		var r struct {
			TagName  string `json:"tagname"`
			UserList []struct {
				UserID string `json:"userid"`
			} `json:"userlist"`
			PartyList []int64 `json:"partylist"`
		}
		if err := c.call(ctx, "tag/get", url.Values{"tagid": {strconv.FormatInt(id, 10)}}, nil, &r); err != nil {
			if withheld(err) {
				c.log.WarnContext(ctx, "wecom: tag withheld from the app; nobody gets it",
					slog.Int64("tag", id), slog.Int("errcode", ErrCode(err)), slog.Duration("cached_for", c.cfg.DepartmentTTL))
			}
			return tagMembers{}, err
		}
		m := tagMembers{Name: r.TagName, UserIDs: make(map[string]bool, len(r.UserList)), Parties: make(map[int64]bool, len(r.PartyList))}
		for _, u := range r.UserList {
			m.UserIDs[strings.ToLower(u.UserID)] = true
		}
		for _, p := range r.PartyList {
			m.Parties[p] = true
		}
		return m, nil
	})
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

package wecom

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
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

// Department is a unit of the corp (department/get).
type Department struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	NameEN   string `json:"name_en"`
	ParentID int64  `json:"parentid"`
}

// Department returns department id, cached for Config.DepartmentTTL; concurrent lookups of one
// uncached id share one department/get call.
func (c *Connector) Department(ctx context.Context, id int64) (Department, error) {
	return c.depts.get(ctx, id, c.fetchDepartment)
}

func (c *Connector) fetchDepartment(ctx context.Context, id int64) (Department, error) {
	var r struct {
		Department Department `json:"department"`
	}
	if err := c.call(ctx, "department/get", url.Values{"id": {strconv.FormatInt(id, 10)}}, nil, &r); err != nil {
		return Department{}, err
	}
	if r.Department.ID != 0 && r.Department.ID != id {
		return Department{}, fmt.Errorf("wecom: department/get: asked for %d, got %d", id, r.Department.ID)
	}
	r.Department.ID = id
	return r.Department, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Package upstream defines how wecom-oidc delegates the login step: a Connector sends the browser
// to the upstream identity provider and turns its callback into an Identity. The WeCom connector
// lives in upstream/wecom; the provider knows only this package.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Connector is an upstream identity provider with a browser redirect and a callback
// (the shape of Dex's CallbackConnector).
type Connector interface {
	// LoginURL returns where to send the browser. state is the opaque value the upstream must hand
	// back unchanged on the callback; it is [A-Za-z0-9] and at most 128 bytes.
	LoginURL(state string, hints LoginHints) (string, error)
	// HandleCallback turns the upstream's callback request into the person's identity. The caller
	// has already checked `state`. A person the upstream refused, or who may not sign in, gives a
	// *DeniedError; anything else is an upstream or configuration fault.
	HandleCallback(ctx context.Context, r *http.Request) (Identity, error)
}

// LoginHints carry what the login page knows about the browser and the request.
type LoginHints struct {
	// UserAgent of the browser: WeCom picks the in-client door for its own app's browser.
	UserAgent string
	// Lang is the preferred language ("zh" or "en"), from ui_locales or Accept-Language.
	Lang string
}

// Identity is a person as the upstream describes them. Fields the upstream did not disclose are
// empty; claims must cope with that.
type Identity struct {
	CorpID string
	UserID string // the upstream's stable id for the person within CorpID
	Name   string
	Alias  string
	// Email is the address the person's corp administers (WeCom biz_mail); PersonalEmail the one
	// on their profile (WeCom email). Either may be empty.
	Email          string
	PersonalEmail  string
	Mobile         string
	Gender         string // "male", "female" or ""
	Avatar         string
	Address        string
	Position       string
	Departments    []Department
	MainDepartment int64
	Tags           []Tag             // the person's tags (WeCom 标签), when the connector is set to read them
	Status         int               // the upstream's account status (WeCom: 1 active)
	Extra          map[string]string // further attributes (WeCom extattr text fields)
	// Method names how the person authenticated, for the `amr` claim ("wecom_client": inside the
	// WeCom app; "wecom_web": web or QR login).
	Method string
}

// Department is a unit the person belongs to.
type Department struct {
	ID   int64
	Name string // empty when the upstream withheld it
	// Path is the names from the top-level unit below the organisation's root down to this one,
	// e.g. ["研发中心", "平台组"]; nil when a name on the way was withheld.
	Path []string
}

// Tag is a label the organisation put on the person.
type Tag struct {
	ID   int64
	Name string
}

// Rechecker is implemented by connectors that can read a person's account again without the
// person, to find out whether they may still sign in (used when a refresh token is redeemed).
type Rechecker interface {
	// Recheck returns the person's current identity, a *DeniedError when the account may no
	// longer sign in (disabled, left, outside the app's range), or another error when the
	// upstream could not answer (ErrUnavailable, ErrMisconfigured).
	Recheck(ctx context.Context, userID string) (Identity, error)
}

// PhoneSignIn is implemented by connectors whose login can run on a phone the person holds while
// another device waits for it (the scan sign-in: a computer shows a QR code, the phone's app
// signs the person in). It is the only way some upstreams disclose the full profile: WeCom gives
// mobile and email only to its in-app authorization with consent.
type PhoneSignIn interface {
	// PhoneLoginURL returns the upstream's in-app authorization page asking for the full
	// profile; its callback comes back to the connector's usual redirect URL with state.
	PhoneLoginURL(state string, hints LoginHints) (string, error)
	// InApp reports whether userAgent is the upstream's own app, where PhoneLoginURL works.
	InApp(userAgent string) bool
}

// Error classes of upstream faults that are not a refusal, for errors.Is. Connectors wrap their
// errors with one of them so the provider can tell the person and the operator what happened.
var (
	// ErrUnavailable: the upstream did not answer usefully (timeout, HTTP error, garbage, rate
	// limit, busy). Trying again later may work.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrMisconfigured: the upstream refused our credentials or setup (secret, corp id, trusted
	// domain, trusted IP, app permissions). An operator must act.
	ErrMisconfigured = errors.New("upstream misconfigured")
)

// Kinds of refusal, in DeniedError.Kind.
const (
	DeniedDeclined    = "declined"     // the person cancelled or refused consent
	DeniedNotMember   = "not_member"   // authenticated, but not a member of the organisation
	DeniedInactive    = "inactive"     // disabled, not activated, or left
	DeniedNotVisible  = "not_visible"  // outside the app's visible range (可见范围)
	DeniedCodeInvalid = "code_invalid" // the login code was already used or expired
)

// DeniedError means the upstream authenticated nobody we may sign in: the person declined, is not
// a member, is disabled, or presented a code that was already used. The provider answers the
// application with access_denied.
type DeniedError struct {
	Kind   string // one of the Denied* kinds
	Reason string // for logs and the person; never contains secrets
	Err    error  // the underlying cause, if any
}

func (e *DeniedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("access denied: %s: %v", e.Reason, e.Err)
	}
	return "access denied: " + e.Reason
}

func (e *DeniedError) Unwrap() error { return e.Err }

// IsDenied reports whether err is, or wraps, a *DeniedError.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}

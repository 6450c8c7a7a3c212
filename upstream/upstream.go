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
}

// DeniedError means the upstream authenticated nobody we may sign in: the person declined, is not
// a member, is disabled, or presented a code that was already used. The provider answers the
// application with access_denied.
type DeniedError struct {
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

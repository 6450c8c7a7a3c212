package record

import (
	"errors"
	"fmt"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// This file holds the checks of the cross-device sign-in records, scan sign-ins and device
// authorizations, that both backends make alike.

// CheckScanLogin checks a scan sign-in as CreateScanLogin stores it and as UpdateScanLogin leaves
// it: it needs its key, the auth request it signs in, and an expiry (a zero one would be swept at
// once, and is a caller's bug worth seeing).
func CheckScanLogin(s storage.ScanLogin) error {
	switch {
	case s.HandleHash == "":
		return errors.New("scan login without handle hash")
	case s.AuthRequestID == "":
		return errors.New("scan login without auth request id")
	case s.ExpiresAt.IsZero():
		return errors.New("scan login without expiry")
	}
	return nil
}

// CheckScanLoginUpdate checks what an update's function left of the scan sign-in handleHash:
// changing the key gives ErrConflict; the rest is CheckScanLogin.
func CheckScanLoginUpdate(handleHash string, s storage.ScanLogin) error {
	if s.HandleHash != handleHash {
		return fmt.Errorf("the update changed the handle hash to %q: %w", s.HandleHash, storage.ErrConflict)
	}
	return CheckScanLogin(s)
}

// CheckDeviceAuthorization checks a device authorization as CreateDeviceAuthorization stores it
// and as UpdateDeviceAuthorization leaves it: it needs its key, its user code, its client and an
// expiry.
func CheckDeviceAuthorization(d storage.DeviceAuthorization) error {
	switch {
	case d.DeviceCodeHash == "":
		return errors.New("device authorization without device code hash")
	case d.UserCode == "":
		return errors.New("device authorization without user code")
	case d.ClientID == "":
		return errors.New("device authorization without client id")
	case d.ExpiresAt.IsZero():
		return errors.New("device authorization without expiry")
	}
	return nil
}

// CheckDeviceAuthorizationUpdate checks what an update's function left of the device
// authorization old: changing the key or the user code gives ErrConflict (the user-code index
// names the key, and no two live authorizations may share a code); the rest is
// CheckDeviceAuthorization.
func CheckDeviceAuthorizationUpdate(old, d storage.DeviceAuthorization) error {
	if d.DeviceCodeHash != old.DeviceCodeHash {
		return fmt.Errorf("the update changed the device code hash to %q: %w", d.DeviceCodeHash, storage.ErrConflict)
	}
	if d.UserCode != old.UserCode {
		return fmt.Errorf("the update changed the user code to %q: %w", d.UserCode, storage.ErrConflict)
	}
	return CheckDeviceAuthorization(d)
}

// HoldsUserCode reports whether the device authorization d, read from the store (found is false
// when it is absent) where the user-code index entry of code led, holds code at now: stored,
// unexpired and carrying that code. It decides both the lookup by user code (the authorization
// is found only then) and whether a create may take the code (it may unless then): an expired
// authorization's code is free again, and the entry, which a later create has taken over, never
// leads back to it.
func HoldsUserCode(d storage.DeviceAuthorization, found bool, code string, now time.Time) bool {
	return found && d.UserCode == code && !Expired(d.ExpiresAt, now)
}

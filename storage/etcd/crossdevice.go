package etcd

import (
	"context"
	"fmt"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file holds the cross-device sign-in records: scan sign-ins, and device authorizations
// with their user-code index.

// CreateScanLogin stores a new scan sign-in; ErrAlreadyExists when the handle is taken.
func (s *Store) CreateScanLogin(ctx context.Context, sl storage.ScanLogin) (err error) {
	defer wrap(&err, "create scan login")
	if err := record.CheckScanLogin(sl); err != nil {
		return err
	}
	return s.create(ctx, kindScanLogins, sl.HandleHash, sl, sl.ExpiresAt, "scan login")
}

// GetScanLogin returns ErrNotFound for unknown or expired scan sign-ins.
func (s *Store) GetScanLogin(ctx context.Context, handleHash string) (sl storage.ScanLogin, err error) {
	defer wrap(&err, "get scan login")
	return viewRecord(s, ctx, kindScanLogins, handleHash, func(v storage.ScanLogin, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// UpdateScanLogin runs fn on a fresh copy of the live scan sign-in and commits the result with a
// compare-and-swap on its revision; when another replica wrote it meanwhile, fn runs again on
// the new value. An error from fn is returned wrapped and nothing is written; changing the
// handle hash gives ErrConflict. A new expiry gets its lease and index entry, and the old entry
// goes.
func (s *Store) UpdateScanLogin(ctx context.Context, handleHash string, fn func(*storage.ScanLogin) error) (out storage.ScanLogin, err error) {
	defer wrap(&err, "update scan login")
	if handleHash == "" {
		return out, storage.ErrNotFound
	}
	err = s.update(ctx, func(t *txn) error {
		out = storage.ScanLogin{}
		sl, ok, err := getJSON[storage.ScanLogin](t, kindScanLogins, handleHash)
		if err != nil {
			return err
		}
		if !ok || record.Expired(sl.ExpiresAt, s.now()) {
			return storage.ErrNotFound
		}
		if err := fn(&sl); err != nil {
			return err
		}
		if err := record.CheckScanLoginUpdate(handleHash, sl); err != nil {
			return err
		}
		out = sl
		return t.putExpiring(kindScanLogins, handleHash, sl, sl.ExpiresAt)
	})
	if err != nil {
		return storage.ScanLogin{}, err
	}
	return out, nil
}

// userCodeHolder reads, inside t, the user-code index entry of code (guarded, its absence too)
// and the device authorization it names, and reports whether that holds the code
// (record.HoldsUserCode). The authorization is only peeked: one that does not hold the code
// never comes to hold it again (it is expired, gone, or has another code, and none of that is
// undone), and every write that makes a code held writes its entry, which is guarded.
func userCodeHolder(t *txn, code string, now time.Time) (storage.DeviceAuthorization, bool, error) {
	entry, ok, err := getJSON[record.UserCode](t, kindDeviceUserCodes, code)
	if err != nil || !ok {
		return storage.DeviceAuthorization{}, false, err
	}
	d, found, err := peekJSON[storage.DeviceAuthorization](t, kindDeviceAuths, entry.DeviceCodeHash)
	if err != nil {
		return storage.DeviceAuthorization{}, false, err
	}
	return d, record.HoldsUserCode(d, found, code, now), nil
}

// putUserCode writes the user-code index entry of code, naming hash and expiring at exp.
func (t *txn) putUserCode(code, hash string, exp time.Time) error {
	return t.putExpiring(kindDeviceUserCodes, code, record.UserCode{DeviceCodeHash: hash, ExpiresAt: exp}, exp)
}

// CreateDeviceAuthorization stores a new device authorization and points its user code's index
// entry at it, in one transaction guarded by the absence of the device code hash and by the
// entry as read: ErrAlreadyExists when the hash is stored (expired or not, as every create) or a
// live authorization holds the user code. Of two creates racing for one code, on any replicas,
// one commits and the other runs again and finds the code held.
func (s *Store) CreateDeviceAuthorization(ctx context.Context, d storage.DeviceAuthorization) (err error) {
	defer wrap(&err, "create device authorization")
	if err := record.CheckDeviceAuthorization(d); err != nil {
		return err
	}
	return s.update(ctx, func(t *txn) error {
		err := t.prefetch(s.key(kindDeviceAuths, d.DeviceCodeHash), s.key(kindDeviceUserCodes, d.UserCode))
		if err != nil {
			return err
		}
		_, held, err := userCodeHolder(t, d.UserCode, s.now())
		if err != nil {
			return err
		}
		if held {
			return fmt.Errorf("user code: %w", storage.ErrAlreadyExists)
		}
		if err := t.putNew(kindDeviceAuths, d.DeviceCodeHash, d, d.ExpiresAt, "device authorization"); err != nil {
			return err
		}
		return t.putUserCode(d.UserCode, d.DeviceCodeHash, d.ExpiresAt)
	})
}

// GetDeviceAuthorization returns ErrNotFound for unknown or expired authorizations.
func (s *Store) GetDeviceAuthorization(ctx context.Context, deviceCodeHash string) (d storage.DeviceAuthorization, err error) {
	defer wrap(&err, "get device authorization")
	return viewRecord(s, ctx, kindDeviceAuths, deviceCodeHash, func(v storage.DeviceAuthorization, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// GetDeviceAuthorizationByUserCode follows the user code's index entry to the live authorization
// holding the code; ErrNotFound otherwise. Both keys are read at one revision (a transaction
// that writes nothing, so commits nothing), so a create taking over the code in between is seen
// whole or not at all.
func (s *Store) GetDeviceAuthorizationByUserCode(ctx context.Context, userCode string) (d storage.DeviceAuthorization, err error) {
	defer wrap(&err, "get device authorization by user code")
	if userCode == "" {
		return d, storage.ErrNotFound
	}
	err = s.update(ctx, func(t *txn) error {
		d = storage.DeviceAuthorization{}
		got, held, err := userCodeHolder(t, userCode, s.now())
		if err != nil {
			return err
		}
		if !held {
			return storage.ErrNotFound
		}
		d = got
		return nil
	})
	if err != nil {
		return storage.DeviceAuthorization{}, err
	}
	return d, nil
}

// UpdateDeviceAuthorization runs fn on a fresh copy of the live authorization and commits the
// result with a compare-and-swap on its revision; when another replica wrote it meanwhile, fn
// runs again on the new value. An error from fn is returned wrapped and nothing is written;
// changing the device code hash or the user code gives ErrConflict. A new expiry gets its lease
// and index entry, and moves the user code's index entry (and its lease) along, in the same
// transaction.
func (s *Store) UpdateDeviceAuthorization(ctx context.Context, deviceCodeHash string, fn func(*storage.DeviceAuthorization) error) (out storage.DeviceAuthorization, err error) {
	defer wrap(&err, "update device authorization")
	if deviceCodeHash == "" {
		return out, storage.ErrNotFound
	}
	err = s.update(ctx, func(t *txn) error {
		out = storage.DeviceAuthorization{}
		old, ok, err := getJSON[storage.DeviceAuthorization](t, kindDeviceAuths, deviceCodeHash)
		if err != nil {
			return err
		}
		if !ok || record.Expired(old.ExpiresAt, s.now()) {
			return storage.ErrNotFound
		}
		d := old // fn may change d's slices in place: old's strings and expiry, all that is read of it, stay
		if err := fn(&d); err != nil {
			return err
		}
		if err := record.CheckDeviceAuthorizationUpdate(old, d); err != nil {
			return err
		}
		if err := t.putExpiring(kindDeviceAuths, deviceCodeHash, d, d.ExpiresAt); err != nil {
			return err
		}
		if !d.ExpiresAt.Equal(old.ExpiresAt) {
			if err := t.moveUserCode(d.UserCode, deviceCodeHash, d.ExpiresAt); err != nil {
				return err
			}
		}
		out = d
		return nil
	})
	if err != nil {
		return storage.DeviceAuthorization{}, err
	}
	return out, nil
}

// moveUserCode gives the user-code index entry of code the expiry exp when it names hash
// (guarded); an entry that is missing or names another authorization is left alone.
func (t *txn) moveUserCode(code, hash string, exp time.Time) error {
	entry, ok, err := getJSON[record.UserCode](t, kindDeviceUserCodes, code)
	if err != nil || !ok || entry.DeviceCodeHash != hash {
		return err
	}
	return t.putUserCode(code, hash, exp)
}

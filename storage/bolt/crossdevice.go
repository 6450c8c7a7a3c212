package bolt

import (
	"context"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
)

// This file holds the cross-device sign-in records: scan sign-ins, and device authorizations
// with their user-code index.

// CreateScanLogin stores a new scan sign-in; ErrAlreadyExists when the handle is taken.
func (s *Store) CreateScanLogin(ctx context.Context, sl storage.ScanLogin) (err error) {
	defer wrap(&err, "create scan login")
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := record.CheckScanLogin(sl); err != nil {
		return err
	}
	raw, err := record.Encode(sl)
	if err != nil {
		return err
	}
	return s.update(ctx, func(tx *bbolt.Tx) error {
		return putNew(tx, bucketScanLogins, []byte(sl.HandleHash), raw, sl.ExpiresAt, "scan login")
	})
}

// GetScanLogin returns ErrNotFound for unknown or expired scan sign-ins.
func (s *Store) GetScanLogin(ctx context.Context, handleHash string) (sl storage.ScanLogin, err error) {
	defer wrap(&err, "get scan login")
	return viewRecord(s, ctx, bucketScanLogins, handleHash, func(v storage.ScanLogin, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// UpdateScanLogin runs fn on the live scan sign-in inside one write transaction (again, on a
// fresh copy, if the transaction is retried), so concurrent updates are serialised. fn must not
// block or do I/O: it holds the database's writer lock. An error from fn is returned wrapped and
// nothing is written; changing the handle hash gives ErrConflict.
func (s *Store) UpdateScanLogin(ctx context.Context, handleHash string, fn func(*storage.ScanLogin) error) (out storage.ScanLogin, err error) {
	defer wrap(&err, "update scan login")
	if err := ctx.Err(); err != nil {
		return out, err
	}
	now := s.now()
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		sl, ok, err := getJSON[storage.ScanLogin](bkt(tx, bucketScanLogins), []byte(handleHash))
		if err != nil {
			return err
		}
		if !ok || record.Expired(sl.ExpiresAt, now) {
			return storage.ErrNotFound
		}
		if err := fn(&sl); err != nil {
			return err
		}
		if err := record.CheckScanLoginUpdate(handleHash, sl); err != nil {
			return err
		}
		raw, err := record.Encode(sl)
		if err != nil {
			return err
		}
		if err := putExpiring(tx, bucketScanLogins, []byte(handleHash), raw, sl.ExpiresAt); err != nil {
			return err
		}
		out = sl
		return nil
	})
	if err != nil {
		return storage.ScanLogin{}, err
	}
	return out, nil
}

// liveDeviceAuth reads the device authorization hash inside tx; ErrNotFound when absent or
// expired.
func liveDeviceAuth(tx *bbolt.Tx, hash string, now time.Time) (storage.DeviceAuthorization, error) {
	d, ok, err := getJSON[storage.DeviceAuthorization](bkt(tx, bucketDeviceAuths), []byte(hash))
	if err != nil {
		return storage.DeviceAuthorization{}, err
	}
	if !ok || record.Expired(d.ExpiresAt, now) {
		return storage.DeviceAuthorization{}, storage.ErrNotFound
	}
	return d, nil
}

// userCodeHolder reads the device authorization the user-code index entry of code names inside
// tx, and whether it holds the code (record.HoldsUserCode).
func userCodeHolder(tx *bbolt.Tx, code string, now time.Time) (storage.DeviceAuthorization, bool, error) {
	entry, ok, err := getJSON[record.UserCode](bkt(tx, bucketDeviceUserCodes), []byte(code))
	if err != nil || !ok {
		return storage.DeviceAuthorization{}, false, err
	}
	d, found, err := getJSON[storage.DeviceAuthorization](bkt(tx, bucketDeviceAuths), []byte(entry.DeviceCodeHash))
	if err != nil {
		return storage.DeviceAuthorization{}, false, err
	}
	return d, record.HoldsUserCode(d, found, code, now), nil
}

// putUserCode writes the user-code index entry of code, naming hash and expiring at exp.
func putUserCode(tx *bbolt.Tx, code, hash string, exp time.Time) error {
	raw, err := record.Encode(record.UserCode{DeviceCodeHash: hash, ExpiresAt: exp})
	if err != nil {
		return err
	}
	return putExpiring(tx, bucketDeviceUserCodes, []byte(code), raw, exp)
}

// CreateDeviceAuthorization stores a new device authorization and points its user code's index
// entry at it, in one write transaction: ErrAlreadyExists when the device code hash is stored
// (expired or not, as every create) or a live authorization holds the user code.
func (s *Store) CreateDeviceAuthorization(ctx context.Context, d storage.DeviceAuthorization) (err error) {
	defer wrap(&err, "create device authorization")
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := record.CheckDeviceAuthorization(d); err != nil {
		return err
	}
	raw, err := record.Encode(d)
	if err != nil {
		return err
	}
	now := s.now()
	return s.update(ctx, func(tx *bbolt.Tx) error {
		if _, held, err := userCodeHolder(tx, d.UserCode, now); err != nil || held {
			if held {
				err = fmt.Errorf("user code: %w", storage.ErrAlreadyExists)
			}
			return err
		}
		if err := putNew(tx, bucketDeviceAuths, []byte(d.DeviceCodeHash), raw, d.ExpiresAt, "device authorization"); err != nil {
			return err
		}
		return putUserCode(tx, d.UserCode, d.DeviceCodeHash, d.ExpiresAt)
	})
}

// GetDeviceAuthorization returns ErrNotFound for unknown or expired authorizations.
func (s *Store) GetDeviceAuthorization(ctx context.Context, deviceCodeHash string) (d storage.DeviceAuthorization, err error) {
	defer wrap(&err, "get device authorization")
	return viewRecord(s, ctx, bucketDeviceAuths, deviceCodeHash, func(v storage.DeviceAuthorization, now time.Time) bool { return record.Expired(v.ExpiresAt, now) })
}

// GetDeviceAuthorizationByUserCode follows the user code's index entry, in one read
// transaction, to the live authorization holding the code; ErrNotFound otherwise.
func (s *Store) GetDeviceAuthorizationByUserCode(ctx context.Context, userCode string) (d storage.DeviceAuthorization, err error) {
	defer wrap(&err, "get device authorization by user code")
	if err := ctx.Err(); err != nil {
		return d, err
	}
	now := s.now()
	err = s.db.View(func(tx *bbolt.Tx) error {
		got, held, err := userCodeHolder(tx, userCode, now)
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

// UpdateDeviceAuthorization runs fn on the live authorization inside one write transaction
// (again, on a fresh copy, if the transaction is retried), so concurrent updates are serialised.
// fn must not block or do I/O: it holds the database's writer lock. An error from fn is returned
// wrapped and nothing is written; changing the device code hash or the user code gives
// ErrConflict. A new expiry moves the user code's index entry along, so that both go together.
func (s *Store) UpdateDeviceAuthorization(ctx context.Context, deviceCodeHash string, fn func(*storage.DeviceAuthorization) error) (out storage.DeviceAuthorization, err error) {
	defer wrap(&err, "update device authorization")
	if err := ctx.Err(); err != nil {
		return out, err
	}
	now := s.now()
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		old, err := liveDeviceAuth(tx, deviceCodeHash, now)
		if err != nil {
			return err
		}
		d := old // fn may change d's slices in place: old's strings and expiry, all that is read of it, stay
		if err := fn(&d); err != nil {
			return err
		}
		if err := record.CheckDeviceAuthorizationUpdate(old, d); err != nil {
			return err
		}
		raw, err := record.Encode(d)
		if err != nil {
			return err
		}
		if err := putExpiring(tx, bucketDeviceAuths, []byte(deviceCodeHash), raw, d.ExpiresAt); err != nil {
			return err
		}
		if !d.ExpiresAt.Equal(old.ExpiresAt) {
			if err := moveUserCode(tx, d.UserCode, deviceCodeHash, d.ExpiresAt); err != nil {
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

// moveUserCode gives the user-code index entry of code the expiry exp when it names hash; an
// entry that is missing or names another authorization is left alone.
func moveUserCode(tx *bbolt.Tx, code, hash string, exp time.Time) error {
	entry, ok, err := getJSON[record.UserCode](bkt(tx, bucketDeviceUserCodes), []byte(code))
	if err != nil || !ok || entry.DeviceCodeHash != hash {
		return err
	}
	return putUserCode(tx, code, hash, exp)
}

package bolt

import (
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/storage/internal/record"
	"github.com/wecom-oidc/wecom-oidc/storage/storagetest"
)

// TestDeviceUserCodeIndex follows a user code's index entry through its life: written with its
// authorization, moved with the authorization's expiry, taken over by a new authorization once
// the first has expired, swept by its own index entry, and always in the expiry index. The
// conformance suite sees only what the entry leads to; this looks at the buckets.
func TestDeviceUserCodeIndex(t *testing.T) {
	ctx := t.Context()
	clock := storagetest.NewClock(storagetest.Start())
	s := openTest(t, filepath.Join(t.TempDir(), "wecom-oidc.db"), Options{Now: clock.Now})
	t0 := clock.Now()
	const code = "BCDF-GHJK"
	state := func(when string, wantEntry record.UserCode, wantSizes map[string]int) {
		t.Helper()
		var entry record.UserCode
		var ok bool
		err := s.db.View(func(tx *bbolt.Tx) error {
			var err error
			entry, ok, err = getJSON[record.UserCode](bkt(tx, bucketDeviceUserCodes), []byte(code))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if wantEntry == (record.UserCode{}) {
			if ok {
				t.Errorf("%s: user code entry %+v, want none", when, entry)
			}
		} else if !ok || entry.DeviceCodeHash != wantEntry.DeviceCodeHash || !entry.ExpiresAt.Equal(wantEntry.ExpiresAt) {
			t.Errorf("%s: user code entry %+v (present %v), want %+v", when, entry, ok, wantEntry)
		}
		sizes := bucketSizes(t, s)
		for name, n := range wantSizes {
			if sizes[name] != n {
				t.Errorf("%s: bucket %s has %d keys, want %d", when, name, sizes[name], n)
			}
		}
		checkIndex(t, s)
	}
	mustNil := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	sizes := func(auths, codes, expiry int) map[string]int {
		return map[string]int{bucketDeviceAuths: auths, bucketDeviceUserCodes: codes, bucketExpiry: expiry}
	}

	d1 := storage.DeviceAuthorization{DeviceCodeHash: "d1", UserCode: code, ClientID: "cli", Status: "pending", ExpiresAt: t0.Add(5 * time.Minute)}
	mustNil("CreateDeviceAuthorization(d1)", s.CreateDeviceAuthorization(ctx, d1))
	state("after the create", record.UserCode{DeviceCodeHash: "d1", ExpiresAt: d1.ExpiresAt}, sizes(1, 1, 2))

	_, err := s.UpdateDeviceAuthorization(ctx, "d1", func(d *storage.DeviceAuthorization) error { d.ExpiresAt = t0.Add(10 * time.Minute); return nil })
	mustNil("UpdateDeviceAuthorization(expiry)", err)
	state("after moving the expiry", record.UserCode{DeviceCodeHash: "d1", ExpiresAt: t0.Add(10 * time.Minute)}, sizes(1, 1, 2))
	_, err = s.UpdateDeviceAuthorization(ctx, "d1", func(d *storage.DeviceAuthorization) error { d.Status = "denied"; return nil })
	mustNil("UpdateDeviceAuthorization(status)", err)
	state("after an update keeping the expiry", record.UserCode{DeviceCodeHash: "d1", ExpiresAt: t0.Add(10 * time.Minute)}, sizes(1, 1, 2))

	// d1 has expired: d2 takes its code over; d1 stays until the sweep.
	clock.Set(t0.Add(10 * time.Minute))
	d2 := storage.DeviceAuthorization{DeviceCodeHash: "d2", UserCode: code, ClientID: "cli", Status: "pending", ExpiresAt: t0.Add(20 * time.Minute)}
	mustNil("CreateDeviceAuthorization(d2)", s.CreateDeviceAuthorization(ctx, d2))
	state("after d2 took the code", record.UserCode{DeviceCodeHash: "d2", ExpiresAt: d2.ExpiresAt}, sizes(2, 1, 3))

	res, err := s.DeleteExpired(ctx)
	mustNil("DeleteExpired", err)
	if want := (storage.GCResult{DeviceAuths: 1}); res != want {
		t.Errorf("DeleteExpired = %+v, want %+v", res, want)
	}
	state("after sweeping d1", record.UserCode{DeviceCodeHash: "d2", ExpiresAt: d2.ExpiresAt}, sizes(1, 1, 2))

	clock.Set(d2.ExpiresAt)
	res, err = s.DeleteExpired(ctx)
	mustNil("DeleteExpired", err)
	if want := (storage.GCResult{DeviceAuths: 1}); res != want {
		t.Errorf("DeleteExpired = %+v, want %+v", res, want)
	}
	state("after sweeping d2", record.UserCode{}, sizes(0, 0, 0))
}

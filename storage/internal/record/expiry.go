package record

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Expired reports whether a record expiring at exp is dead at now: ExpiresAt <= now. Every
// getter and every liveness check of both backends decides by it, so that a record is dead at the
// same instant whatever reads it.
func Expired(exp, now time.Time) bool { return !exp.After(now) }

// ExpiryNanos maps a time onto the expiry index's unsigned ordered axis (big-endian bytes in
// bolt, 16 hex digits in etcd). Times before 1970, the zero time included, map to 0, so they are
// swept at once; times beyond what UnixNano can represent (year 2262) map to the end of the axis.
func ExpiryNanos(t time.Time) uint64 {
	sec := t.Unix()
	switch {
	case sec < 0:
		return 0
	case sec >= math.MaxInt64/int64(time.Second)-1:
		return math.MaxUint64
	default:
		return uint64(t.UnixNano())
	}
}

// ExpiryOf reads the expiry of any stored expiring record: all of them keep it in "expires_at".
func ExpiryOf(raw []byte) (time.Time, error) {
	var v struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return time.Time{}, fmt.Errorf("decode expiry: %w", err)
	}
	return v.ExpiresAt, nil
}

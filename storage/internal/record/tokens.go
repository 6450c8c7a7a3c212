package record

import (
	"errors"
	"fmt"
	"time"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// Tokens is what CreateTokens writes, checked and derived from its arguments by NewTokens.
type Tokens struct {
	Access Access
	// Refresh is the first token of a new family, nil when none; Family is then that family's
	// new record.
	Refresh *storage.RefreshToken
	Family  Family
}

// NewTokens checks CreateTokens' arguments and derives its records, before any read. The access
// token needs an id; a refresh token needs a hash and a family id, is stored unrotated (a new
// family's first token has not been rotated), and starts a family that is linked to its session
// and to the access token's auth request, and lives until the later of the refresh token's
// expiry and the access token's, when the access token is issued with the family.
func NewTokens(access storage.AccessToken, refresh *storage.RefreshToken) (Tokens, error) {
	if access.ID == "" {
		return Tokens{}, errors.New("empty access token id")
	}
	t := Tokens{Access: Access{AccessToken: access}}
	if refresh == nil {
		return t, nil
	}
	if refresh.Hash == "" || refresh.FamilyID == "" {
		return Tokens{}, errors.New("refresh token without hash or family id")
	}
	rt := *refresh
	rt.RotatedAt = nil
	t.Refresh = &rt
	t.Family = Family{ExpiresAt: rt.ExpiresAt, SessionID: rt.SessionID, AuthRequestID: access.AuthRequestID}
	if access.FamilyID == rt.FamilyID && access.ExpiresAt.After(t.Family.ExpiresAt) {
		t.Family.ExpiresAt = access.ExpiresAt
	}
	return t, nil
}

// ExistingFamily is the family the access token joins that is not created here ("" when none):
// CreateTokens requires it to be live (CheckFamily) and extends it to the access token's expiry.
func (t Tokens) ExistingFamily() string {
	if t.Refresh != nil && t.Access.FamilyID == t.Refresh.FamilyID {
		return ""
	}
	return t.Access.FamilyID
}

// Rotation is what RotateRefreshToken writes besides the presented token, checked and derived
// from its arguments by NewRotation.
type Rotation struct {
	Next   storage.RefreshToken
	Access Access
}

// NewRotation checks RotateRefreshToken's arguments before any read: the next token needs a
// hash and the access token an id. The next token is stored unrotated.
func NewRotation(next storage.RefreshToken, access storage.AccessToken) (Rotation, error) {
	if next.Hash == "" || access.ID == "" {
		return Rotation{}, errors.New("next refresh token without hash, or access token without id")
	}
	next.RotatedAt = nil
	return Rotation{Next: next, Access: Access{AccessToken: access}}, nil
}

// Check fails with ErrConflict unless the next token, and the access token when it names a
// family, belong to the family of presented, the live, unrotated token being exchanged.
func (r Rotation) Check(presented storage.RefreshToken) error {
	if r.Next.FamilyID != presented.FamilyID {
		return fmt.Errorf("next token's family %q is not the presented token's %q: %w", r.Next.FamilyID, presented.FamilyID, storage.ErrConflict)
	}
	if r.Access.FamilyID != "" && r.Access.FamilyID != presented.FamilyID {
		return fmt.Errorf("access token's family %q is not the presented token's %q: %w", r.Access.FamilyID, presented.FamilyID, storage.ErrConflict)
	}
	return nil
}

// FamilyExpiry is the least expiry the family must have after the rotation: the next token's,
// or the access token's when that is later and the access token is issued with the family.
func (r Rotation) FamilyExpiry() time.Time {
	if r.Access.FamilyID != "" && r.Access.ExpiresAt.After(r.Next.ExpiresAt) {
		return r.Access.ExpiresAt
	}
	return r.Next.ExpiresAt
}

// CheckFamily is the verdict on the refresh family familyID as read from the store (found is
// false when it is absent): nil when it is known and not revoked, else an error wrapping
// ErrRevoked. An unknown family fails closed: its record goes (by the sweep, or in etcd by its
// lease) only after all its tokens have expired, so failing is both safe and unobservable. The
// family's own expiry is not checked: the token's is.
func CheckFamily(familyID string, fam Family, found bool) error {
	if !found {
		return fmt.Errorf("refresh family %q unknown: %w", familyID, storage.ErrRevoked)
	}
	if fam.Revoked {
		return fmt.Errorf("refresh family %q: %w", familyID, storage.ErrRevoked)
	}
	return nil
}

// CheckNotReplayed is the verdict on the replay marker of the auth request authRequestID as read
// from the store (found is false when it is absent): while the marker lives, a code of the
// request has been presented again, and the tokens the request would still produce are refused
// with an error wrapping ErrRevoked.
func CheckNotReplayed(authRequestID string, marker Link, found bool, now time.Time) error {
	if found && !Expired(marker.ExpiresAt, now) {
		return fmt.Errorf("auth request %q: a code of it was presented again, its tokens are refused: %w", authRequestID, storage.ErrRevoked)
	}
	return nil
}

// UserTokens gathers, from the token records of a store, what RevokeUserTokens revokes for
// Subject: every refresh family holding a token issued to the subject (a refresh token, rotated
// or not, or an access token issued with the family), and the subject's live access tokens
// issued without a family. Access tokens issued with a family are not listed: they die with it.
type UserTokens struct {
	Subject  string
	Families map[string]bool
	// Loose are the ids of the live access tokens without a family, in the order added.
	Loose []string
}

// NewUserTokens returns an empty gathering for subject.
func NewUserTokens(subject string) *UserTokens {
	return &UserTokens{Subject: subject, Families: map[string]bool{}}
}

// AddRefresh takes in a refresh-token record.
func (u *UserTokens) AddRefresh(t TokenOwner) {
	if t.Subject == u.Subject && t.FamilyID != "" {
		u.Families[t.FamilyID] = true
	}
}

// AddAccess takes in the access-token record id, judging its liveness at now.
func (u *UserTokens) AddAccess(id string, t TokenOwner, now time.Time) {
	switch {
	case t.Subject != u.Subject:
	case t.FamilyID != "":
		u.Families[t.FamilyID] = true
	case !t.Revoked && !Expired(t.ExpiresAt, now):
		u.Loose = append(u.Loose, id)
	}
}

package record

import (
	"errors"
	"fmt"
	"slices"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

// CompletionSession checks a completion before any read and returns the SSO session it binds its
// auth request to: the new session's id when it starts one (which must have an id), else
// c.SessionID.
func CompletionSession(c storage.Completion) (string, error) {
	if c.NewSession == nil {
		return c.SessionID, nil
	}
	if c.NewSession.ID == "" {
		return "", errors.New("new session without id")
	}
	return c.NewSession.ID, nil
}

// Complete records the finished sign-in c on ar, the live request it completes: ar becomes Done
// with c's subject, auth time, AMR and session (CompletionSession), and its expiry moves to
// c.ExpiresAt when that is later, so that its code stays redeemable. A request already done
// gives ErrConflict and is left unchanged. The session and the code are the caller's to write.
func Complete(ar *storage.AuthRequest, c storage.Completion) error {
	if ar.Done {
		return fmt.Errorf("auth request already done: %w", storage.ErrConflict)
	}
	sessionID, err := CompletionSession(c)
	if err != nil {
		return err
	}
	ar.Done, ar.Subject, ar.AuthTime, ar.AMR, ar.SessionID = true, c.Subject, c.AuthTime, c.AMR, sessionID
	if c.ExpiresAt.After(ar.ExpiresAt) {
		ar.ExpiresAt = c.ExpiresAt
	}
	return nil
}

// AddClient appends clientID to the session's Clients unless it is there already (each client
// once, in the order they signed in), and reports whether it did: false means there is nothing
// to write.
func AddClient(sess *storage.Session, clientID string) bool {
	if slices.Contains(sess.Clients, clientID) {
		return false
	}
	sess.Clients = append(sess.Clients, clientID)
	return true
}

package provider

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/wecom-oidc/wecom-oidc/storage"
	"github.com/wecom-oidc/wecom-oidc/upstream"
)

const scopeGroups = "groups"

// Email sources, in ClaimsConfig.EmailSources.
const (
	EmailSourceBizMail = "biz_mail" // the corp mailbox WeCom administers
	EmailSourceEmail   = "email"    // the address on the member's profile
)

// ClaimsConfig shapes the claims made from a WeCom profile (design.md §5).
type ClaimsConfig struct {
	// SubjectTemplate makes `sub` from {userid} and {corp_id}; default "{userid}". The result must
	// not contain ':' (the OP library splits opaque access tokens on it).
	SubjectTemplate string
	// EmailSources is the order in which WeCom's addresses are tried; default biz_mail, email.
	EmailSources []string
	// EmailFallback, when set (e.g. "{userid}@corp.example"), makes an address for members who have
	// none; it is always sent with email_verified false.
	EmailFallback string
	// EmailVerified trusts WeCom's addresses (and mobile numbers) as verified.
	EmailVerified bool
	// DefaultGroups are added to every member's groups.
	DefaultGroups []string
}

type claimsMapper struct{ cfg ClaimsConfig }

func newClaimsMapper(cfg ClaimsConfig) (*claimsMapper, error) {
	if cfg.SubjectTemplate == "" {
		cfg.SubjectTemplate = "{userid}"
	}
	if !strings.Contains(cfg.SubjectTemplate, "{userid}") || strings.Contains(cfg.SubjectTemplate, ":") {
		return nil, fmt.Errorf("provider: subject template %q must contain {userid} and no ':'", cfg.SubjectTemplate)
	}
	if len(cfg.EmailSources) == 0 {
		cfg.EmailSources = []string{EmailSourceBizMail, EmailSourceEmail}
	}
	for _, s := range cfg.EmailSources {
		if s != EmailSourceBizMail && s != EmailSourceEmail {
			return nil, fmt.Errorf("provider: unknown email source %q", s)
		}
	}
	return &claimsMapper{cfg: cfg}, nil
}

var errBadSubject = errors.New("provider: subject would be empty or contain ':'")

// user builds the stored user from a fresh identity; prev is the earlier record (zero if none), whose
// first-seen time and operator flags are kept.
func (m *claimsMapper) user(id upstream.Identity, prev storage.User, now time.Time) (storage.User, error) {
	sub := strings.NewReplacer("{userid}", id.UserID, "{corp_id}", id.CorpID).Replace(m.cfg.SubjectTemplate)
	if id.UserID == "" || strings.Contains(sub, ":") {
		return storage.User{}, errBadSubject
	}
	u := storage.User{
		Subject:        sub,
		CorpID:         id.CorpID,
		UserID:         id.UserID,
		Name:           id.Name,
		Alias:          id.Alias,
		Mobile:         id.Mobile,
		Gender:         id.Gender,
		Avatar:         id.Avatar,
		Address:        id.Address,
		Position:       id.Position,
		MainDepartment: id.MainDepartment,
		Status:         id.Status,
		Extra:          id.Extra,
		Disabled:       prev.Disabled,
		FirstSeen:      prev.FirstSeen,
		LastLogin:      now,
	}
	if u.FirstSeen.IsZero() {
		u.FirstSeen = now
	}
	for _, src := range m.cfg.EmailSources {
		addr := id.Email
		if src == EmailSourceEmail {
			addr = id.PersonalEmail
		}
		if addr != "" {
			u.Email, u.EmailVerified = addr, m.cfg.EmailVerified
			break
		}
	}
	if u.Email == "" && m.cfg.EmailFallback != "" {
		u.Email = strings.NewReplacer("{userid}", id.UserID, "{corp_id}", id.CorpID).Replace(m.cfg.EmailFallback)
	}
	for _, d := range id.Departments {
		u.Departments = append(u.Departments, storage.Department{ID: d.ID, Name: d.Name})
		if d.Name != "" {
			u.Groups = append(u.Groups, d.Name)
		} else {
			u.Groups = append(u.Groups, strconv.FormatInt(d.ID, 10))
		}
	}
	for _, g := range m.cfg.DefaultGroups {
		if !slices.Contains(u.Groups, g) {
			u.Groups = append(u.Groups, g)
		}
	}
	return u, nil
}

// setUserinfo fills info with the claims the scopes allow. The subject is always set: the OP
// library copies it into the ID token's `sub`.
func (m *claimsMapper) setUserinfo(info *oidc.UserInfo, u storage.User, scopes []string) {
	info.Subject = u.Subject
	for _, scope := range scopes {
		switch scope {
		case oidc.ScopeProfile:
			info.Name = u.Name
			info.PreferredUsername = u.UserID
			info.Nickname = u.Alias
			info.Picture = u.Avatar
			info.Gender = oidc.Gender(u.Gender)
			info.UpdatedAt = oidc.FromTime(u.LastLogin)
			info.AppendClaims("wecom_corp_id", u.CorpID)
			info.AppendClaims("wecom_userid", u.UserID)
			if u.Position != "" {
				info.AppendClaims("position", u.Position)
			}
			if len(u.Departments) > 0 {
				ids := make([]int64, len(u.Departments))
				for i, d := range u.Departments {
					ids[i] = d.ID
				}
				info.AppendClaims("department", ids)
			}
		case oidc.ScopeEmail:
			if u.Email != "" {
				info.Email = u.Email
				info.EmailVerified = oidc.Bool(u.EmailVerified)
				// The struct field is omitted when false; say it explicitly.
				info.AppendClaims("email_verified", u.EmailVerified)
			}
		case oidc.ScopePhone:
			if u.Mobile != "" {
				info.PhoneNumber = u.Mobile
				info.PhoneNumberVerified = oidc.Bool(m.cfg.EmailVerified)
				info.AppendClaims("phone_number_verified", m.cfg.EmailVerified)
			}
		case oidc.ScopeAddress:
			if u.Address != "" {
				info.Address = &oidc.UserInfoAddress{Formatted: u.Address}
			}
		case scopeGroups:
			groups := u.Groups
			if groups == nil {
				groups = []string{}
			}
			info.AppendClaims("groups", groups)
		}
	}
}

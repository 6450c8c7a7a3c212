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
	// Extra maps further claim names to profile fields, under the profile scope: "alias",
	// "position", "main_department", or "extattr.<attribute name>" (WeCom 扩展属性).
	Extra map[string]string
}

// Group shapes a client may choose for its `groups` claim (storage.Client.Groups).
const (
	GroupsNames = "names" // department names (the id when WeCom withholds a name)
	GroupsIDs   = "ids"   // department ids
	GroupsPaths = "paths" // department paths, "研发中心/平台组"
	GroupsTags  = "tags"  // tag names
)

// standardClaims may not be redefined through ClaimsConfig.Extra.
var standardClaims = map[string]bool{
	"iss": true, "sub": true, "aud": true, "exp": true, "iat": true, "auth_time": true, "nonce": true,
	"acr": true, "amr": true, "azp": true, "sid": true, "at_hash": true, "c_hash": true, "name": true,
	"preferred_username": true, "nickname": true, "picture": true, "gender": true, "updated_at": true,
	"email": true, "email_verified": true, "phone_number": true, "phone_number_verified": true,
	"address": true, "groups": true, "wecom_corp_id": true, "wecom_userid": true, "department": true,
}

type claimsMapper struct{ cfg ClaimsConfig }

func newClaimsMapper(cfg ClaimsConfig) (*claimsMapper, error) {
	if cfg.SubjectTemplate == "" {
		cfg.SubjectTemplate = "{userid}"
	}
	if err := checkSubjectTemplate(cfg.SubjectTemplate); err != nil {
		return nil, err
	}
	if len(cfg.EmailSources) == 0 {
		cfg.EmailSources = []string{EmailSourceBizMail, EmailSourceEmail}
	}
	for _, s := range cfg.EmailSources {
		if s != EmailSourceBizMail && s != EmailSourceEmail {
			return nil, fmt.Errorf("provider: unknown email source %q", s)
		}
	}
	for claim, source := range cfg.Extra {
		if err := CheckExtraClaim(claim, source); err != nil {
			return nil, fmt.Errorf("provider: %w", err)
		}
	}
	return &claimsMapper{cfg: cfg}, nil
}

// CheckExtraClaim validates one ClaimsConfig.Extra entry: a claim name that is not a standard
// claim, and a known source.
func CheckExtraClaim(claim, source string) error {
	if claim == "" || standardClaims[claim] {
		return fmt.Errorf("extra claim %q would be empty or replace a standard claim", claim)
	}
	switch {
	case source == "alias", source == "position", source == "main_department":
	case strings.HasPrefix(source, "extattr.") && len(source) > len("extattr."):
	default:
		return fmt.Errorf("extra claim %q: unknown source %q (alias, position, main_department, extattr.<name>)", claim, source)
	}
	return nil
}

// checkSubjectTemplate applies the rules every subject template must follow.
func checkSubjectTemplate(tmpl string) error {
	if !strings.Contains(tmpl, "{userid}") || strings.Contains(tmpl, ":") {
		return fmt.Errorf("provider: subject template %q must contain {userid} and no ':'", tmpl)
	}
	return nil
}

var errBadSubject = errors.New("provider: subject would be empty or contain ':'")

// subject makes `sub` for a person of an upstream; template "" means the global one.
func (m *claimsMapper) subject(template string, id upstream.Identity) string {
	if template == "" {
		template = m.cfg.SubjectTemplate
	}
	return strings.NewReplacer("{userid}", id.UserID, "{corp_id}", id.CorpID).Replace(template)
}

// user builds the stored user from a fresh identity of the upstream up; prev is the earlier record
// (zero if none), whose first-seen time and operator flags are kept. LastLogin and LastChecked
// are the caller's.
func (m *claimsMapper) user(up Upstream, id upstream.Identity, prev storage.User, now time.Time) (storage.User, error) {
	sub := m.subject(up.SubjectTemplate, id)
	if id.UserID == "" || strings.Contains(sub, ":") {
		return storage.User{}, errBadSubject
	}
	u := storage.User{
		Subject:        sub,
		Upstream:       up.ID,
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
		DisabledAt:     prev.DisabledAt,
		FirstSeen:      prev.FirstSeen,
		LastLogin:      prev.LastLogin,
		LastChecked:    now,
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
	// WeCom discloses e-mail, mobile, avatar, address and gender only through the in-client
	// consent door (apps created after 2022-06-20), so their absence after a desktop login or a
	// re-check says nothing: what an earlier sign-in learned is kept. A fallback address is not
	// kept but recomputed.
	fallback := ""
	if m.cfg.EmailFallback != "" {
		fallback = strings.NewReplacer("{userid}", id.UserID, "{corp_id}", id.CorpID).Replace(m.cfg.EmailFallback)
	}
	if u.Email == "" && prev.Email != "" && prev.Email != fallback {
		u.Email, u.EmailVerified = prev.Email, prev.EmailVerified
	}
	if u.Email == "" {
		u.Email = fallback
	}
	for _, f := range []struct {
		field *string
		old   string
	}{
		{&u.Mobile, prev.Mobile}, {&u.Avatar, prev.Avatar}, {&u.Address, prev.Address}, {&u.Gender, prev.Gender},
	} {
		if *f.field == "" {
			*f.field = f.old
		}
	}
	for _, d := range id.Departments {
		u.Departments = append(u.Departments, storage.Department{ID: d.ID, Name: d.Name, Path: d.Path})
	}
	for _, t := range id.Tags {
		u.Tags = append(u.Tags, storage.Tag{ID: t.ID, Name: t.Name})
	}
	return u, nil
}

// groups is the `groups` claim for a client that asked for the given shapes (nil: names), with
// the default groups after them, each once.
func (m *claimsMapper) groups(u storage.User, shapes []string) []string {
	if len(shapes) == 0 {
		shapes = []string{GroupsNames}
	}
	out := []string{}
	add := func(g string) {
		if g != "" && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	for _, shape := range shapes {
		switch shape {
		case GroupsNames:
			for _, d := range u.Departments {
				if d.Name != "" {
					add(d.Name)
				} else {
					add(strconv.FormatInt(d.ID, 10))
				}
			}
		case GroupsIDs:
			for _, d := range u.Departments {
				add(strconv.FormatInt(d.ID, 10))
			}
		case GroupsPaths:
			for _, d := range u.Departments {
				switch {
				case len(d.Path) > 0:
					add(strings.Join(d.Path, "/"))
				case d.Name != "":
					add(d.Name)
				}
			}
		case GroupsTags:
			for _, t := range u.Tags {
				add(t.Name)
			}
		}
	}
	for _, g := range m.cfg.DefaultGroups {
		add(g)
	}
	return out
}

// setUserinfo fills info with the claims the scopes allow, for a client that wants the given group
// shapes. The subject is always set: the OP library copies it into the ID token's `sub`.
func (m *claimsMapper) setUserinfo(info *oidc.UserInfo, u storage.User, scopes, groupShapes []string) {
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
			for claim, source := range m.cfg.Extra {
				if v := extraValue(u, source); v != nil {
					info.AppendClaims(claim, v)
				}
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
			info.AppendClaims("groups", m.groups(u, groupShapes))
		}
	}
}

// extraValue reads a ClaimsConfig.Extra source from the user; nil when it is empty.
func extraValue(u storage.User, source string) any {
	switch {
	case source == "alias" && u.Alias != "":
		return u.Alias
	case source == "position" && u.Position != "":
		return u.Position
	case source == "main_department" && u.MainDepartment != 0:
		return u.MainDepartment
	case strings.HasPrefix(source, "extattr."):
		if v := u.Extra[strings.TrimPrefix(source, "extattr.")]; v != "" {
			return v
		}
	}
	return nil
}

// CheckSubjectTemplates refuses subject templates that could give two people of different
// upstreams the same `sub`. templates[i] is upstream i's effective template and corpIDs[i] its
// corp. Safe are: templates whose literal prefixes (the text before the first placeholder) are
// non-empty and none a prefix of another ("a-{userid}", "b-{userid}"); or one template for all
// that starts with {corp_id} and a separator that cannot occur in a corp id ("{corp_id}.{userid}"),
// with distinct corps. One upstream never collides.
func CheckSubjectTemplates(templates, corpIDs []string) error {
	if len(templates) < 2 {
		return nil
	}
	prefixFree := true
	for i, a := range templates {
		pa, _, _ := strings.Cut(a, "{")
		if pa == "" {
			prefixFree = false
			break
		}
		for j, b := range templates {
			pb, _, _ := strings.Cut(b, "{")
			if i != j && strings.HasPrefix(pb, pa) {
				prefixFree = false
			}
		}
	}
	if prefixFree {
		return nil
	}
	sameCorpScoped := true
	corps := map[string]bool{}
	for i, t := range templates {
		rest, ok := strings.CutPrefix(t, "{corp_id}")
		if t != templates[0] || !ok || rest == "" || rest[0] == '{' || isAlnum(rest[0]) || corps[corpIDs[i]] {
			sameCorpScoped = false
			break
		}
		corps[corpIDs[i]] = true
	}
	if sameCorpScoped {
		return nil
	}
	return errors.New("subject templates of several upstreams could collide: use one template such as \"{corp_id}.{userid}\" for all (distinct corps), or give each a distinct literal prefix (\"a-{userid}\", \"b-{userid}\")")
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

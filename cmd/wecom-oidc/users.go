package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/wecom-oidc/wecom-oidc/storage"
)

const usersUsage = `usage:
  wecom-oidc users list            everyone who has signed in
  wecom-oidc users show SUB        one person's record
  wecom-oidc users disable SUB     refuse their logins and refreshes; revoke their tokens
  wecom-oidc users enable SUB      let them sign in again (revoked tokens stay revoked)
(all take --config FILE; they work while the server runs and when it is stopped)`

// runUsers: `wecom-oidc users list|show|disable|enable`.
func runUsers(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("missing users command\n%s", usersUsage)
	}
	sub := args[0]
	wantArgs := 1
	switch sub {
	case "list":
		wantArgs = 0
	case "show", "disable", "enable":
	default:
		return fmt.Errorf("unknown users command %q\n%s", sub, usersUsage)
	}
	fs, configPath := newFlagSet("users "+sub, getenv, stderr)
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != wantArgs {
		if wantArgs == 0 {
			return fmt.Errorf("usage: wecom-oidc users %s [--config FILE]", sub)
		}
		return fmt.Errorf("usage: wecom-oidc users %s SUB [--config FILE]", sub)
	}
	cfg, err := LoadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	return withAdmin(ctx, cfg, func(a admin) error {
		switch sub {
		case "list":
			us, err := a.ListUsers(ctx)
			if err != nil {
				return err
			}
			return printUsers(stdout, us)
		case "show":
			u, err := a.GetUser(ctx, pos[0])
			if err != nil {
				return err
			}
			printUser(stdout, u)
			return nil
		case "disable":
			ch, err := a.DisableUser(ctx, pos[0])
			if err != nil {
				return err
			}
			if ch.Changed {
				fmt.Fprintf(stdout, "disabled user %q", pos[0])
			} else {
				fmt.Fprintf(stdout, "user %q was already disabled", pos[0])
			}
			fmt.Fprintf(stdout, "; revoked %d refresh token famil%s and their access tokens\n", ch.RevokedFamilies, plural(ch.RevokedFamilies, "y", "ies"))
			return nil
		default: // enable
			ch, err := a.EnableUser(ctx, pos[0])
			if err != nil {
				return err
			}
			if ch.Changed {
				fmt.Fprintf(stdout, "enabled user %q: they may sign in again (tokens revoked earlier stay revoked)\n", pos[0])
			} else {
				fmt.Fprintf(stdout, "user %q was not disabled\n", pos[0])
			}
			return nil
		}
	})
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// wecomStatus names WeCom's user/get status values.
func wecomStatus(s int) string {
	switch s {
	case 0:
		return "-"
	case 1:
		return "active"
	case 2:
		return "disabled-in-wecom"
	case 4:
		return "not-activated"
	case 5:
		return "left"
	default:
		return strconv.Itoa(s)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// corpUpstream is "corp/upstream", or whichever of the two is known.
func corpUpstream(u storage.User) string {
	parts := slices.DeleteFunc([]string{u.CorpID, u.Upstream}, func(s string) bool { return s == "" })
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "/")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printUsers(w io.Writer, us []storage.User) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBJECT\tNAME\tCORP/UPSTREAM\tSTATUS\tDISABLED\tLAST LOGIN")
	for _, u := range us {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Subject, orDash(u.Name), corpUpstream(u), wecomStatus(u.Status), yesNo(u.Disabled), timeOrDash(u.LastLogin))
	}
	return tw.Flush()
}

func printUser(w io.Writer, u storage.User) {
	line := func(k, v string) { fmt.Fprintf(w, "%-16s %s\n", k+":", v) }
	line("subject", u.Subject)
	line("userid", u.UserID)
	line("name", orDash(u.Name))
	if u.Alias != "" {
		line("alias", u.Alias)
	}
	line("corp", orDash(u.CorpID))
	line("upstream", orDash(u.Upstream))
	line("status", wecomStatus(u.Status))
	line("disabled", yesNo(u.Disabled))
	email := orDash(u.Email)
	if u.Email != "" && u.EmailVerified {
		email += " (verified)"
	}
	line("email", email)
	line("mobile", orDash(u.Mobile))
	if u.Gender != "" {
		line("gender", u.Gender)
	}
	line("position", orDash(u.Position))
	if u.Address != "" {
		line("address", u.Address)
	}
	if u.Avatar != "" {
		line("avatar", u.Avatar)
	}
	if len(u.Departments) == 0 {
		line("departments", "-")
	}
	for i, d := range u.Departments {
		k := ""
		if i == 0 {
			k = "departments"
		}
		desc := fmt.Sprintf("%d %s", d.ID, orDash(d.Name))
		if len(d.Path) > 0 {
			desc += " (" + strings.Join(d.Path, "/") + ")"
		}
		if d.ID == u.MainDepartment {
			desc += " [main]"
		}
		fmt.Fprintf(w, "%-16s %s\n", k+strings.Repeat(":", min(len(k), 1)), desc)
	}
	tags := make([]string, len(u.Tags))
	for i, t := range u.Tags {
		tags[i] = fmt.Sprintf("%s (%d)", orDash(t.Name), t.ID)
	}
	line("tags", orDash(strings.Join(tags, ", ")))
	keys := make([]string, 0, len(u.Extra))
	for k := range u.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		line("extra."+k, u.Extra[k])
	}
	line("first seen", timeOrDash(u.FirstSeen))
	line("last login", timeOrDash(u.LastLogin))
	line("last checked", timeOrDash(u.LastChecked))
}

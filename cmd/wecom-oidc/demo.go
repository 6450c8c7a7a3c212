package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/client/rp"
	httphelper "github.com/zitadel/oidc/v3/pkg/http"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// The demo relying party of `wecom-oidc dev`: a confidential client that signs in with code +
// PKCE through zitadel's certified RP package, verifies the ID token against /keys, calls
// userinfo, and shows both.
const (
	demoPrefix       = "/demo/"
	demoCallbackPath = "/demo/callback"
)

type demo struct {
	issuer, clientID, secret string
	cookies                  *httphelper.CookieHandler

	mu    sync.Mutex
	party rp.RelyingParty // built on first use: discovery needs the server to be up
}

func newDemo(issuer, clientID, secret string) *demo {
	hashKey, encKey := make([]byte, 32), make([]byte, 32)
	rand.Read(hashKey)
	rand.Read(encKey)
	return &demo{
		issuer: issuer, clientID: clientID, secret: secret,
		cookies: httphelper.NewCookieHandler(hashKey, encKey, httphelper.WithUnsecure()),
	}
}

func (d *demo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.URL.Path {
	case demoPrefix:
		d.render(w, http.StatusOK, demoView{Issuer: d.issuer})
	case demoPrefix + "login":
		party, err := d.relyingParty(r.Context())
		if err != nil {
			d.render(w, http.StatusBadGateway, demoView{Issuer: d.issuer, Error: "discovery failed: " + err.Error()})
			return
		}
		rp.AuthURLHandler(rand.Text, party)(w, r)
	case demoCallbackPath:
		party, err := d.relyingParty(r.Context())
		if err != nil {
			d.render(w, http.StatusBadGateway, demoView{Issuer: d.issuer, Error: "discovery failed: " + err.Error()})
			return
		}
		rp.CodeExchangeHandler(rp.UserinfoCallback(d.signedIn), party)(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (d *demo) signedIn(w http.ResponseWriter, _ *http.Request, tokens *oidc.Tokens[*oidc.IDTokenClaims], _ string, _ rp.RelyingParty, info *oidc.UserInfo) {
	claims := tokens.IDTokenClaims
	view := demoView{
		Issuer:     d.issuer,
		SignedIn:   true,
		Name:       claims.Name,
		Username:   claims.PreferredUsername,
		Email:      claims.Email,
		Phone:      claims.PhoneNumber,
		IDToken:    prettyJSON(claims),
		Userinfo:   prettyJSON(info),
		Refreshing: tokens.RefreshToken != "",
	}
	if g, ok := claims.Claims["groups"].([]any); ok {
		for _, v := range g {
			if s, ok := v.(string); ok {
				view.Groups = append(view.Groups, s)
			}
		}
	}
	d.render(w, http.StatusOK, view)
}

func (d *demo) relyingParty(ctx context.Context) (rp.RelyingParty, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.party != nil {
		return d.party, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	party, err := rp.NewRelyingPartyOIDC(ctx, d.issuer, d.clientID, d.secret, d.issuer+demoCallbackPath,
		[]string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopePhone, "groups", oidc.ScopeOfflineAccess},
		rp.WithPKCE(d.cookies),
		rp.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}),
		rp.WithErrorHandler(func(w http.ResponseWriter, _ *http.Request, errorType, errorDesc, _ string) {
			d.render(w, http.StatusForbidden, demoView{Issuer: d.issuer, Error: errorType + ": " + errorDesc})
		}),
		rp.WithUnauthorizedHandler(func(w http.ResponseWriter, _ *http.Request, desc, _ string) {
			d.render(w, http.StatusUnauthorized, demoView{Issuer: d.issuer, Error: desc})
		}),
	)
	if err != nil {
		return nil, err
	}
	d.party = party
	return party, nil
}

func prettyJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err.Error()
	}
	return string(b)
}

type demoView struct {
	Issuer                       string
	SignedIn                     bool
	Name, Username, Email, Phone string
	Groups                       []string
	IDToken, Userinfo            string
	Refreshing                   bool
	Error                        string
}

func (d *demo) render(w http.ResponseWriter, status int, v demoView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_ = demoTemplate.Execute(w, v)
}

var demoTemplate = template.Must(template.New("demo").Parse(`<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>wecom-oidc demo</title>
<style>
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif;margin:0;background:#f5f6f7;color:#1f2329}
main{max-width:52rem;margin:3rem auto;background:#fff;border-radius:8px;padding:2rem;box-shadow:0 1px 4px rgba(0,0,0,.08)}
a.button{display:inline-block;background:#0082ef;color:#fff;padding:.7rem 1.4rem;border-radius:6px;text-decoration:none}
pre{background:#f0f2f5;padding:1rem;border-radius:6px;overflow:auto;font-size:.85rem}
dt{font-weight:600;margin-top:.5rem} .error{color:#c0392b} .muted{color:#646a73}
</style></head><body><main>
<h1>wecom-oidc demo</h1>
<p class="muted">Issuer: <code>{{.Issuer}}</code> · simulated WeCom · 模拟企业微信</p>
{{if .Error}}<p class="error" id="error">{{.Error}}</p>{{end}}
{{if .SignedIn}}
<h2 id="welcome">你好，{{.Name}}</h2>
<dl>
<dt>name</dt><dd id="claim-name">{{.Name}}</dd>
<dt>preferred_username</dt><dd id="claim-preferred-username">{{.Username}}</dd>
<dt>email</dt><dd id="claim-email">{{if .Email}}{{.Email}}{{else}}<span class="muted">(none)</span>{{end}}</dd>
<dt>phone_number</dt><dd id="claim-phone">{{if .Phone}}{{.Phone}}{{else}}<span class="muted">(none)</span>{{end}}</dd>
<dt>groups</dt><dd id="claim-groups">{{range $i, $g := .Groups}}{{if $i}}, {{end}}{{$g}}{{end}}</dd>
<dt>refresh token</dt><dd>{{if .Refreshing}}issued (offline_access){{else}}none{{end}}</dd>
</dl>
<h3>ID token claims (verified against /keys)</h3><pre id="id-token">{{.IDToken}}</pre>
<h3>userinfo</h3><pre id="userinfo">{{.Userinfo}}</pre>
<p><a class="button" href="/demo/login">Sign in again</a></p>
{{else}}
<p>Sign in through the simulated WeCom to see the claims an application receives.</p>
<p><a class="button" id="signin" href="/demo/login">使用企业微信登录 · Sign in with WeCom</a></p>
{{end}}
</main></body></html>
`))

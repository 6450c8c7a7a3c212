package provider

import (
	"html/template"
	"net/http"
	"strings"
)

// message is a text shown to the person, in Chinese and English. Pages show only these texts:
// nothing from a query string or from WeCom reaches them.
type message struct {
	Title, Body map[string]string
}

var (
	msgRequestExpired = message{
		Title: map[string]string{"zh": "登录请求已失效", "en": "This sign-in request has expired"},
		Body: map[string]string{
			"zh": "登录请求不存在或已超时。请回到应用重新登录。",
			"en": "The sign-in request is unknown or has timed out. Go back to the application and sign in again.",
		},
	}
	msgOtherBrowser = message{
		Title: map[string]string{"zh": "请在同一浏览器中完成登录", "en": "Finish signing in in the same browser"},
		Body: map[string]string{
			"zh": "此登录步骤属于另一个浏览器发起的登录。请回到应用，在当前浏览器中重新登录。",
			"en": "This sign-in step belongs to a sign-in started in another browser. Go back to the application and sign in again from this browser.",
		},
	}
	msgBadCallback = message{
		Title: map[string]string{"zh": "无效的企业微信回调", "en": "Invalid WeCom callback"},
		Body: map[string]string{
			"zh": "企业微信返回的登录参数不完整或格式错误。请回到应用重新登录。",
			"en": "The sign-in parameters returned by WeCom are missing or malformed. Go back to the application and sign in again.",
		},
	}
	msgStateUsed = message{
		Title: map[string]string{"zh": "登录链接已使用或已过期", "en": "This sign-in link was already used or has expired"},
		Body: map[string]string{
			"zh": "每个企业微信登录链接只能使用一次，且在十分钟内有效。请回到应用重新登录。",
			"en": "Each WeCom sign-in link works once, within ten minutes. Go back to the application and sign in again.",
		},
	}
	msgInternal = message{
		Title: map[string]string{"zh": "登录服务暂时出错", "en": "The sign-in service had a problem"},
		Body: map[string]string{
			"zh": "请稍后重试。如果问题持续，请联系管理员。",
			"en": "Please try again in a moment. If it keeps happening, contact your administrator.",
		},
	}
	msgLoggedOut = message{
		Title: map[string]string{"zh": "已退出登录", "en": "You are signed out"},
		Body:  map[string]string{"zh": "您已退出登录，可以关闭此页面。", "en": "You have signed out. You may close this page."},
	}
)

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="{{.Lang}}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif;margin:0;background:#f5f6f7;color:#1f2329}
main{max-width:32rem;margin:12vh auto;background:#fff;border-radius:8px;padding:2rem;box-shadow:0 1px 4px rgba(0,0,0,.08)}
h1{font-size:1.3rem;margin-top:0}
</style></head>
<body><main role="main"><h1>{{.Title}}</h1><p>{{.Body}}</p></main></body></html>
`))

// renderPage writes a message page. Security headers are set here too: failPage is also reached
// from inside the OP library's router, where our page middleware does not run.
func (p *Provider) renderPage(w http.ResponseWriter, lang string, status int, msg message) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = pageTemplate.Execute(w, map[string]string{"Lang": lang, "Title": msg.Title[lang], "Body": msg.Body[lang]})
}

// pickLang chooses "zh" or "en": the first supported of the request's ui_locales, then of
// Accept-Language; Chinese by default (WeCom's people).
func pickLang(uiLocales []string, acceptLanguage string) string {
	candidates := append([]string(nil), uiLocales...)
	for _, part := range strings.Split(acceptLanguage, ",") {
		tag, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		candidates = append(candidates, tag)
	}
	for _, c := range candidates {
		switch primary, _, _ := strings.Cut(strings.ToLower(c), "-"); primary {
		case "zh":
			return "zh"
		case "en":
			return "en"
		}
	}
	return "zh"
}

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
	msgNotVisible = message{
		Title: map[string]string{"zh": "您无权使用此应用", "en": "You are not allowed to use this application"},
		Body: map[string]string{
			"zh": "您的企业微信帐号不在此应用的可见范围内。如需使用，请联系企业微信管理员将您加入应用的可见范围。",
			"en": "Your WeCom account is outside this application's visible range. Ask your WeCom administrator to add you to the application's visible range.",
		},
	}
	msgUnavailable = message{
		Title: map[string]string{"zh": "暂时无法连接企业微信", "en": "WeCom cannot be reached right now"},
		Body: map[string]string{
			"zh": "企业微信没有及时响应或返回了错误。请稍后重试；如果问题持续，请联系管理员。",
			"en": "WeCom did not answer in time or answered with an error. Try again in a moment; if it keeps happening, contact your administrator.",
		},
	}
	msgMisconfigured = message{
		Title: map[string]string{"zh": "登录服务配置有误", "en": "The sign-in service is misconfigured"},
		Body: map[string]string{
			"zh": "企业微信拒绝了本服务的配置（例如应用密钥、可信域名或可信 IP）。请联系管理员；重试无法解决此问题。",
			"en": "WeCom refused this service's setup (for example the app secret, trusted domain or trusted IP). Contact your administrator; trying again will not help.",
		},
	}
	msgChooser = message{
		Title: map[string]string{"zh": "选择登录的企业", "en": "Choose your organisation"},
		Body: map[string]string{
			"zh": "此登录服务连接了多个企业微信企业。请选择您所在的企业：",
			"en": "This sign-in service serves several WeCom organisations. Choose yours:",
		},
	}
	msgBadRequest = message{
		Title: map[string]string{"zh": "无效的登录请求", "en": "Invalid sign-in request"},
		Body: map[string]string{
			"zh": "应用发来的登录请求无效（例如回调地址未登记，或参数过长）。请联系应用的管理员。",
			"en": "The application sent an invalid sign-in request (for example an unregistered redirect URI, or parameters that are too long). Contact the application's administrator.",
		},
	}
	msgRetry     = message{Title: map[string]string{"zh": "重试", "en": "Try again"}}
	msgReturn    = message{Title: map[string]string{"zh": "返回应用", "en": "Back to the application"}}
	msgLoggedOut = message{
		Title: map[string]string{"zh": "已退出登录", "en": "You are signed out"},
		Body:  map[string]string{"zh": "您已退出登录，可以关闭此页面。", "en": "You have signed out. You may close this page."},
	}
)

// pageStyle is the CSS of every page we render (inline: the pages load nothing else).
const pageStyle = `body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif;margin:0;background:#f5f6f7;color:#1f2329}
main{max-width:32rem;margin:12vh auto;background:#fff;border-radius:8px;padding:2rem;box-shadow:0 1px 4px rgba(0,0,0,.08)}
@media (max-width:36rem){main{margin:1rem;padding:1.5rem}}
h1{font-size:1.3rem;margin-top:0}
ul.links{list-style:none;padding:0;margin:1.5rem 0 0}
ul.links li{margin:.5rem 0}
ul.links a{display:block;padding:.75rem 1rem;border:1px solid #dee0e3;border-radius:6px;color:#1f2329;text-decoration:none}
ul.links a:hover,ul.links a:focus{border-color:#0082ef;outline:2px solid #0082ef33}
`

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="{{.Lang}}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>` + pageStyle + `</style></head>
<body><main role="main"><h1>{{.Title}}</h1><p>{{.Body}}</p>
{{if .Links}}<ul class="links">{{range .Links}}<li><a id="{{.ID}}" href="{{.Href}}">{{.Text}}</a></li>{{end}}</ul>{{end}}
</main></body></html>
`))

// link is a choice offered on a page.
type link struct {
	ID, Href string
	Text     message // Title holds the text
}

// renderPage writes a message page. Security headers are set here too: failPage is also reached
// from inside the OP library's router, where our page middleware does not run.
func (p *Provider) renderPage(w http.ResponseWriter, lang string, status int, msg message, links ...link) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	setPageHeaders(h, "")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = pageTemplate.Execute(w, struct {
		Lang, Title, Body string
		Links             []shownLink
	}{lang, msg.Title[lang], msg.Body[lang], shownLinks(lang, links...)})
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

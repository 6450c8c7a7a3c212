package provider

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
)

// Texts of the cross-device pages: the computer's QR page, the phone's confirmation, the device
// verification. As everywhere, only our own texts are shown, plus the application's registered
// name, a user code we minted and the person's name from our user record — all escaped.
var (
	msgScanTitle = message{Title: map[string]string{"zh": "使用企业微信扫码登录", "en": "Scan with the WeCom app to sign in"}}
	msgScanBody  = message{Title: map[string]string{
		"zh": "打开手机上的企业微信，点击右上角“+”中的“扫一扫”，扫描下面的二维码，在手机上确认后，此页面会自动继续。这样登录会一并提供您的手机号和邮箱。",
		"en": "Open the WeCom app on your phone, tap “+” then “Scan”, and scan the code below. Confirm on your phone and this page continues by itself. Signing in this way also shares your mobile number and email.",
	}}
	msgScanOffer = message{Title: map[string]string{
		"zh": "也可以用手机企业微信扫码登录，以一并提供手机号和邮箱：",
		"en": "Or scan with the WeCom app on your phone to share your mobile number and email as well:",
	}}
	msgWebLogin        = message{Title: map[string]string{"zh": "使用企业微信网页登录", "en": "Sign in with the WeCom web login"}}
	msgWebLoginInstead = message{Title: map[string]string{"zh": "改用企业微信网页登录（不含手机号和邮箱）", "en": "Use the WeCom web login instead (no mobile number or email)"}}
	// The status line of the QR page, by scan status; the page's script swaps them in.
	scanStatusText = map[string]message{
		scanPending:   {Title: map[string]string{"zh": "等待扫码…", "en": "Waiting for the scan…"}},
		scanOpened:    {Title: map[string]string{"zh": "已扫码，请在手机上确认。", "en": "Scanned. Confirm on your phone."}},
		scanConfirmed: {Title: map[string]string{"zh": "已确认，正在通过企业微信登录…", "en": "Confirmed. Signing in with WeCom…"}},
		scanApproved:  {Title: map[string]string{"zh": "登录成功，正在继续…", "en": "Signed in. Continuing…"}},
		scanExpired:   {Title: map[string]string{"zh": "二维码已过期，正在刷新…", "en": "The code has expired. Refreshing…"}},
	}

	msgOpenInApp = message{
		Title: map[string]string{"zh": "请使用企业微信扫码", "en": "Scan this code with the WeCom app"},
		Body: map[string]string{
			"zh": "此二维码需要用手机上的企业微信 App 扫描（“+” → “扫一扫”），而不是相机或其他应用。",
			"en": "This code must be scanned with the WeCom app on your phone (“+” → “Scan”), not with the camera or another app.",
		},
	}
	msgScanUsed = message{
		Title: map[string]string{"zh": "二维码已失效", "en": "This code no longer works"},
		Body: map[string]string{
			"zh": "二维码已过期、已被使用，或已在另一部手机上打开。请在电脑上刷新二维码后重新扫描。",
			"en": "The code has expired, was already used, or was opened on another phone. Refresh the code on the computer and scan it again.",
		},
	}
	msgScanConfirmTitle = message{Title: map[string]string{"zh": "在电脑上登录 %s？", "en": "Sign in to %s on a computer?"}}
	msgScanConfirmBody  = message{Title: map[string]string{
		"zh": "一台电脑上显示的二维码请求以您的企业微信身份登录此应用。只有当您本人正在电脑前登录时才确认；如果二维码是别人发给您的，请取消。确认后，企业微信会请您授权提供手机号、邮箱等信息。",
		"en": "A computer showing this code asks to sign you in to this application with your WeCom account. Confirm only if you are signing in at a computer in front of you; if someone sent you this code, cancel. WeCom will then ask you to share your mobile number, email and photo.",
	}}
	msgConfirmSignIn = message{Title: map[string]string{"zh": "确认登录", "en": "Confirm sign-in"}}
	msgCancel        = message{Title: map[string]string{"zh": "取消", "en": "Cancel"}}
	msgScanCancelled = message{
		Title: map[string]string{"zh": "已取消登录", "en": "Sign-in cancelled"},
		Body:  map[string]string{"zh": "电脑上的登录已取消。可以关闭此页面。", "en": "The sign-in on the computer was cancelled. You may close this page."},
	}
	msgScanDone = message{
		Title: map[string]string{"zh": "已在电脑上登录", "en": "You are signed in on the computer"},
		Body:  map[string]string{"zh": "请回到电脑继续。可以关闭此页面。", "en": "Go back to the computer to continue. You may close this page."},
	}
	msgScanDeniedDesktop = message{
		Title: map[string]string{"zh": "手机上已取消登录", "en": "The sign-in was cancelled on the phone"},
		Body: map[string]string{
			"zh": "扫码登录在手机上被取消或被企业微信拒绝。您可以重新扫码，或返回应用。",
			"en": "The scan sign-in was cancelled on the phone or refused by WeCom. You can scan again, or go back to the application.",
		},
	}
	msgScanAgain = message{Title: map[string]string{"zh": "重新扫码", "en": "Scan again"}}

	msgDeviceTitle = message{Title: map[string]string{"zh": "登录设备", "en": "Sign in a device"}}
	msgDeviceBody  = message{Title: map[string]string{
		"zh": "请输入设备或命令行工具上显示的代码。",
		"en": "Enter the code shown on your device or command-line tool.",
	}}
	msgDeviceUnknown = message{Title: map[string]string{
		"zh": "代码无效或已过期，请核对后重新输入，或在设备上重新开始登录。",
		"en": "The code is wrong or has expired. Check it and enter it again, or start the sign-in on the device again.",
	}}
	msgDeviceTooMany = message{Title: map[string]string{
		"zh": "输入错误的代码次数过多，请一分钟后再试。",
		"en": "Too many wrong codes. Try again in a minute.",
	}}
	msgDeviceUsed = message{
		Title: map[string]string{"zh": "此代码已使用", "en": "This code was already used"},
		Body:  map[string]string{"zh": "此代码已被确认或拒绝。如需登录，请在设备上重新开始。", "en": "This code was already approved or denied. To sign in, start again on the device."},
	}
	msgContinue         = message{Title: map[string]string{"zh": "继续", "en": "Continue"}}
	msgDeviceCodeLabel  = message{Title: map[string]string{"zh": "设备代码", "en": "Device code"}}
	msgDeviceConfirmTtl = message{Title: map[string]string{"zh": "允许 %s 在设备上登录？", "en": "Allow %s to sign in on your device?"}}
	msgDeviceConfirm    = message{Title: map[string]string{
		"zh": "您正以 %s 的身份，为显示以下代码的设备登录。只有当此代码显示在您自己的设备上时才允许；如果代码是别人发给您的，请拒绝。",
		"en": "You are signing in as %s on the device that shows the code below. Allow only if this code is shown on your own device; if someone sent you this code, deny.",
	}}
	msgAllow        = message{Title: map[string]string{"zh": "允许", "en": "Allow"}}
	msgDeny         = message{Title: map[string]string{"zh": "拒绝", "en": "Deny"}}
	msgDeviceDone   = message{Title: map[string]string{"zh": "设备已登录", "en": "Your device is signed in"}, Body: map[string]string{"zh": "请回到设备继续。可以关闭此页面。", "en": "Go back to your device to continue. You may close this page."}}
	msgDeviceDenied = message{Title: map[string]string{"zh": "已拒绝", "en": "Denied"}, Body: map[string]string{"zh": "设备没有登录。可以关闭此页面。", "en": "The device was not signed in. You may close this page."}}
)

// flowPage is a page of the cross-device flows: a message, then optionally a QR code with a status
// line, a form, and links.
type flowPage struct {
	Lang, Title, Body string
	Detail            string        // one emphasised line: a user code, an application
	QR                template.HTML // from qrSVG
	QRLink            string        // the QR code's link, also shown as text
	Status            string        // the status line under the QR code
	// Poll, when set, is where the page's script reads the scan status; Messages the status
	// texts it shows (JSON, by status).
	Poll, Messages string
	LinksFirst     bool // links above the QR code (desktop_scan: offer)
	Form           *flowForm
	Links          []shownLink
	Error          string // shown above the form
}

type flowForm struct {
	Method, Action string
	Hidden         map[string]string
	// Input, when set, is a text field with this name and label.
	Input, InputLabel, InputValue string
	Buttons                       []flowButton
}

type flowButton struct{ Name, Value, Text string }

type shownLink struct{ ID, Href, Text string }

var flowTemplate = template.Must(template.New("flow").Parse(`<!doctype html>
<html lang="{{.Lang}}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>` + pageStyle + `
.qr{text-align:center;margin:1.5rem 0 .5rem}
.qr svg{max-width:100%;height:auto}
.status{text-align:center;color:#646a73;min-height:1.5em}
.qrlink{text-align:center;font-size:.8rem;color:#8f959e;word-break:break-all}
.detail{font-size:1.4rem;font-weight:600;letter-spacing:.08em;text-align:center;margin:1rem 0}
.error{color:#d83931}
form{margin-top:1.5rem}
input[type=text]{font-size:1.3rem;padding:.6rem;width:100%;box-sizing:border-box;letter-spacing:.1em;text-transform:uppercase;border:1px solid #dee0e3;border-radius:6px}
label{display:block;margin-bottom:.5rem}
button{font-size:1rem;padding:.75rem 1rem;border-radius:6px;border:1px solid #dee0e3;background:#fff;color:#1f2329;margin:.5rem .5rem 0 0;min-width:7rem}
button.primary{background:#0082ef;border-color:#0082ef;color:#fff}
</style></head>
<body><main role="main"><h1>{{.Title}}</h1><p>{{.Body}}</p>
{{if .Detail}}<p class="detail" id="detail">{{.Detail}}</p>{{end}}
{{if and .LinksFirst .Links}}<ul class="links">{{range .Links}}<li><a id="{{.ID}}" href="{{.Href}}">{{.Text}}</a></li>{{end}}</ul>{{end}}
{{if .QR}}<div class="qr" id="qr" data-poll="{{.Poll}}" data-messages="{{.Messages}}">{{.QR}}</div>
<p class="status" id="scan-status" role="status" aria-live="polite">{{.Status}}</p>
<p class="qrlink" id="qr-link">{{.QRLink}}</p>{{end}}
{{if .Error}}<p class="error" id="error" role="alert">{{.Error}}</p>{{end}}
{{with .Form}}<form method="{{.Method}}" action="{{.Action}}">
{{range $k, $v := .Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
{{if .Input}}<label for="{{.Input}}">{{.InputLabel}}</label><input type="text" id="{{.Input}}" name="{{.Input}}" value="{{.InputValue}}" autocomplete="off" autocapitalize="characters" spellcheck="false" maxlength="32" required>{{end}}
{{range $i, $b := .Buttons}}<button type="submit" id="{{$b.Name}}-{{$b.Value}}" name="{{$b.Name}}" value="{{$b.Value}}"{{if eq $i 0}} class="primary"{{end}}>{{$b.Text}}</button>{{end}}
</form>{{end}}
{{if and (not .LinksFirst) .Links}}<ul class="links">{{range .Links}}<li><a id="{{.ID}}" href="{{.Href}}">{{.Text}}</a></li>{{end}}</ul>{{end}}
</main>{{if .Poll}}<script>` + scanScript + `</script>{{end}}</body></html>
`))

// scanScript polls the scan status and follows the server's next step. It is constant, so the
// page's Content-Security-Policy allows exactly it by hash; what varies is in data attributes.
const scanScript = `(function(){var q=document.getElementById("qr"),s=document.getElementById("scan-status"),m=JSON.parse(q.dataset.messages);` +
	`function poll(){fetch(q.dataset.poll,{credentials:"same-origin",cache:"no-store"}).then(function(r){return r.json()}).then(function(d){` +
	`if(m[d.status])s.textContent=m[d.status];if(d.next){location.replace(d.next);return}setTimeout(poll,1500)})` +
	`.catch(function(){setTimeout(poll,4000)})}setTimeout(poll,1500)})();`

var scanScriptHash = func() string {
	sum := sha256.Sum256([]byte(scanScript))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}()

// renderFlow writes a flow page. A page that polls may run its one script and fetch from this
// origin; the others run nothing.
func (p *Provider) renderFlow(w http.ResponseWriter, status int, page flowPage) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	setPageHeaders(h, "")
	if page.Poll != "" {
		h.Set("Content-Security-Policy", h.Get("Content-Security-Policy")+"; script-src "+scanScriptHash+"; connect-src 'self'")
	}
	if page.Form != nil && page.Form.Method == http.MethodPost {
		// Forms post only to this origin, and say so: under no-referrer a browser sends
		// "Origin: null" with the post, which sameOrigin refuses.
		h.Set("Content-Security-Policy", h.Get("Content-Security-Policy")+"; form-action 'self'")
		h.Set("Referrer-Policy", "same-origin")
	}
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = flowTemplate.Execute(w, page)
}

// statusMessages is the JSON the QR page's script shows by status, in lang.
func statusMessages(lang string) string {
	out := make(map[string]string, len(scanStatusText))
	for k, m := range scanStatusText {
		out[k] = m.Title[lang]
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func shownLinks(lang string, links ...link) []shownLink {
	out := make([]shownLink, len(links))
	for i, l := range links {
		out[i] = shownLink{ID: l.ID, Href: l.Href, Text: l.Text.Title[lang]}
	}
	return out
}

// normalizeUserCode turns what a person typed into a user code's canonical form: letters of the
// code's alphabet only, upper case, a dash after every four ("bcdf ghjk" → "BCDF-GHJK"). "" when
// it cannot be one.
func normalizeUserCode(typed string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(typed) {
		switch {
		case strings.ContainsRune(userCodeAlphabet, r):
			b.WriteRune(r)
		case r == '-' || r == ' ' || r == '\t':
		default:
			return ""
		}
	}
	code := b.String()
	if len(code) != userCodeLength {
		return ""
	}
	return code[:4] + "-" + code[4:]
}

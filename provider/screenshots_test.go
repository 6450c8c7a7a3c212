//go:build screenshots

package provider_test

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wecom-oidc/wecom-oidc/upstream/wecom/wecomsim"
)

// TestScreenshots renders the pages people see when something is in the way — the chooser of
// several corps, WeCom unreachable, outside the app's visible range — in Chinese and English, in
// Debian's Chromium, and saves them as PNG files in $SCREENSHOT_DIR (default ../screenshots).
// `make screenshots` runs it; it needs /usr/bin/chromium and a CJK font (fonts-wqy-zenhei).
func TestScreenshots(t *testing.T) {
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(chromium); err != nil {
		t.Fatalf("%s not found: install Debian's chromium and fonts-wqy-zenhei (make screenshots does)", chromium)
	}
	dir := os.Getenv("SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join("..", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	autoLogin := func(user string) func(*wecomsim.Config) {
		return func(c *wecomsim.Config) { c.AutoLogin = user }
	}
	op := newConfOP(t, harnessOptions{
		corps:   []func(*wecomsim.Config){autoLogin("zhangsan"), autoLogin("lisi")},
		subject: "{corp_id}.{userid}",
	})
	corpA, corpB := op.h.sims[0], op.h.sims[1]
	corpA.SetHTTPStatus("auth/getuserinfo", 502) // corp A's WeCom is down
	corpB.SetVisible("lisi", false)              // lisi is outside corp B's app range

	for _, lang := range []string{"zh", "en"} {
		shots := []struct{ name, hint string }{
			{"chooser", ""},
			{"error-unavailable", "corp-a"},
			{"error-not-visible", "corp-b"},
		}
		for _, s := range shots {
			v := authParams(cWeb, "ui_locales", lang)
			if s.hint != "" {
				v.Set("idp_hint", s.hint)
			}
			path := filepath.Join(dir, s.name+"-"+lang+".png")
			shoot(t, chromium, op.authorizeURL(v), path)
		}
	}
}

func shoot(t *testing.T, chromium, target, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_ = os.Remove(path)
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(), "--window-size=900,640", "--screenshot="+path, target)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot at %s: %v", path, err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", path, err)
	}
	// A rendered page has text and a card on a tinted background: many distinct colours. A blank
	// or failed render has one or two.
	colours := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|bl>>8] = true
		}
	}
	if len(colours) < 20 {
		t.Fatalf("%s looks blank (%d colours)", path, len(colours))
	}
	t.Logf("saved %s (%dx%d, %d colours)", path, b.Dx(), b.Dy(), len(colours))
}

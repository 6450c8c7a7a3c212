package provider

import (
	"fmt"
	"html/template"
	"strings"

	"rsc.io/qr"
)

// qrQuietZone is the blank margin around a QR code, in modules: ISO/IEC 18004 asks for four, and
// phone scanners miss codes drawn with less.
const qrQuietZone = 4

// qrSVG draws text as a QR code (error correction level M: a code on a screen photographed at
// an angle still reads) in an inline SVG element of the given size in CSS pixels. Inline, so the
// page's Content-Security-Policy needs no image source, and no service outside this process sees
// the link.
func qrSVG(text string, sizePx int, label string) (template.HTML, error) {
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		return "", fmt.Errorf("provider: QR code: %w", err)
	}
	n := code.Size + 2*qrQuietZone
	var path strings.Builder
	for y := 0; y < code.Size; y++ {
		for x := 0; x < code.Size; x++ {
			if !code.Black(x, y) {
				continue
			}
			// A run of dark modules on the row is one rectangle.
			run := 1
			for x+run < code.Size && code.Black(x+run, y) {
				run++
			}
			fmt.Fprintf(&path, "M%d %dh%dv1h-%dz", x+qrQuietZone, y+qrQuietZone, run, run)
			x += run - 1
		}
	}
	svg := fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="%s" width="%d" height="%d" viewBox="0 0 %d %d" shape-rendering="crispEdges"><rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="%s"/></svg>`,
		template.HTMLEscapeString(label), sizePx, sizePx, n, n, n, n, path.String())
	return template.HTML(svg), nil // every interpolated value is a number or escaped
}

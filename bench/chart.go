package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// writeChart draws one horizontal bar per measured row, MB/s on a log
// scale (raw TCP is 50x the rest), with the ratio to OpenSSH beside it,
// grouped by link.
func writeChart(path, title string, rows []*Row) error {
	const (
		left, right, barH, gap, top = 230, 40, 22, 10, 50
		width                       = 900
	)
	var shown []*Row
	maxV := 1.0
	for _, r := range rows {
		if r.Skipped == "" && r.MBps > 0 {
			shown = append(shown, r)
			maxV = max(maxV, r.MBps)
		}
	}
	links := 0
	for i, r := range shown {
		if i == 0 || r.Link != shown[i-1].Link {
			links++
		}
	}
	const header = 24
	height := top + len(shown)*(barH+gap) + links*header + 30
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	text := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	text(10, 20, title, color.Black)
	text(10, 38, "MB/s, log scale; ratio to OpenSSH on the same path", color.Gray{100})
	scale := func(v float64) int { // log10 from 1 MB/s
		if v <= 1 {
			return 0
		}
		return int(float64(width-left-right-90) * math.Log10(v) / math.Log10(maxV))
	}
	y := top - gap
	for i, r := range shown {
		if i == 0 || r.Link != shown[i-1].Link {
			y += header
			text(10, y, r.Link, color.RGBA{0, 0, 120, 255})
		}
		y += gap
		c := color.RGBA{70, 110, 180, 255}
		switch {
		case strings.HasSuffix(r.Name, "(no SSH)") || r.Name == "raw TCP":
			c = color.RGBA{160, 160, 160, 255}
		case strings.HasPrefix(r.Name, "kin "):
			c = color.RGBA{220, 120, 40, 255}
		}
		draw.Draw(img, image.Rect(left, y, left+max(scale(r.MBps), 2), y+barH), image.NewUniform(c), image.Point{}, draw.Src)
		text(10, y+barH-6, r.Name, color.Black)
		label := fmt.Sprintf("%.0f MB/s", r.MBps)
		if r.MBps < 10 {
			label = fmt.Sprintf("%.1f MB/s", r.MBps)
		}
		if r.VsSSH > 0 {
			label += fmt.Sprintf("  %.2fx", r.VsSSH)
		}
		text(left+scale(r.MBps)+6, y+barH-6, label, color.Black)
		y += barH
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// TestChart draws rows of two links and checks the picture holds them all.
func TestChart(t *testing.T) {
	rows := []*Row{
		{Name: "raw TCP", Link: "loopback", MBps: 2983},
		{Name: "kin send", Link: "loopback", MBps: 58, VsSSH: 0.38},
		{Name: "scp (OpenSSH)", Link: "100 Mbit/s", Skipped: "needs root"},
		{Name: "kin send", Link: "100 Mbit/s", MBps: 0.5, VsSSH: 0.06},
	}
	path := filepath.Join(t.TempDir(), "chart.png")
	if os.Getenv("KIN_CHART") != "" {
		path = os.Getenv("KIN_CHART") // to look at it
	}
	if err := writeChart(path, "test", rows); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// Three bars and two link headers below the title.
	if h, want := img.Bounds().Dy(), 50+3*(22+10)+2*24+30; h != want {
		t.Errorf("chart is %d px high, want %d", h, want)
	}
}

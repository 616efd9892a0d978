package cmd

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"kin/internal/switchsignal"
)

// watchedLog is a writer whose text a test can wait on.
type watchedLog struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{}
}

func newWatchedLog() *watchedLog { return &watchedLog{changed: make(chan struct{})} }

func (w *watchedLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *watchedLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// waitFor waits until the text matches re, or ctx ends.
func (w *watchedLog) waitFor(t *testing.T, ctx context.Context, re string) {
	t.Helper()
	r := regexp.MustCompile(re)
	for {
		w.mu.Lock()
		text, changed := w.b.String(), w.changed
		w.mu.Unlock()
		if r.MatchString(text) {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no %q in:\n%s", re, text)
		}
	}
}

// kin up logs losing and regaining its signaling server, and when the
// server then refuses it for good, it stops with an error (exit 1), so a
// service manager restarts it, instead of running on unreachable.
func TestUpStopsWhenTheSignalingServerRefusesIt(t *testing.T) {
	sig := switchsignal.New()
	defer sig.Close()
	url := sig.URL
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	logs := newWatchedLog()
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"kin", "--home", filepath.Join(dir, "home"), "--signal", url, "--ice-interfaces", "lo",
			"up", "--dir", filepath.Join(dir, "inbox"), "--backups", filepath.Join(dir, "backups")},
			strings.NewReader(""), &strings.Builder{}, logs)
	}()
	logs.waitFor(t, ctx, `kin is up`)

	sig.Restart()
	logs.waitFor(t, ctx, `lost the signaling server`)
	logs.waitFor(t, ctx, `registered with the signaling server again`)
	select {
	case code := <-exited:
		t.Fatalf("kin up exited (%d) after a restart of the signaling server:\n%s", code, logs)
	default:
	}

	sig.Refuse() // from now on, refused
	select {
	case code := <-exited:
		if code != 1 {
			t.Fatalf("kin up exited with %d after the refusal, want 1:\n%s", code, logs)
		}
	case <-ctx.Done():
		t.Fatalf("kin up kept running after the signaling server refused it:\n%s", logs)
	}
	if !strings.Contains(logs.String(), switchsignal.Refusal) {
		t.Errorf("kin up did not say why it stopped:\n%s", logs)
	}
}

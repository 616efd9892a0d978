package cmd

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"kin/signal"
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

// switchingSignal is a signaling server that can be restarted, and turned
// into one that refuses every key.
type switchingSignal struct {
	cur atomic.Pointer[signal.Server] // nil: refuse
}

func (s *switchingSignal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if srv := s.cur.Load(); srv != nil {
		srv.ServeHTTP(w, r)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	b, _ := json.Marshal(signal.Message{V: signal.Version, Type: signal.TypeError, Code: signal.CodeAuth, Reason: "this key is banned here"})
	ws.Write(r.Context(), websocket.MessageText, b)
	ws.Close(websocket.StatusPolicyViolation, "banned")
}

// swap puts next in place of the running server (nil: refuse), and stops
// the old one: its clients are told to go and come back.
func (s *switchingSignal) swap(next *signal.Server) {
	if old := s.cur.Swap(next); old != nil {
		old.Close()
	}
}

// kin up logs losing and regaining its signaling server, and when the
// server then refuses it for good, it stops with an error (exit 1), so a
// service manager restarts it, instead of running on unreachable.
func TestUpStopsWhenTheSignalingServerRefusesIt(t *testing.T) {
	sw := &switchingSignal{}
	sw.cur.Store(signal.NewServer(signal.ServerConfig{}))
	hs := httptest.NewServer(sw)
	defer hs.Close()
	defer sw.swap(nil)
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
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

	sw.swap(signal.NewServer(signal.ServerConfig{})) // a restart
	logs.waitFor(t, ctx, `lost the signaling server`)
	logs.waitFor(t, ctx, `registered with the signaling server again`)
	select {
	case code := <-exited:
		t.Fatalf("kin up exited (%d) after a restart of the signaling server:\n%s", code, logs)
	default:
	}

	sw.swap(nil) // from now on, refused
	select {
	case code := <-exited:
		if code != 1 {
			t.Fatalf("kin up exited with %d after the refusal, want 1:\n%s", code, logs)
		}
	case <-ctx.Done():
		t.Fatalf("kin up kept running after the signaling server refused it:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "banned") {
		t.Errorf("kin up did not say why it stopped:\n%s", logs)
	}
}

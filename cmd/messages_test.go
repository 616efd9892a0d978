package cmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"kin/keys"
	"kin/session/files"
	"kin/signal"
	"kin/transport"
)

// shown prints err as a user sees it.
func shown(err error) string {
	var b bytes.Buffer
	printError(&b, err)
	return b.String()
}

// The transport says there is no route; cmd says what to do about it.
func TestNoRouteGetsDoctorHint(t *testing.T) {
	err := dialError(fmt.Errorf("%w: ICE did not connect", transport.ErrNoRoute), "bob", "ws://x:7000")
	if !errors.Is(err, transport.ErrNoRoute) || !strings.Contains(shown(err), "hint: run kin doctor") {
		t.Errorf("no route shows as:\n%s", shown(err))
	}
}

// serveSignalForTest runs a signaling server on loopback until the test ends.
func serveSignalForTest(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- signal.NewServer(signal.ServerConfig{}).Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-served })
	return "ws://" + ln.Addr().String()
}

// goneAddr is a loopback address nothing listens on any more.
func goneAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func ticketFor(t *testing.T, kind keys.TicketKind, signalURL string) string {
	t.Helper()
	issuer, err := keys.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	port := 0
	if kind == keys.TicketPort {
		port = 3000
	}
	tk := keys.Ticket{Kind: kind, Port: port, Peer: issuer.Public(), Signal: signalURL, Name: "bob", Secret: keys.NewSecret(), Instance: "gone"}
	return tk.String()
}

// A ticket whose kin share (or kin send) has stopped says so: whether its
// built-in signaling server is gone with it, or the sharer used a server
// that still runs. Never a WebSocket error with advice about KIN_SIGNAL.
func TestStoppedSharersTicketSaysSo(t *testing.T) {
	defer func(d time.Duration) { signalTimeout = d }(signalTimeout)
	signalTimeout = time.Second // a server that is gone does not come back in 10 s either
	home := t.TempDir()
	kin(t, home, "id")
	live := serveSignalForTest(t)
	gone := "ws://" + goneAddr(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"connect", ticketFor(t, keys.TicketPort, gone), "--listen", "127.0.0.1:0"}, "the kin share that made it has stopped (its signaling server does not answer)"},
		{[]string{"connect", ticketFor(t, keys.TicketPort, live), "--listen", "127.0.0.1:0"}, "the kin share that made it has stopped"},
		{[]string{"receive", "--dir", t.TempDir(), ticketFor(t, keys.TicketFiles, gone)}, "the kin send that made it has stopped (its signaling server does not answer)"},
		{[]string{"receive", "--dir", t.TempDir(), ticketFor(t, keys.TicketFiles, live)}, "the kin send that made it has stopped"},
	} {
		_, errs, code := kin(t, home, c.args...)
		if code != 1 || !strings.HasPrefix(errs, "kin: the ticket no longer works: "+c.want) || strings.Contains(errs, "KIN_SIGNAL") {
			t.Errorf("kin %s: exit %d\n%s\nwant %q and no advice about KIN_SIGNAL", c.args[0], code, errs, c.want)
		}
		if !strings.Contains(errs, "hint: ask bob ") {
			t.Errorf("kin %s: no hint to ask bob:\n%s", c.args[0], errs)
		}
	}
}

// What an offer holds, in words: a stream has no size to speak of.
func TestDescribeOffer(t *testing.T) {
	stream, err := files.StreamPlan("dir.tar", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if got := describeOffer(stream.Offer); got != "a stream (size unknown)" {
		t.Errorf("stream: %q", got)
	}
	o := files.Offer{Entries: []files.Entry{{Path: "a", Size: 1500}, {Path: "b", Size: 500}}}
	if got := describeOffer(o); got != "2 files, 2.0 kB" {
		t.Errorf("two files: %q", got)
	}
}

// The speed and the summary count only bytes that moved in this run: a
// resumed file's bytes already there are neither.
func TestProgressCountsOnlyWhatMoved(t *testing.T) {
	var b bytes.Buffer
	pp := newProgress(&b, "received", false)
	const total = 1_000_000_000
	pp.update(files.Progress{Total: total, FilesTotal: 1})
	pp.mu.Lock()
	pp.last = pp.last.Add(-10 * time.Second) // as if 10 s passed
	pp.mu.Unlock()
	// The receiver had 900 MB from an earlier run; 1 MB moved since.
	pp.update(files.Progress{Done: 901_000_000, Moved: 1_000_000, Total: total, FilesTotal: 1})
	if pp.rate < 90_000 || pp.rate > 110_000 {
		t.Errorf("speed %.0f B/s, want about 100 kB/s (1 MB in 10 s): only what moved counts", pp.rate)
	}
	pp.update(files.Progress{Done: total, Moved: 100_000_000, Total: total, FilesTotal: 1})
	pp.finishReceived(1)
	last := lastLineOf(b.String())
	if !strings.HasPrefix(last, "received 1 file, 100.0 MB in ") || !strings.HasSuffix(last, "; 900.0 MB were already there") {
		t.Errorf("summary %q", last)
	}
}

func lastLineOf(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

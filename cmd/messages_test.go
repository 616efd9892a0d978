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

package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"kin/keys"
	"kin/session"
	"kin/signal"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "show kin working on this machine, with no outside server",
		Description: `Runs everything kin share and kin connect do, inside one process and over
loopback only: a signaling server, two throw-away identities (alice and
bob), a small web server on alice's side shared with bob through a real
WebRTC data channel with SSH on top, and one page fetched through it. Each
step prints its time. Nothing is written to disk and no packet leaves this
machine.`,
		Action: demoAction,
	}
}

func demoAction(c *cli.Context) error {
	e, err := getEnv(c)
	if err != nil {
		return err
	}
	e.interfaces = []string{"lo"} // two peers on one machine: loopback only
	out := e.stdout
	ctx, cancel := context.WithTimeout(c.Context, time.Minute)
	var t errgroup.Group // what the demo starts: ended by ctx, waited for on return
	defer t.Wait()
	defer cancel()
	start := time.Now()
	step := func(what, detail string, d time.Duration) {
		fmt.Fprintf(out, "  %-20s %8s  %s\n", what, d.Round(100*time.Microsecond), detail)
	}
	fmt.Fprintln(out, "kin demo: alice shares a web page with bob, peer to peer, on loopback only")

	// A web server on alice's machine.
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("start demo web server: %w", err)
	}
	const page = "hello from alice's machine, through WebRTC and SSH\n"
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, page) })}
	go hs.Serve(web)
	defer hs.Close()
	webPort := web.Addr().(*net.TCPAddr).Port

	alice, err := keys.NewIdentity()
	if err != nil {
		return err
	}
	bob, err := keys.NewIdentity()
	if err != nil {
		return err
	}
	// alice's kin runs the signaling server, as kin share does with none set.
	ap, err := startPeer(ctx, e, alice, "", signal.ModeListen)
	if err != nil {
		return fmt.Errorf("alice: %w", err)
	}
	defer ap.Close()
	url := ap.URL
	step("signaling server", url+" (alice's kin runs it)", time.Since(start))
	began := time.Now()
	bp, err := startPeer(ctx, e, bob, url, signal.ModeListen)
	if err != nil {
		return fmt.Errorf("bob: %w", err)
	}
	defer bp.Close()
	step("both registered", fmt.Sprintf("alice=%s bob=%s (signed the server's challenge)", alice.ID(), bob.ID()), time.Since(began))

	secret := keys.NewSecret()
	ticket := keys.Ticket{Kind: keys.TicketPort, Port: webPort, Peer: alice.Public(), Signal: url, Name: "alice", Secret: secret}
	srv, err := session.NewServer(session.ServerConfig{
		Identity: alice,
		Tickets:  session.OneTicket(secret, keys.Permissions{Ports: []int{webPort}}),
		Ports:    map[int]string{webPort: web.Addr().String()},
	})
	if err != nil {
		return err
	}
	t.Go(func() error { return serve(ctx, ap, srv) })
	step("ticket", shorten(ticket.String()), 0)

	// bob connects with the ticket, as kin connect does.
	parsed, err := keys.ParseTicket(ticket.String())
	if err != nil {
		return err
	}
	began = time.Now()
	client, info, err := dial(ctx, bp.Link(), parsed.Peer, parsed.Secret, "", "alice")
	if err != nil {
		return err
	}
	defer client.Close()
	sshDone := time.Since(began)
	step("offer/answer", "through the signaling server", info.Timings.Signaling)
	step("ICE connected", info.Path+" "+info.Local+" <-> "+info.Remote, info.Timings.ICE)
	step("DTLS up", "encrypted, keys pinned from the offer/answer", info.Timings.DTLS)
	where, _, _ := strings.Cut(info.Path, " ") // direct or relayed
	step("lane ready", where+", "+info.Lane+": one connection carries everything", info.Timings.Connected)
	step("SSH handshake", "alice's host key verified, ticket accepted", sshDone)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	t.Go(func() error { return client.Forward(ctx, ln, parsed.Port) })
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("fetch through the tunnel: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read through the tunnel: %w", err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != page {
		return errors.New("the page that came through the tunnel is not the one alice served")
	}
	step("first byte", fmt.Sprintf("GET http://%s/ -> %d %q", ln.Addr(), resp.StatusCode, strings.TrimSpace(string(body))), time.Since(began))
	fmt.Fprintf(out, "ok: bob fetched alice's page peer to peer in %s (total %s)\n", time.Since(began).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	fmt.Fprint(out, demoNext)
	return nil
}

// demoNext is what the demo leaves people with: the same on two computers.
const demoNext = `
Now on two real computers (port 8000 stands for any local web server or game):
    alice:  kin share 8000          prints a line: kin connect kin1...
    bob:    kin connect kin1...     then bob's localhost:8000 is alice's port 8000
On one network (home, office) that is all. Across the internet, one of you runs
a signaling server on a computer with a public address (a small VPS will do):
    kin signal --listen :7000 --turn :3478 --public-ip THAT-PUBLIC-IP
and both of you set KIN_SIGNAL=ws://THAT-PUBLIC-IP:7000 first (README: "Two networks").
`

func shorten(s string) string {
	if len(s) <= 40 {
		return s
	}
	return s[:24] + "..." + s[len(s)-12:]
}

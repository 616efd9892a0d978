package main

// End-to-end tests of what people read, and of kin connect and kin send
// when the other side goes away.

import (
	"fmt"
	"strings"
	"testing"
)

// kin connect to a friend's kin up keeps its local port through a restart
// of the agent: it says it lost the connection, reconnects by itself, says
// so, and the same local address works again.
func TestConnectReconnectsAfterAgentRestart(t *testing.T) {
	url, _ := startSignal(t)
	webPort, page, _ := webServer(t, 0)
	dad := newUser(t, "dad", "KIN_SIGNAL="+url)
	kid := newUser(t, "kid", "KIN_SIGNAL="+url)
	dad.mustRun("friends", "add", "kid", strings.TrimSpace(kid.mustRun("id")), "--allow", fmt.Sprintf("port=%d", webPort))
	kid.mustRun("friends", "add", "dad", strings.TrimSpace(dad.mustRun("id")))
	agent := dad.start("up")
	agent.waitFor(`kin is up`)

	conn := kid.start("connect", fmt.Sprintf("dad:%d", webPort), "--listen", "127.0.0.1:0")
	local := conn.waitFor(forwardingRE)[1]
	if got := string(get(t, local, "/")); got != page {
		t.Fatalf("before the restart: page = %q", got)
	}

	agent.interrupt()
	if code := agent.exit(); code != 0 {
		t.Fatalf("kin up exit %d after Ctrl-C", code)
	}
	conn.waitFor(`^lost the connection to dad \(.*\); reconnecting until you press Ctrl-C, ` + local + ` stays open$`)
	agent = dad.start("up")
	agent.waitFor(`kin is up`)
	conn.waitFor(`^connected to dad again \(.*\); forwarding ` + local + ` -> dad:` + fmt.Sprint(webPort) + `$`)
	if got := string(get(t, local, "/")); got != page {
		t.Fatalf("after the restart: page = %q", got)
	}
	// The agent logged the forwards (at info: no --verbose).
	agent.waitFor(`msg="port forward opened" .*who="kid .*port=` + fmt.Sprint(webPort))

	// A refusal ends it: trying again cannot change that.
	agent.interrupt()
	agent.exit()
	conn.waitFor(`^lost the connection to dad`)
	dad.mustRun("friends", "rm", "kid")
	agent = dad.start("up")
	agent.waitFor(`kin is up`)
	conn.waitFor(`^kin: refused: the peer does not know your key`) // after the backoff: up to 30 s
	if code := conn.exit(); code != 1 {
		t.Errorf("after dad removed kid: exit %d:\n%s", code, conn.output())
	}
}

package e2e

// kin signal as people run it: TLS, several instances behind Redis,
// metrics, graceful shutdown.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"kin/internal/testredis"
)

// befriend makes alice share port with bob, both using their own
// KIN_SIGNAL, and returns bob's forwarded address.
func befriend(t *testing.T, alice, bob *user, port int) string {
	t.Helper()
	aliceKey := strings.TrimSpace(alice.mustRun("id"))
	bobKey := strings.TrimSpace(bob.mustRun("id"))
	alice.mustRun("friends", "add", "bob", bobKey, "--allow", fmt.Sprintf("port=%d", port))
	bob.mustRun("friends", "add", "alice", aliceKey)
	alice.start("share", fmt.Sprint(port)).waitFor(`^kin connect kin1`)
	return bob.start("connect", fmt.Sprintf("alice:%d", port), "--listen", "127.0.0.1:0").waitFor(forwardingRE)[1]
}

// scrape reads one metric from a signaling server's /metrics.
func scrape(t *testing.T, client *http.Client, base, name string) string {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	return m[1]
}

func TestTwoSignalInstancesThroughRedis(t *testing.T) {
	redisURL := testredis.Start(t)
	var urls []string
	var procs []*proc
	for i := range 2 {
		p := newUser(t, fmt.Sprintf("server%d", i)).start("signal", "--listen", "127.0.0.1:0", "--redis", redisURL)
		urls = append(urls, p.waitFor(`signaling server on (ws://127\.0\.0\.1:\d+)`)[1])
		procs = append(procs, p)
	}
	webPort, page, _ := webServer(t, 0)
	alice := newUser(t, "alice", "KIN_SIGNAL="+urls[0])
	bob := newUser(t, "bob", "KIN_SIGNAL="+urls[1])
	addr := befriend(t, alice, bob, webPort)
	if got := string(get(t, addr, "/")); got != page {
		t.Fatalf("page through two instances = %q", got)
	}
	// Each instance counted its side: bob's offer went out through
	// instance 2 and was delivered by instance 1.
	base := "http" + strings.TrimPrefix(urls[0], "ws")
	if n := scrape(t, http.DefaultClient, base, `kin_signal_messages_routed_total{type="offer"}`); n == "0" {
		t.Errorf("instance 1 routed %s offers", n)
	}
	if n := scrape(t, http.DefaultClient, base, "kin_signal_peers_online"); n != "1" {
		t.Errorf("instance 1 has %s peers online, want alice", n)
	}

	// SIGTERM: the instance says it is going away, /healthz fails while it
	// drains, and it exits cleanly.
	procs[1].Cmd.Process.Signal(os.Interrupt)
	if code := procs[1].exit(); code != 0 {
		t.Errorf("signal server exit code %d after SIGTERM", code)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kin test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

func TestSignalOverTLS(t *testing.T) {
	cert, key := selfSigned(t)
	p := newUser(t, "server").start("signal", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
	url := p.waitFor(`signaling server on (wss://127\.0\.0\.1:\d+)`)[1]
	// Peers trust the certificate the way Go programs do: SSL_CERT_FILE.
	webPort, page, _ := webServer(t, 0)
	alice := newUser(t, "alice", "KIN_SIGNAL="+url, "SSL_CERT_FILE="+cert)
	bob := newUser(t, "bob", "KIN_SIGNAL="+url, "SSL_CERT_FILE="+cert)
	if got := string(get(t, befriend(t, alice, bob, webPort), "/")); got != page {
		t.Fatalf("page over wss signaling = %q", got)
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	resp, err := client.Get("https" + strings.TrimPrefix(url, "wss") + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz over TLS: %v %v", resp, err)
	}
	resp.Body.Close()
	// Without the certificate trusted, kin refuses the server.
	eve := newUser(t, "eve", "KIN_SIGNAL="+url, "SSL_CERT_FILE=/dev/null")
	if _, errs, code := eve.run("share", "1"); code == 0 || !strings.Contains(errs, "certificate") {
		t.Errorf("untrusted certificate: exit %d, %q", code, errs)
	}
}

// TestSignalRelayAllowNeedsARangeAndTheRelay: --relay-allow takes CIDR
// ranges, and only with the built-in relay; anything else is refused at
// start with what to do.
func TestSignalRelayAllowNeedsARangeAndTheRelay(t *testing.T) {
	u := newUser(t, "operator")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"signal", "--listen", "127.0.0.1:0", "--turn", "127.0.0.1:0", "--relay-allow", "10.0.0.1"}, "CIDR form"},
		{[]string{"signal", "--listen", "127.0.0.1:0", "--relay-allow", "10.0.0.0/8"}, "add --turn"},
	} {
		_, errs, code := u.run(c.args...)
		if code == 0 || !strings.Contains(errs, c.want) {
			t.Errorf("kin %v: exit %d, stderr %q; want a refusal saying %q", c.args, code, errs, c.want)
		}
	}
}

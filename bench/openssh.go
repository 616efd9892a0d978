package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// sshd is a throw-away OpenSSH server on the server host, and the client
// host its ssh and scp run on.
type sshd struct {
	server, client host
	port           int
	key            string // client private key it accepts
	user           string
	stop           func()
}

func startSSHD(ctx context.Context, dir string, server, client host) (*sshd, error) {
	bin, err := exec.LookPath("sshd")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/sshd"); err != nil {
			return nil, errors.New("sshd not installed")
		}
	}
	d, err := os.MkdirTemp(dir, "ssh")
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(d, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(d, "user.pub"))
	os.WriteFile(filepath.Join(d, "authorized_keys"), pub, 0o600)
	port := server.freePort()
	cfg := fmt.Sprintf("Port %d\nListenAddress %s\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nStrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\nAllowTcpForwarding yes\nSubsystem sftp internal-sftp\n",
		port, server.ip(), filepath.Join(d, "host"), filepath.Join(d, "authorized_keys"), filepath.Join(d, "pid"))
	os.WriteFile(filepath.Join(d, "sshd_config"), []byte(cfg), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	daemon := server.command(ctx, bin, "-D", "-e", "-f", filepath.Join(d, "sshd_config"))
	if err := daemon.Start(); err != nil {
		return nil, fmt.Errorf("start sshd: %w", err)
	}
	stop := func() { daemon.Process.Kill(); daemon.Wait() }
	if err := waitListening(client, fmt.Sprintf("%s:%d", server.ip(), port)); err != nil {
		stop()
		return nil, fmt.Errorf("sshd did not start (as root? %w)", err)
	}
	user := os.Getenv("USER")
	if user == "" {
		user = "root"
	}
	return &sshd{server: server, client: client, port: port, key: filepath.Join(d, "user"), user: user, stop: stop}, nil
}

func (s *sshd) opts() []string {
	return []string{"-i", s.key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}
}

// startForward starts `ssh -N -L` from local on the client through the
// sshd to target.
func (s *sshd) startForward(ctx context.Context, local, target string) (*exec.Cmd, error) {
	args := append(append([]string{"-N", "-p", fmt.Sprint(s.port)}, s.opts()...), "-L", local+":"+target, s.user+"@"+s.server.ip())
	cli := s.client.command(ctx, "ssh", args...)
	return cli, cli.Start()
}

func (s *sshd) localAddr() string { return fmt.Sprintf("%s:%d", s.client.ip(), s.client.freePort()) }

// forward starts `ssh -N -L` through the sshd to target.
func (s *sshd) forward(ctx context.Context, target string) (string, func(), error) {
	local := s.localAddr()
	cli, err := s.startForward(ctx, local, target)
	if err != nil {
		return "", nil, err
	}
	stop := func() { cli.Process.Kill(); cli.Wait() }
	if err := waitListening(s.client, local); err != nil {
		stop()
		return "", nil, fmt.Errorf("ssh -L did not come up: %w", err)
	}
	return local, stop, nil
}

// scp copies file into dst through the sshd and returns MB/s.
func (s *sshd) scp(ctx context.Context, file, dst string) (float64, error) {
	st, err := os.Stat(file)
	if err != nil {
		return 0, err
	}
	args := append(append([]string{"-q", "-P", fmt.Sprint(s.port)}, s.opts()...), file, s.user+"@"+s.server.ip()+":"+dst)
	start := time.Now()
	if out, err := s.client.command(ctx, "scp", args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("scp: %v %s", err, out)
	}
	return float64(st.Size()) / 1e6 / time.Since(start).Seconds(), nil
}

// forwardFirstByte starts `ssh -N -L` to target and returns the time from
// starting it to the first byte read through the forward.
func (s *sshd) forwardFirstByte(ctx context.Context, target string) (time.Duration, error) {
	local := s.localAddr()
	start := time.Now()
	cli, err := s.startForward(ctx, local, target)
	if err != nil {
		return 0, err
	}
	defer func() { cli.Process.Kill(); cli.Wait() }()
	return firstByte(ctx, s.client, local, start)
}

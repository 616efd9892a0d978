//go:build !windows

package shell

import (
	"os"
	ossignal "os/signal"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// watchResize sends the local terminal's size to s whenever it changes.
func watchResize(fd int, s *ssh.Session) (stop func()) {
	ch := make(chan os.Signal, 1)
	ossignal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if w, h, err := term.GetSize(fd); err == nil {
					s.WindowChange(h, w)
				}
			case <-done:
				return
			}
		}
	}()
	return func() { ossignal.Stop(ch); close(done) }
}

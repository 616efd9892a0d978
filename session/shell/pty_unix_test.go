//go:build !windows

package shell

import (
	"io"
	"os/exec"
	"sync"
	"testing"
)

// A window change may arrive while the command's terminal closes: Resize
// then must not use the closed descriptor's number (go test -race saw
// Setsize read it while Close cleared it).
func TestResizeWhileTheTerminalCloses(t *testing.T) {
	term, wait, _, err := startTerminal(exec.Command("/bin/sh", "-c", "exit 0"), 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan struct{})
	go func() {
		io.Copy(io.Discard, term)
		close(out)
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint32(0); i < 100; i++ {
			term.Resize(80+i, 24)
		}
	}()
	wait()
	term.CloseAfterDrain(out)
	wg.Wait()
	term.Resize(100, 50) // after the close: nothing happens
}

package cmd

import (
	"io"
	"runtime"
	"sync"
	"testing"

	"kin/session/files"
)

// The bytes a receive reports at its end are read while the transfer's
// goroutine may still update the printer (kin receive read the field
// without the printer's lock).
func TestProgressDoneWhileUpdating(t *testing.T) {
	p := newProgress(io.Discard, "received", false)
	const total = 1000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(0); i <= total; i++ {
			p.update(files.Progress{Done: i, Total: total})
		}
	}()
	for p.soFar().Done != total {
		runtime.Gosched()
	}
	wg.Wait()
}

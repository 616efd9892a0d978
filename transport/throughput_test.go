//go:build unix

package transport

import (
	"crypto/rand"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"
)

// BenchmarkConnThroughput moves 128 MiB through 1, 2 or 4 peer
// connections at once (split evenly) and reports the CPU it took: on a
// 2-core machine striping does not pay, because one connection already
// keeps both cores busy (see docs/performance.md).
func BenchmarkConnThroughput(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			p := newPair(b)
			var ds, as []*Conn
			for i := 0; i < n; i++ {
				d, a := p.connect(b)
				defer d.Close()
				defer a.Close()
				ds, as = append(ds, d), append(as, a)
			}
			buf := make([]byte, 1<<20)
			rand.Read(buf)
			each := int64(128<<20) / int64(n)
			b.SetBytes(each * int64(n))
			b.ResetTimer()
			cpu0, t0 := cpuTime(), time.Now()
			for it := 0; it < b.N; it++ {
				errs := make(chan error, 2*n)
				for i := 0; i < n; i++ {
					go func() {
						_, err := io.CopyN(io.Discard, as[i], each)
						errs <- err
					}()
					go func() {
						var err error
						for sent := int64(0); sent < each && err == nil; sent += int64(len(buf)) {
							_, err = ds[i].Write(buf[:min(int64(len(buf)), each-sent)])
						}
						errs <- err
					}()
				}
				for i := 0; i < 2*n; i++ {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Since(t0)), "cores")
		})
	}
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package cmd

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"kin/session/files"
)

// progressPrinter shows a transfer's progress: one redrawn line on a
// terminal, a plain line every few seconds otherwise, nothing when quiet.
type progressPrinter struct {
	w     io.Writer
	tty   bool
	quiet bool
	verb  string // "sent" or "received"

	mu        sync.Mutex
	start     time.Time
	latest    files.Progress // the newest update, printed or not
	last      time.Time      // when a line was last printed
	lastMoved int64          // bytes moved then
	rate      float64        // bytes/s moved in this run, smoothed
	lastWidth int
	lanes     int // the most lanes the transfer used at once
}

func newProgress(w io.Writer, verb string, quiet bool) *progressPrinter {
	return &progressPrinter{w: w, tty: isTerminal(w), quiet: quiet, verb: verb, start: time.Now()}
}

// update is the files.Progress callback.
func (p *progressPrinter) update(pr files.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latest = pr
	if p.quiet {
		return
	}
	p.lanes = max(p.lanes, pr.Lanes)
	now := time.Now()
	every := 5 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if now.Sub(p.last) < every && pr.Done != pr.Total {
		return
	}
	if !p.last.IsZero() {
		// Only what moved counts: a resumed file's bytes already there
		// are not speed.
		inst := float64(pr.Moved-p.lastMoved) / now.Sub(p.last).Seconds()
		if p.rate == 0 {
			p.rate = inst
		} else {
			p.rate = 0.7*p.rate + 0.3*inst
		}
	}
	p.last, p.lastMoved = now, pr.Moved
	line := p.format(pr)
	if p.tty {
		pad := ""
		if n := p.lastWidth - len(line); n > 0 {
			pad = strings.Repeat(" ", n)
		}
		fmt.Fprintf(p.w, "\r%s%s", line, pad)
		p.lastWidth = len(line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *progressPrinter) format(pr files.Progress) string {
	var b strings.Builder
	if pr.Total > 0 {
		pct := float64(pr.Done) / float64(pr.Total)
		if p.tty {
			const width = 20
			n := int(pct * width)
			b.WriteString("[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "] ")
		}
		fmt.Fprintf(&b, "%3.0f%% %s/%s", pct*100, humanBytes(pr.Done), humanBytes(pr.Total))
	} else {
		fmt.Fprintf(&b, "%s so far", humanBytes(pr.Done)) // a stream: its size is known at its end
	}
	fmt.Fprintf(&b, " %d/%d files", pr.FilesDone, pr.FilesTotal)
	if pr.Lanes > 1 {
		fmt.Fprintf(&b, " %d lanes", pr.Lanes)
	}
	if p.rate > 0 {
		fmt.Fprintf(&b, " %s/s", humanBytes(int64(p.rate)))
		if pr.Total > pr.Done {
			eta := time.Duration(float64(pr.Total-pr.Done) / p.rate * float64(time.Second))
			fmt.Fprintf(&b, " ETA %s", eta.Round(time.Second))
		}
	}
	if pr.File != "" && pr.FilesTotal > 1 {
		name := pr.File
		if len(name) > 40 {
			name = "..." + name[len(name)-37:]
		}
		fmt.Fprintf(&b, "  %s", name)
		if pr.FileSize > 0 {
			fmt.Fprintf(&b, " %.0f%%", float64(pr.FileDone)/float64(pr.FileSize)*100)
		}
	}
	return b.String()
}

// soFar is the newest progress reported.
func (p *progressPrinter) soFar() files.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest
}

// finishReceived ends a receiver's progress with its summary: what moved
// in this run, and what was already here from an earlier one.
func (p *progressPrinter) finishReceived(nfiles int) {
	pr := p.soFar()
	p.finish(pr.Moved, nfiles, pr.Done-pr.Moved)
}

// finish ends the progress line with a summary: bytes moved this time,
// and already (what the other side had from an earlier try).
func (p *progressPrinter) finish(bytes int64, nfiles int, already int64) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.lastWidth > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.lastWidth))
	}
	el := time.Since(p.start)
	fmt.Fprintf(p.w, "%s %s, %s in %s (%s/s)", p.verb, plural(nfiles, "file"), humanBytes(bytes), el.Round(time.Millisecond), humanBytes(int64(float64(bytes)/el.Seconds())))
	if p.lanes > 1 {
		fmt.Fprintf(p.w, ", up to %d lanes", p.lanes)
	}
	if already > 0 {
		fmt.Fprintf(p.w, "; %s were already there", humanBytes(already))
	}
	fmt.Fprintln(p.w)
}

// describeOffer says what an offer holds: "2 files, 3.1 MB", or "a
// stream (size unknown)" for data piped to kin send.
func describeOffer(o files.Offer) string {
	n, total := o.Files()
	streams := 0
	for _, e := range o.Entries {
		if !e.IsDir() && !e.IsLink() && e.Size < 0 {
			streams++
		}
	}
	switch {
	case streams == 0:
		return fmt.Sprintf("%s, %s", plural(n, "file"), humanBytes(total))
	case n == 1:
		return "a stream (size unknown)"
	}
	return fmt.Sprintf("%s, %s and %s of unknown size", plural(n-streams, "file"), humanBytes(total), plural(streams, "stream"))
}

func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// plural says "1 file", "2 files".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

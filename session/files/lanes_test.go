package files

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kin/internal/testconn"
)

// tcpLanes is a Lanes for tests: each lane is a loopback TCP connection,
// authorised by its first TokenSize bytes as the session does it.
type tcpLanes struct {
	t *testing.T

	mu       sync.Mutex
	tokens   [][]byte
	ch       chan io.ReadWriteCloser
	opened   int
	cuts     int
	refused  int
	accepted int
	// cut, if set, says after how many bytes the n-th lane (from 0) the
	// sender opens breaks (0: never); with cutOne, only the first lane to
	// get there does.
	cut    func(n int) int
	cutOne bool
	oneCut atomic.Bool
	// wg tracks the goroutines checking tokens.
	wg sync.WaitGroup
}

func newTCPLanes(t *testing.T) *tcpLanes {
	l := &tcpLanes{t: t, ch: make(chan io.ReadWriteCloser, maxPendingTest)}
	t.Cleanup(l.wg.Wait)
	return l
}

const maxPendingTest = 64

func (l *tcpLanes) Open(ctx context.Context, token []byte) (io.ReadWriteCloser, error) {
	a, b := testconn.TCPPair(l.t)
	l.mu.Lock()
	n := l.opened
	l.opened++
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tok := make([]byte, TokenSize)
		if _, err := io.ReadFull(b, tok); err != nil {
			b.Close()
			return
		}
		l.mu.Lock()
		i := TokenIndex(l.tokens, tok)
		if i < 0 {
			l.refused++
			l.mu.Unlock()
			b.Close()
			return
		}
		l.tokens[i] = nil
		l.accepted++
		l.mu.Unlock()
		l.ch <- b
	}()
	if _, err := a.Write(token); err != nil {
		a.Close()
		return nil, err
	}
	if l.cut != nil {
		if k := l.cut(n); k > 0 {
			c := &cutConn{Conn: a, left: k, cut: func() {
				l.mu.Lock()
				l.cuts++
				l.mu.Unlock()
			}}
			if l.cutOne {
				c.once = &l.oneCut
			}
			return c, nil
		}
	}
	return a, nil
}

func (l *tcpLanes) Expect(tokens [][]byte) (<-chan io.ReadWriteCloser, func()) {
	l.mu.Lock()
	l.tokens = tokens
	l.mu.Unlock()
	return l.ch, func() {
		l.mu.Lock()
		l.tokens = nil
		l.mu.Unlock()
		for {
			select {
			case c := <-l.ch:
				c.Close()
			default:
				return
			}
		}
	}
}

// laneTransfer runs SendWith and ReceiveWith over a TCP pair with lanes.
// breakAt, if not 0, breaks the main stream once the progress shows that
// many bytes moved (whichever lanes carried them).
func laneTransfer(t *testing.T, plan *Plan, inbox string, lanes *tcpLanes, force int, breakAt int64) (Stats, []Result, error, error) {
	t.Helper()
	a, b := testconn.TCPPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var res []Result
	var rerr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer b.Close()
		res, rerr = (&Inbox{Dir: inbox}).ReceiveWith(ctx, b, "peer-key", LaneOptions{Lanes: lanes}, nil, nil)
	}()
	var mu sync.Mutex
	most := 0
	st, serr := SendWith(ctx, a, plan, LaneOptions{Lanes: lanes, Force: force}, func(p Progress) {
		mu.Lock()
		most = max(most, p.Lanes)
		mu.Unlock()
		if breakAt > 0 && p.Moved >= breakAt {
			a.Close()
		}
	})
	a.Close()
	wg.Wait()
	if serr == nil && most != st.Lanes {
		t.Errorf("progress showed at most %d lanes, stats %d", most, st.Lanes)
	}
	return st, res, serr, rerr
}

func TestForcedLanesDeliverWholeFiles(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	dir := filepath.Join(src, "d")
	big := writeRandom(t, filepath.Join(dir, "big.bin"), 24<<20+12345)
	big2 := writeRandom(t, filepath.Join(dir, "big2.bin"), 9<<20)
	small := writeRandom(t, filepath.Join(dir, "small.txt"), 1000)
	lanes := newTCPLanes(t)
	st, _, serr, rerr := laneTransfer(t, mustScan(t, dir), inbox, lanes, 4, 0)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	for name, want := range map[string][]byte{"big.bin": big, "big2.bin": big2, "small.txt": small} {
		if got := sum(t, filepath.Join(inbox, "d", name)); got != sha256.Sum256(want) {
			t.Errorf("%s: SHA-256 differs", name)
		}
	}
	if st.Lanes != 4 {
		t.Errorf("used %d lanes, forced 4", st.Lanes)
	}
	lanes.mu.Lock()
	defer lanes.mu.Unlock()
	if lanes.accepted != 4 || lanes.refused != 0 {
		t.Errorf("receiver took %d lanes and refused %d; want 4 and 0", lanes.accepted, lanes.refused)
	}
	if st.Sent != int64(len(big)+len(big2)+len(small)) {
		t.Errorf("sent %d", st.Sent)
	}
	if left, _ := filepath.Glob(filepath.Join(inbox, partialDir, "*.have")); len(left) != 0 {
		t.Errorf("sidecars left: %v", left)
	}
}

// One lane breaks mid-way: its unacknowledged chunks go on the other
// lanes (the main stream included) and the file arrives whole.
func TestLaneKilledMidwayIsMadeUpByTheOthers(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	want := writeRandom(t, filepath.Join(src, "big.bin"), 32<<20)
	lanes := newTCPLanes(t)
	// The first lane to carry its third chunk breaks mid-chunk (which lane
	// that is depends on scheduling: a fixed one may get fewer chunks).
	lanes.cut = func(int) int { return 2*dataChunk + 777 }
	lanes.cutOne = true
	_, _, serr, rerr := laneTransfer(t, mustScan(t, filepath.Join(src, "big.bin")), inbox, lanes, 4, 0)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	if sum(t, filepath.Join(inbox, "big.bin")) != sha256.Sum256(want) {
		t.Fatal("SHA-256 differs")
	}
	lanes.mu.Lock()
	defer lanes.mu.Unlock()
	if lanes.cuts != 1 {
		t.Fatalf("%d lanes broke, want 1", lanes.cuts)
	}
	if lanes.opened < 4 { // three, and one to replace the broken one
		t.Errorf("opened %d lanes; the broken one should have been replaced", lanes.opened)
	}
}

// The main stream breaks while lanes carry a file: the partial file keeps
// its contiguous prefix, and sending again resumes from there.
func TestResumeAfterAMultiLaneSendBroke(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	want := writeRandom(t, filepath.Join(src, "big.bin"), 40<<20)
	plan := mustScan(t, filepath.Join(src, "big.bin"))
	_, _, serr, _ := laneTransfer(t, plan, inbox, newTCPLanes(t), 4, 12<<20)
	if serr == nil {
		t.Fatal("the send should have failed")
	}
	parts, _ := filepath.Glob(filepath.Join(inbox, partialDir, "*.part"))
	if len(parts) != 1 {
		t.Fatalf("partials %v", parts)
	}
	st, _, serr, rerr := laneTransfer(t, plan, inbox, newTCPLanes(t), 4, 0)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	if st.Resumed == 0 || st.Resumed+st.Sent != int64(len(want)) {
		t.Errorf("resumed %d, sent %d", st.Resumed, st.Sent)
	}
	if sum(t, filepath.Join(inbox, "big.bin")) != sha256.Sum256(want) {
		t.Fatal("SHA-256 differs")
	}
}

// A receiver killed while lanes left gaps leaves a partial file longer
// than its contiguous prefix and a sidecar that names the prefix: a resume
// starts at the prefix (not at the file's size) and the file is whole.
func TestResumeFromTheSidecarAfterACrash(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	want := writeRandom(t, filepath.Join(src, "big.bin"), 12<<20)
	plan := mustScan(t, filepath.Join(src, "big.bin"))
	rc := &receiver{offer: plan.Offer, peerKey: "peer-key"}
	part := filepath.Join(inbox, filepath.FromSlash(rc.partName(0)))
	os.MkdirAll(filepath.Dir(part), 0o700)
	// The prefix (3 MiB) is right; past it, a gap of zeros, then a chunk.
	crashed := bytes.Clone(want[:9<<20])
	clear(crashed[3<<20 : 5<<20])
	for i := 5 << 20; i < 9<<20; i++ {
		crashed[i] ^= 0xff // damaged too: never trusted past the prefix
	}
	if err := os.WriteFile(part, crashed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inbox, filepath.FromSlash(sidecarOf(rc.partName(0)))), []byte(strconv.Itoa(3<<20)), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _, serr, rerr := laneTransfer(t, plan, inbox, newTCPLanes(t), 3, 0)
	if serr != nil || rerr != nil {
		t.Fatal(serr, rerr)
	}
	if st.Resumed != 3<<20 {
		t.Errorf("resumed %d, want the prefix %d", st.Resumed, 3<<20)
	}
	if sum(t, filepath.Join(inbox, "big.bin")) != sha256.Sum256(want) {
		t.Fatal("SHA-256 differs")
	}
}

// A sender that cannot open lanes, or a receiver that does not offer them,
// moves everything on the main stream as before.
func TestNoLanesOnOneSide(t *testing.T) {
	src := t.TempDir()
	want := writeRandom(t, filepath.Join(src, "big.bin"), 8<<20)
	plan := mustScan(t, filepath.Join(src, "big.bin"))
	for name, sides := range map[string][2]bool{"sender without": {false, true}, "receiver without": {true, false}} {
		t.Run(name, func(t *testing.T) {
			inbox := t.TempDir()
			lanes := newTCPLanes(t)
			a, b := testconn.TCPPair(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var so, ro LaneOptions
			if sides[0] {
				so.Lanes, so.Force = lanes, 4
			}
			if sides[1] {
				ro.Lanes = lanes
			}
			done := make(chan error, 1)
			go func() {
				defer b.Close()
				_, err := (&Inbox{Dir: inbox}).ReceiveWith(ctx, b, "k", ro, nil, nil)
				done <- err
			}()
			st, err := SendWith(ctx, a, plan, so, nil)
			a.Close()
			if rerr := <-done; err != nil || rerr != nil {
				t.Fatal(err, rerr)
			}
			if st.Lanes != 1 || lanes.opened != 0 {
				t.Errorf("lanes %d, opened %d", st.Lanes, lanes.opened)
			}
			if sum(t, filepath.Join(inbox, "big.bin")) != sha256.Sum256(want) {
				t.Fatal("SHA-256 differs")
			}
		})
	}
}

// A lane that presents a secret the receiver did not hand out is refused,
// and so is a secret used twice.
func TestLaneSecretsWorkOnce(t *testing.T) {
	lanes := newTCPLanes(t)
	tokens, _ := newTokens(2)
	got, stop := lanes.Expect(tokens)
	defer stop()
	ctx := context.Background()
	bad := bytes.Repeat([]byte{7}, TokenSize)
	for _, tok := range [][]byte{bad, tokens[0], tokens[0], tokens[1]} {
		c, err := lanes.Open(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for range 2 {
		c := <-got
		c.Close()
	}
	lanes.wg.Wait()
	if lanes.refused != 2 || lanes.accepted != 2 {
		t.Errorf("refused %d accepted %d, want 2 and 2", lanes.refused, lanes.accepted)
	}
}

// laneRun drives a controller on a synthetic clock: every laneTick the
// link moves rate(n) bytes per second on n lanes. It returns the lane
// count at every tick.
func laneRun(rate func(n int) float64, path PathStats, known bool, d time.Duration) []int {
	c := newLaneController(maxLanes)
	now := time.Unix(0, 0)
	var moved float64
	var seen []int
	n := 1
	for t := time.Duration(0); t < d; t += laneTick {
		now = now.Add(laneTick)
		moved += rate(n) * laneTick.Seconds()
		n = c.sample(now, int64(moved), true, path, known)
		seen = append(seen, n)
	}
	return seen
}

func mostLanes(s []int) int {
	m := 0
	for _, n := range s {
		m = max(m, n)
	}
	return m
}

// count is how many ticks used n lanes.
func count(s []int, n int) int {
	k := 0
	for _, x := range s {
		if x == n {
			k++
		}
	}
	return k
}

// ticksTo is how many ticks pass before n lanes are first used; -1: never.
func ticksTo(s []int, n int) int {
	for i, x := range s {
		if x >= n {
			return i
		}
	}
	return -1
}

// The controller, shown the rate a link would give with n lanes.
func TestLaneControllerAddsWhileItPaysAndDropsBack(t *testing.T) {
	lossyPath := PathStats{RTT: 40 * time.Millisecond, Lost: 30}
	// A lossy long link: each lane adds (the measured 0.8 MB/s per flow).
	// It gets to 16 lanes within a few windows of a few round trips.
	lossy := laneRun(func(n int) float64 { return 0.8e6 * float64(n) }, lossyPath, true, 20*time.Second)
	if got := lossy[len(lossy)-1]; got != 16 || mostLanes(lossy) != 16 {
		t.Errorf("lossy link: lanes %v, want to reach and stay at 16", lossy)
	}
	// settle + window at 1 lane, then two steps (x4, x4).
	if at := ticksTo(lossy, 16); at < 0 || at*int(laneTick) > int(1200*time.Millisecond) {
		t.Errorf("lossy link: 16 lanes only after %d ticks of %v", at, laneTick)
	}
	// A fast clean link that one lane fills: it tries four (the CPU might
	// have held one), goes back, and tries less and less often.
	fast := laneRun(func(n int) float64 { return 300e6 - float64(n-1)*5e6 }, PathStats{RTT: 100 * time.Microsecond}, true, 20*time.Second)
	if fast[len(fast)-1] != 1 || count(fast, 1) < len(fast)*9/10 {
		t.Errorf("fast clean link: lanes %v, want one lane but for a few tries", fast)
	}
	// A fast path where each lane is held by the CPU (measured on
	// loopback, 2 cores): it goes to 4 lanes at its first step and stays,
	// as 8 gain little more; losses or none (quic-go declares a few on
	// loopback, where a scheduling hiccup is many round trips).
	onCPU := map[int]float64{1: 280e6, 2: 310e6, 4: 350e6, 8: 362e6, 16: 350e6}
	for _, p := range []PathStats{{RTT: 100 * time.Microsecond}, {RTT: 100 * time.Microsecond, Sent: 1e5, Lost: 200}} {
		cpu := laneRun(func(n int) float64 { return onCPU[n] }, p, true, 20*time.Second)
		if at := ticksTo(cpu, 4); at < 0 || at*int(laneTick) > int(300*time.Millisecond) || cpu[len(cpu)-1] != 4 || count(cpu, 4) < len(cpu)*85/100 {
			t.Errorf("CPU-held lanes, %d of %d packets lost: lanes %v, want 4 from the first step on", p.Lost, p.Sent, cpu)
		}
	}
	// The same, where the first look at one lane sees it still growing
	// its flow-control window: four lanes then look as if each moved as
	// much as that one, but the cores are shared, and it does not go on
	// to 16.
	ticks := 0
	ramp := laneRun(func(n int) float64 {
		if ticks++; n == 1 && ticks < 30 {
			return 100e6
		}
		return onCPU[n]
	}, PathStats{RTT: 100 * time.Microsecond}, true, 20*time.Second)
	if mostLanes(ramp) > 8 || ramp[len(ramp)-1] != 4 {
		t.Errorf("CPU-held lanes after a slow first look: lanes %v, want at most 8 and to settle at 4", ramp)
	}
	// The same with the rate up to 10% up or down at random for 100 ms at
	// a time (a busy machine's loopback): a window that happens to be slow
	// after a step back is not taken for fewer lanes falling, so it does
	// not swing between 4 and 16.
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 0))
		tick, noise := 0, 1.0
		noisy := laneRun(func(n int) float64 {
			if tick++; tick%10 == 0 {
				noise = 0.9 + 0.2*r.Float64()
			}
			return onCPU[n] * noise
		}, PathStats{RTT: 100 * time.Microsecond}, true, 20*time.Second)
		if k := count(noisy, 16); k > len(noisy)/10 || noisy[len(noisy)-1] > 8 {
			t.Errorf("noisy CPU-held lanes (seed %d): %d of %d ticks at 16 lanes: %v", seed, k, len(noisy), noisy)
		}
	}
	// A slower link that loses nothing: one flow is not held back by loss.
	clean := laneRun(func(n int) float64 { return 40e6 }, PathStats{RTT: 10 * time.Millisecond}, true, 20*time.Second)
	if mostLanes(clean) != 1 {
		t.Errorf("lossless link: lanes %v, want 1 throughout", clean)
	}
	// Nothing known of the path, and more lanes do not help: it tries,
	// goes back, and tries less and less often.
	flat := laneRun(func(n int) float64 { return 40e6 - float64(n-1)*1e6 }, PathStats{}, false, 60*time.Second)
	if i := ticksTo(flat, 2); i < 0 || !slices.Contains(flat[i:], 1) || mostLanes(flat) != 2 {
		t.Errorf("flat link: lanes %v, want to try 2 and come back to 1", flat)
	}
	if ones := count(flat, 1); ones < len(flat)*85/100 {
		t.Errorf("flat link: only %d of %d ticks at one lane: probing too often", ones, len(flat))
	}
	// A lossy link that gains up to 4 lanes and no more: it may try more,
	// and settles at 4.
	capped := laneRun(func(n int) float64 { return 1e6 * float64(min(n, 4)) }, lossyPath, true, 30*time.Second)
	if capped[len(capped)-1] != 4 {
		t.Errorf("capped link: lanes %v, want to settle at 4", capped)
	}
	// A link that is nearly full at 4 lanes: a step to 16 that gains a
	// little goes back to 8, not 4.
	full := laneRun(func(n int) float64 { return min(2.4e6*float64(n), 10.5e6) }, lossyPath, true, 2*time.Second)
	at := ticksTo(full, 16)
	if at < 0 || ticksTo(full[at:], 8) < 0 || slices.Contains(full[at:], 4) {
		t.Errorf("nearly full link: lanes %v, want to try 16 and go back to 8", full)
	}
	// A link where lanes cost: it goes back to one, tries x2 after that,
	// and less and less often.
	costly := laneRun(func(n int) float64 { return 5e6 / float64(n) }, lossyPath, true, 60*time.Second)
	if costly[len(costly)-1] != 1 || mostLanes(costly) != 4 {
		t.Errorf("costly link: lanes %v, want to try 4 once, then 2, and stay at 1", costly)
	}
	if ones, fours := count(costly, 1), count(costly, 4); ones < len(costly)*9/10 || fours > 100 {
		t.Errorf("costly link: %d of %d ticks at one lane, %d at four", ones, len(costly), fours)
	}
}

// freshRun drives a controller over 10 s of a 100 Mbit/s link with a 40 ms
// round trip, where a lane moves lane(age) bytes per second and counts as
// fresh (no packet lost yet) for its first fresh; the path loses loss of
// its packets (0: it loses some, at a rate not known). It returns the lane
// count at every tick.
func freshRun(lane func(age time.Duration) float64, fresh time.Duration, loss float64) []int {
	const link = 12.5e6
	c := newLaneController(maxLanes)
	now := time.Unix(0, 0)
	opened := []time.Time{now} // when each lane in use opened
	var moved float64
	var seen []int
	for range 1000 {
		now = now.Add(laneTick)
		var rate float64
		anyFresh := false
		for _, o := range opened {
			rate += lane(now.Sub(o))
			anyFresh = anyFresh || now.Sub(o) < fresh
		}
		moved += min(rate, link) * laneTick.Seconds()
		path := PathStats{RTT: 40 * time.Millisecond, Lost: 50, Fresh: anyFresh}
		if loss > 0 { // random: every loss an event
			path.Sent = uint64(moved / lanePacket)
			path.Lost = uint64(float64(path.Sent) * loss)
			path.Events = path.Lost
		}
		n := c.sample(now, int64(moved), true, path, true)
		for len(opened) < n {
			opened = append(opened, now)
		}
		opened = opened[:n] // the newest go first
		seen = append(seen, n)
	}
	return seen
}

// belowAfter counts the ticks below n after n was first reached; -1: never
// reached.
func belowAfter(seen []int, n int) int {
	at := ticksTo(seen, n)
	if at < 0 {
		return -1
	}
	below := 0
	for _, x := range seen[at:] {
		if x < n {
			below++
		}
	}
	return below
}

// decaying is a lane that starts at burst and falls towards steady as
// losses cap its window.
func decaying(burst, steady float64, decay time.Duration) func(time.Duration) float64 {
	return func(age time.Duration) float64 {
		return steady + (burst-steady)*math.Exp(-age.Seconds()/decay.Seconds())
	}
}

// Lanes in slow start move more than they keep on a lossy path. The
// controller judges a step once every lane has lost a packet, so a burst
// of new lanes filling the link is not taken for what fewer lanes would
// keep (measured: 8 fresh lanes moved 12.6 MB/s on 100 Mbit/s, 40 ms,
// 0.5% loss; the step back to 4 then moved 2.5).
func TestLaneControllerWaitsOutSlowStart(t *testing.T) {
	const fresh = 300 * time.Millisecond
	step := func(age time.Duration) float64 {
		if age < fresh {
			return 4e6 // slow start
		}
		return 0.6e6 // once losses cap it
	}
	seen := freshRun(step, fresh, 0) // the loss rate not known
	if below := belowAfter(seen, 16); below != 0 {
		t.Errorf("lanes %v, want 16 once reached: a step was judged while its lanes were in slow start", runs(seen))
	}
	// One lane is not waited for: the first look only asks whether it is
	// slow.
	first := int(rttSpan(40*time.Millisecond, laneFirstRTTs, laneSettleMin, laneWindowMax)/laneTick) + 1
	if at := ticksTo(seen, 4); at < 0 || at > first {
		t.Errorf("lanes %v: the first step after %d ticks, want it after the first window's %d", runs(seen), at, first)
	}
}

// Lanes that left slow start still run above what they keep for a while,
// until losses cap their windows. A step taken while fewer lanes ran high
// may look as if it did not pay; once the fewer lanes fall, going back
// up is what pays, at once rather than after the hold.
func TestLaneControllerComesBackWhenFewerLanesFall(t *testing.T) {
	seen := freshRun(decaying(4e6, 0.6e6, 1600*time.Millisecond), 200*time.Millisecond, 0)
	// Without coming back, the lanes stay fewer for the hold (laneHoldFirst
	// windows) and then step up again as if untried.
	hold := int(laneHoldFirst * rttSpan(40*time.Millisecond, laneWindowRTTs, laneWindowMin, laneWindowMax) / laneTick)
	if below := belowAfter(seen, 16); below < 0 || below >= hold || seen[len(seen)-1] != 16 {
		t.Errorf("lanes %v: %d ticks below 16 after reaching it, want fewer than the hold's %d", runs(seen), below, hold)
	}
}

// Where the path's loss rate is known, a step is judged against what the
// lanes before it keep there (PathStats.keeps), not against the rate they
// ran at while they left slow start: the step that fills the link is kept.
func TestLaneControllerJudgesByWhatLanesKeep(t *testing.T) {
	seen := freshRun(decaying(4e6, 0.6e6, 1600*time.Millisecond), 200*time.Millisecond, 0.005)
	if below := belowAfter(seen, 16); below != 0 {
		t.Errorf("lanes %v, want 16 once reached", runs(seen))
	}
	// 0.5% loss, 40 ms: one lane keeps about 0.9 MB/s (quic-go measured
	// 0.8-1.0 there).
	one := PathStats{RTT: 40 * time.Millisecond, Sent: 10000, Lost: 50, Events: 50}.keeps(1)
	if one < 0.8e6 || one > 1e6 {
		t.Errorf("one lane keeps %.0f B/s on 0.5%% loss, 40 ms", one)
	}
	if k := (PathStats{RTT: 40 * time.Millisecond, Sent: 100, Lost: 1, Events: 1}).keeps(1); k != 0 {
		t.Errorf("keeps %.0f from 100 packets, want 0: not known", k)
	}
	// What lanes keep follows from the window's own loss events: a fast
	// link that lost a burst as slow start overshot its queue, or loses
	// bursts as its queue fills (many packets, one event per lane), is
	// held by the link, not by loss (measured on 1 Gbit/s, 10 ms: with the
	// whole transfer's count, or with packets for events, it took 16 lanes
	// where 4 moved as much).
	for _, queue := range []bool{false, true} {
		c := newLaneController(maxLanes)
		now := time.Unix(0, 0)
		var moved float64
		var fast []int
		n := 1
		path := PathStats{RTT: 10 * time.Millisecond, Sent: 10000, Lost: 200, Events: 1}
		for i := range 1000 {
			now = now.Add(laneTick)
			rate := min(120e6, 85e6*float64(n))
			moved += rate * laneTick.Seconds()
			path.Sent += uint64(rate * laneTick.Seconds() / lanePacket)
			if queue && i%20 == 0 { // every 200 ms the queue drops 0.3% of what went
				path.Lost += uint64(0.003 * 20 * rate * laneTick.Seconds() / lanePacket)
				path.Events += uint64(n)
			}
			n = c.sample(now, int64(moved), true, path, true)
			fast = append(fast, n)
		}
		if fast[len(fast)-1] == 16 {
			t.Errorf("fast link, losses at its queue %v: lanes %v, want fewer than 16", queue, runs(fast))
		}
	}
}

// A lane's losses within a round trip are one loss event.
func TestLaneLossEvents(t *testing.T) {
	lane := &countedLane{}
	ls := &laneSet{live: []*sendLane{{conn: lane}}}
	now := time.Unix(0, 0)
	const rtt = 40 * time.Millisecond
	for _, step := range []struct {
		after      time.Duration
		lost, want uint64
	}{
		{10 * time.Millisecond, 0, 0},
		{10 * time.Millisecond, 3, 1}, // a burst: one event
		{10 * time.Millisecond, 5, 1}, // within the round trip: the same
		{50 * time.Millisecond, 6, 2}, // later: another
		{10 * time.Millisecond, 6, 2},
	} {
		now = now.Add(step.after)
		lane.sent += 100
		lane.lost = step.lost
		if _, got := ls.lanesDelivered(now, rtt); got.Events != step.want || got.Lost != step.lost {
			t.Fatalf("after %d lost: %d events, %d lost; want %d events", step.lost, got.Events, got.Lost, step.want)
		}
	}
}

// countedLane is a lane that reports the counts it is given.
type countedLane struct {
	io.ReadWriteCloser
	sent, lost uint64
}

func (c *countedLane) Counts() (delivered, sent, lost uint64) {
	return c.sent * lanePacket, c.sent, c.lost
}

// While the lanes asked for are still opening, the controller does not
// start measuring: their handshakes would count as a step that did not pay.
func TestLaneControllerWaitsForLanesToOpen(t *testing.T) {
	c := newLaneController(maxLanes)
	path := PathStats{RTT: 40 * time.Millisecond, Lost: 1}
	now := time.Unix(0, 0)
	var moved int64
	n := 1
	opening := 0 // ticks until the lanes asked for are open
	var seen []int
	for range 1000 {
		now = now.Add(laneTick)
		if opening > 0 {
			opening--
			moved += 10_000 // the old lanes' 1 MB/s meanwhile
		} else {
			moved += int64(n) * 10_000
		}
		prev := n
		n = c.sample(now, moved, opening == 0, path, true)
		if n > prev {
			opening = 50 // half a second to open
		}
		seen = append(seen, n)
	}
	if seen[len(seen)-1] != 16 {
		t.Errorf("lanes %v, want 16: slow opens were taken for steps that did not pay", seen)
	}
}

// The controller's windows follow the round trip, within bounds.
func TestLaneControllerPacesByRoundTrip(t *testing.T) {
	lin := func(n int) float64 { return 0.5e6 * float64(n) }
	near := laneRun(lin, PathStats{RTT: 20 * time.Millisecond, Lost: 1}, true, 10*time.Second)
	far := laneRun(lin, PathStats{RTT: 80 * time.Millisecond, Lost: 1}, true, 10*time.Second)
	unknown := laneRun(lin, PathStats{}, false, 10*time.Second)
	a, b, c := ticksTo(near, 16), ticksTo(far, 16), ticksTo(unknown, 16)
	if a < 0 || b < 0 || c < 0 || !(a < b && b <= c) {
		t.Errorf("ticks to 16 lanes: RTT 20 ms %d, 80 ms %d, unknown %d: want faster on a shorter round trip", a, b, c)
	}
	if got, want := rttSpan(time.Microsecond, laneWindowRTTs, laneWindowMin, laneWindowMax), laneWindowMin; got != want {
		t.Errorf("window on loopback %v, want %v", got, want)
	}
	if got, want := rttSpan(time.Second, laneWindowRTTs, laneWindowMin, laneWindowMax), laneWindowMax; got != want {
		t.Errorf("window on a 1 s round trip %v, want %v", got, want)
	}
}

// A file's start (a burst into buffers) is not taken for its rate: when
// the rate comes from bytes handed to the main stream (the path tells
// nothing), the controller settles before it measures.
func TestLaneControllerSettlesAfterIdle(t *testing.T) {
	c := newLaneController(maxLanes)
	now := time.Unix(0, 0)
	var moved int64
	tick := func(path PathStats, known bool) int {
		now = now.Add(laneTick)
		moved += 10_000 // 1 MB/s
		return c.sample(now, moved, true, path, known)
	}
	for range 100 { // a file on a path that loses nothing: one lane
		if n := tick(PathStats{RTT: 40 * time.Millisecond}, true); n != 1 {
			t.Fatalf("lanes %d on a lossless path", n)
		}
	}
	c.idle()
	tick(PathStats{}, false)
	tick(PathStats{}, false)
	moved += 64 << 20 // the next file's first bytes fill buffers at once
	// The first decision comes after a settle and a window (laneSettleMax
	// and laneWindowMax when the round trip is not known); with the burst
	// in that window it would not step.
	for range (laneSettleMax+laneWindowMax)/laneTick + 2 {
		if tick(PathStats{}, false) > 1 {
			return // measured at 1 MB/s, below laneFast: it tries more
		}
	}
	t.Errorf("no step up: the burst at the file's start was taken for its rate")
}

func TestSpans(t *testing.T) {
	var s spans
	for _, c := range []struct {
		s, e, added int64
	}{{10, 20, 10}, {30, 40, 10}, {15, 35, 10}, {0, 5, 5}, {5, 10, 5}, {0, 40, 0}, {50, 60, 10}} {
		if got := s.add(c.s, c.e); got != c.added {
			t.Errorf("add [%d,%d): added %d, want %d (now %v)", c.s, c.e, got, c.added, s)
		}
	}
	if len(s) != 2 || s[0] != (span{0, 40}) || s[1] != (span{50, 60}) {
		t.Errorf("spans %v", s)
	}
}

func FuzzSpans(f *testing.F) {
	f.Add([]byte{1, 5, 3, 9, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		var s spans
		var bits [256]bool
		for i := 0; i+1 < len(b); i += 2 {
			lo, hi := int64(b[i]), int64(b[i+1])
			var want int64
			for k := lo; k < hi; k++ {
				if !bits[k] {
					bits[k] = true
					want++
				}
			}
			if got := s.add(lo, hi); got != want {
				t.Fatalf("add [%d,%d) added %d, want %d", lo, hi, got, want)
			}
		}
		for i := 1; i < len(s); i++ {
			if s[i-1].end >= s[i].start {
				t.Fatalf("not sorted and apart: %v", s)
			}
		}
		for k := range bits {
			in := false
			for _, x := range s {
				in = in || (int64(k) >= x.start && int64(k) < x.end)
			}
			if in != bits[k] {
				t.Fatalf("byte %d: in spans %v, set %v", k, in, bits[k])
			}
		}
	})
}

// receivingFirst is a receiver of entries in a new inbox, with the first
// entry's partial file open and held: what a transfer has when chunks of
// its first file come in.
func receivingFirst(t *testing.T, entries ...Entry) *receiver {
	inbox := t.TempDir()
	root, err := os.OpenRoot(inbox)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	root.MkdirAll(partialDir, 0o700)
	begun := make([]bool, len(entries))
	for i := range begun {
		begun[i] = true
	}
	rc := &receiver{in: &Inbox{Dir: inbox}, root: root, offer: offerOf(entries...), peerKey: "k", results: make([]*Result, len(entries)), begun: begun, have: map[int]int64{}}
	rc.cond = sync.NewCond(&rc.mu)
	rc.cur = 0
	rc.in.hold(rc, []string{rc.partName(0)})
	if err := rc.openPart(0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if rc.f != nil {
			rc.f.Close()
		}
	})
	return rc
}

// Whatever arrives on a lane, the receiver writes only inside the file
// being received and never past its size.
func FuzzLaneInput(f *testing.F) {
	var seed bytes.Buffer
	w := frameWriter{bufio.NewWriter(&seed)}
	w.write(frameChunk, append(appendChunkHeader(nil, 0, 3), "xyz"...))
	w.write(frameChunk, append(appendChunkHeader(nil, 1, 0), "abc"...))
	w.write(frameAck, encodeAck(0, 0, 3))
	w.w.Flush()
	f.Add(seed.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		rc := receivingFirst(t, Entry{Path: "f", Size: 8, Mode: 0o644}, Entry{Path: "d", Mode: fs.ModeDir | 0o755})
		root := rc.root
		a, b := net.Pipe()
		go io.Copy(io.Discard, a)
		go func() { a.Write(data); a.Close() }()
		rc.serveLane(b)
		rc.mu.Lock()
		rc.closeCurrent()
		rc.mu.Unlock()
		st, err := root.Stat(rc.partName(0))
		if err != nil || st.Size() > 8 {
			t.Fatalf("partial %v %v", st, err)
		}
	})
}

// What the receiver tells a sender about lanes (acknowledgements, lane
// secrets) and what a lane carries (chunk headers) never panics, and what
// parses encodes back the same.
func FuzzLaneFrames(f *testing.F) {
	f.Add(encodeAck(3, 1<<20, dataChunk), "00")
	f.Add(appendChunkHeader(nil, 1, 42), "")
	_, hx := newTokens(1)
	f.Add([]byte{}, hx[0])
	f.Fuzz(func(t *testing.T, b []byte, token string) {
		// (non-minimal varints are accepted: the values must survive a
		// round trip and stay in range)
		if i, off, n, err := decodeAck(b); err == nil {
			i2, off2, n2, err := decodeAck(encodeAck(i, off, n))
			if err != nil || i2 != i || off2 != off || n2 != n || i < 0 || off < 0 || n < 0 || n > maxFrameBytes {
				t.Fatalf("ack %x decodes to %d %d %d", b, i, off, n)
			}
		}
		if i, off, data, err := decodeChunk(b); err == nil {
			i2, off2, data2, err := decodeChunk(append(appendChunkHeader(nil, i, off), data...))
			if err != nil || i2 != i || off2 != off || !bytes.Equal(data, data2) || i < 0 || off < 0 {
				t.Fatalf("chunk %x decodes to %d %d", b, i, off)
			}
		}
		if toks, err := parseTokens([]string{token, token}); err == nil {
			for _, tok := range toks {
				if len(tok) != TokenSize {
					t.Fatalf("token of %d bytes accepted", len(tok))
				}
			}
		}
	})
}

// deafLanes opens lanes whose far end nobody reads: chunks on them are
// never acknowledged.
type deafLanes struct {
	t     *testing.T
	mu    sync.Mutex
	peers []net.Conn
}

func (d *deafLanes) Open(ctx context.Context, token []byte) (io.ReadWriteCloser, error) {
	a, b := testconn.TCPPair(d.t)
	d.mu.Lock()
	d.peers = append(d.peers, b)
	d.mu.Unlock()
	return a, nil
}

func (d *deafLanes) Expect(tokens [][]byte) (<-chan io.ReadWriteCloser, func()) {
	return make(chan io.ReadWriteCloser), func() {}
}

// A sender waiting for acknowledgements that never come stops when its
// context ends (Ctrl-C), with a forced count too.
func TestSenderWaitingForLanesStopsWithItsContext(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	writeRandom(t, filepath.Join(src, "big.bin"), 64<<20)
	plan := mustScan(t, filepath.Join(src, "big.bin"))
	deaf := &deafLanes{t: t}
	defer func() {
		for _, p := range deaf.peers {
			p.Close()
		}
	}()
	a, b := testconn.TCPPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer b.Close()
		(&Inbox{Dir: inbox}).ReceiveWith(context.Background(), b, "k", LaneOptions{Lanes: deaf}, nil, nil)
	}()
	var once sync.Once
	_, err := SendWith(ctx, a, plan, LaneOptions{Lanes: deaf, Force: 3}, func(p Progress) {
		if p.Done >= 3*dataChunk { // the lanes took chunks; soon all wait for acknowledgements
			once.Do(func() { time.AfterFunc(100*time.Millisecond, cancel) })
		}
	})
	a.Close()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("send: %v, want canceled", err)
	}
}

// A partial file whose gaps closed resumes from all of it: a chunk that
// came ahead of the one before it makes a sidecar naming the shorter
// prefix, and once the gap is filled that sidecar must not hold a resume
// back (a receiver killed then would otherwise start over).
func TestClosedGapResumesFromTheWholePartial(t *testing.T) {
	rc := receivingFirst(t, Entry{Path: "f", Size: 8, Mode: 0o644})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, err := rc.writeAt(3, []byte("def")); err != nil {
		t.Fatal(err)
	}
	if got := rc.partialHave(0); got != 0 {
		t.Fatalf("with a gap at 0, a resume would start at %d, want 0", got)
	}
	if _, err := rc.writeAt(0, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if got := rc.partialHave(0); got != 6 {
		t.Errorf("with the gap closed, a resume would start at %d, want 6", got)
	}
}

// countingConn counts the bytes written to it.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// A big file goes on lanes, not on the main stream: that is SSH inside
// QUIC, encrypted twice, where a lane is QUIC alone. The main stream
// carries none of it when a lane opens.
func TestMainStreamLeavesBigFilesToLanes(t *testing.T) {
	src, inbox := t.TempDir(), t.TempDir()
	const size = 32 << 20
	data := writeRandom(t, filepath.Join(src, "big.bin"), size)
	plan := mustScan(t, filepath.Join(src, "big.bin"))
	lanes := newTCPLanes(t)
	a, b := testconn.TCPPair(t)
	main := &countingConn{Conn: a}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer b.Close()
		_, err := (&Inbox{Dir: inbox}).ReceiveWith(ctx, b, "peer-key", LaneOptions{Lanes: lanes}, nil, nil)
		done <- err
	}()
	if _, err := SendWith(ctx, main, plan, LaneOptions{Lanes: lanes}, nil); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if sum(t, filepath.Join(inbox, "big.bin")) != sha256.Sum256(data) {
		t.Fatal("file differs (SHA-256)")
	}
	if n := main.n.Load(); n > 64<<10 {
		t.Errorf("the main stream carried %d of the file's %d bytes", n, size)
	}
}

// Losses alone do not make a path lossy: a clean fast path loses a few
// packets too (slow start overshooting a queue; on loopback, losses
// quic-go declares when a scheduling hiccup is many round trips). Below
// laneLossRate the controller keeps one lane; a path that loses 0.5% of
// its packets gets more.
func TestLaneControllerLooksAtTheLossRate(t *testing.T) {
	slow := func(n int) float64 { return 0.8e6 * float64(n) }
	rare := laneRun(slow, PathStats{RTT: 40 * time.Millisecond, Sent: 1_000_000, Lost: 30}, true, 10*time.Second)
	if m := mostLanes(rare); m != 1 {
		t.Errorf("3 losses in 100,000 packets: lanes %v, want 1", rare)
	}
	often := laneRun(slow, PathStats{RTT: 40 * time.Millisecond, Sent: 1_000_000, Lost: 5_000}, true, 10*time.Second)
	if m := mostLanes(often); m != 16 {
		t.Errorf("0.5%% of packets lost: at most %d lanes, want 16", m)
	}
}

// runs writes a lane count per tick as count x ticks.
func runs(s []int) []string {
	var out []string
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] == s[i] {
			j++
		}
		out = append(out, strconv.Itoa(s[i])+"x"+strconv.Itoa(j-i))
		i = j
	}
	return out
}

// A resume that starts while the transfer it takes over still writes
// (its sender was killed, its lanes still deliver what they buffered)
// reads the sidecar as that one rewrites it: it must never see it
// half-written and start the file over (seen in e2e: a 256 MiB resume
// sent everything again).
func TestSidecarIsNeverSeenHalfWritten(t *testing.T) {
	rc := receivingFirst(t, Entry{Path: "f", Size: 1 << 20, Mode: 0o644})
	if _, err := rc.writeAt(0, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.writeAt(5000, make([]byte, 1000)); err != nil { // a gap: the sidecar says 1000
		t.Fatal(err)
	}
	const rounds = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range rounds {
			rc.writeSidecar()
		}
	}()
	for range rounds {
		if got := rc.partialHave(0); got != 1000 {
			t.Fatalf("a resume read %d bytes to keep while the sidecar was rewritten, want 1000", got)
		}
	}
	<-done
}

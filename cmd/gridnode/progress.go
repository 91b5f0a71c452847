package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A submit's progress on stderr. On a terminal it is one status line, rewritten in place
// ("\r", clear to the end of the line) at most every redrawEvery, with the phase (finding
// workers, sending the binary, running on N of R, verifying) and the time so far; lines
// that are not a phase (a worker's failure, a warning) are printed above it, and Close
// leaves the last state on its line with a newline. Elsewhere (a pipe, a file, a log)
// every line is printed as it comes, as "gridnode: MSG". Stdout carries only the output.

// submitPhase is the state of a submit as its progress lines tell it: a pure type, fed
// the jobs.Submitter's human lines (jobs/submitter.go's progress calls) one at a time.
type submitPhase struct {
	replicas, quorum int

	phase    string    // what the status line says, without counts
	inflight int       // replicas sent that have not answered
	agree    int       // the most replicas that agree so far
	lastSend time.Time // of the latest replica sent
}

// The lines of the submitter that are phases. A line that is none is printed as it is.
var (
	reAsking   = regexp.MustCompile(`^asking (\d+) candidates? for offers$`)
	reFound    = regexp.MustCompile(`^(?:only )?(\d+) workers? can take the job`)
	reBusy     = regexp.MustCompile(`^all (\d+) workers? that can take the job are busy`)
	reSending  = regexp.MustCompile(`^\S+: sending job \S+$`)
	reLocal    = regexp.MustCompile(`^running the job here too`)
	reAnswer   = regexp.MustCompile(`^\S+: .*\((\d+) of (\d+) needed`)
	reQuorum   = regexp.MustCompile(`^quorum: (\d+) agree`)
	reLate     = regexp.MustCompile(`^the other replicas are late: one more sent$`)
	reThrough  = regexp.MustCompile(`^submitting through (.+)$`)
	reReplica  = regexp.MustCompile(`^(?:…\S+|local run): `)       // a replica's failure: it answered
	rePeerLine = regexp.MustCompile(`^…\S+: (?:no offer|skipped)`) // an offer's, not a replica's
)

// sendingFor is how long after the last replica was sent the status line says "sending
// the binary": the worker admits the job, then fetches the binary from this node, and the
// submitter hears nothing more until the result. Workers on a LAN or loopback fetch a job
// binary (at most a few MiB) well within it.
const sendingFor = time.Second

// update takes one progress line at time now and reports whether to print it above the
// status line: it is no phase, or a phase that warns.
func (s *submitPhase) update(line string, now time.Time) (print bool) {
	atoi := func(m []string, i int) int { n, _ := strconv.Atoi(m[i]); return n }
	switch m := []string(nil); {
	case reAsking.MatchString(line):
		m = reAsking.FindStringSubmatch(line)
		s.phase = fmt.Sprintf("finding workers: asking %d", atoi(m, 1))
	case reFound.MatchString(line):
		m = reFound.FindStringSubmatch(line)
		s.phase = fmt.Sprintf("finding workers: %d can take the job", atoi(m, 1))
		return m[0][:5] == "only " // fewer than asked for: a warning
	case reBusy.MatchString(line):
		m = reBusy.FindStringSubmatch(line)
		s.phase = fmt.Sprintf("waiting for a free slot: %d workers busy", atoi(m, 1))
	case reSending.MatchString(line), reLate.MatchString(line):
		s.inflight++
		s.lastSend = now
		s.phase = "sending"
	case reLocal.MatchString(line):
		s.inflight++
		s.phase = "sending"
	case reAnswer.MatchString(line):
		m = reAnswer.FindStringSubmatch(line)
		s.inflight = max(0, s.inflight-1)
		s.agree, s.quorum = max(s.agree, atoi(m, 1)), atoi(m, 2)
		s.phase = "verifying"
	case reQuorum.MatchString(line):
		m = reQuorum.FindStringSubmatch(line)
		s.agree, s.inflight = atoi(m, 1), 0
		s.phase = "verified"
	case reThrough.MatchString(line):
		m = reThrough.FindStringSubmatch(line)
		s.phase = "submitting through the daemon at " + m[1]
	case s.phase != "" && !rePeerLine.MatchString(line) && reReplica.MatchString(line):
		s.inflight = max(0, s.inflight-1) // a replica failed: printed, and no longer out
		return true
	default:
		return true
	}
	return false
}

// status is the status line at time now, elapsed since the submit started.
func (s *submitPhase) status(now time.Time, elapsed time.Duration) string {
	ph := s.phase
	switch ph {
	case "":
		ph = "joining the grid, finding workers"
	case "sending", "verifying":
		ph = fmt.Sprintf("running on %d of %d", s.inflight, s.replicas)
		if s.phase == "sending" && now.Sub(s.lastSend) < sendingFor {
			ph = fmt.Sprintf("sending the binary to %d of %d", s.inflight, s.replicas)
		}
		if s.phase == "verifying" || s.agree > 0 {
			ph += fmt.Sprintf(", verifying: %d of %d agree", s.agree, s.quorum)
		}
	case "verified":
		ph = fmt.Sprintf("verified: %d agree", s.agree)
	}
	return fmt.Sprintf("[%s] %s", elapsed.Truncate(time.Second), ph)
}

// phaser is the state a status line shows: a submit's (submitPhase) or a batch's
// (batchPhase).
type phaser interface {
	// update takes a progress line at now and reports whether to print it.
	update(line string, now time.Time) (print bool)
	// status is the status line at now, elapsed since the start.
	status(now time.Time, elapsed time.Duration) string
}

// submitProgress writes a submit's progress to w: a status line on a terminal, else
// plain lines.
type submitProgress struct {
	w     io.Writer
	tty   bool
	width int // of the terminal, in columns
	start time.Time

	mu     sync.Mutex
	st     phaser
	drawn  time.Time // of the last redraw
	text   string    // what it drew
	shown  bool      // the status line is on the screen
	dirty  bool      // the state changed since the last redraw
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

// redrawEvery throttles the status line; it also ticks the time so far.
const redrawEvery = 100 * time.Millisecond

// newSubmitProgress writes to f: a status line when f is a terminal (and $TERM is not
// "dumb"), else plain lines.
func newSubmitProgress(f *os.File, replicas, quorum int) *submitProgress {
	return newProgress(f, &submitPhase{replicas: replicas, quorum: quorum})
}

// newProgress writes st's status line to f when f is a terminal, else plain lines.
func newProgress(f *os.File, st phaser) *submitProgress {
	p := &submitProgress{w: f, start: time.Now(), st: st}
	if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && os.Getenv("TERM") != "dumb" {
		p.tty, p.width = true, int(ws.Col)
		if p.width <= 0 {
			p.width = 80
		}
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.tick()
	}
	return p
}

// Line is the progress callback (jobs.SubmitterConfig.Progress).
func (p *submitProgress) Line(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty || p.closed {
		fmt.Fprintln(p.w, "gridnode:", msg)
		return
	}
	now := time.Now()
	if p.st.update(msg, now) {
		p.clear()
		fmt.Fprintln(p.w, "gridnode:", msg)
	}
	p.dirty = true
	if now.Sub(p.drawn) >= redrawEvery {
		p.draw(now)
	}
}

func (p *submitProgress) tick() {
	defer close(p.done)
	t := time.NewTicker(redrawEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			p.draw(now)
			p.mu.Unlock()
		}
	}
}

// Close ends the status line with its last state and a newline; later lines are plain.
// It is safe to call more than once.
func (p *submitProgress) Close() {
	p.mu.Lock()
	if !p.tty || p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.dirty || p.shown {
		p.draw(time.Now())
		fmt.Fprint(p.w, "\n")
		p.shown = false
	}
	p.mu.Unlock()
	close(p.stop)
	<-p.done
}

// draw rewrites the status line. Preconditions: p.mu is held.
func (p *submitProgress) draw(now time.Time) {
	if p.closed && !p.dirty && !p.shown {
		return
	}
	line := []rune("gridnode: " + p.st.status(now, now.Sub(p.start)))
	if len(line) > p.width-1 {
		line = append(line[:max(0, p.width-2)], '…')
	}
	if p.shown && string(line) == p.text {
		return
	}
	fmt.Fprint(p.w, "\r\x1b[K"+string(line))
	p.drawn, p.text, p.shown, p.dirty = now, string(line), true, false
}

// clear erases the status line, for a plain line to take its place. Preconditions: p.mu
// is held.
func (p *submitProgress) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

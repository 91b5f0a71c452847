package jobs

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gridnode/gridnode/protocol"
)

// Hours are the donor's time-of-day windows (`gridnode run --hours`): when the worker
// admits jobs. A window is an optional day or day range and a time range on the local
// clock, windows are separated by commas:
//
//	Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00
//	22:00-07:00            (every day)
//	Fri-Mon 20:00-24:00    (a day range may wrap: Fri, Sat, Sun, Mon)
//
// A time range that ends at or before it starts crosses midnight and belongs to the day
// it starts on: "Fri 18:00-08:00" is Friday 18:00 to Saturday 08:00. Times are read on
// the wall clock of the zone given to ParseHours (the machine's local zone for `gridnode
// run`), so across a DST change a window keeps its clock times: it is an hour shorter or
// longer that day. A nil or zero Hours is always open.
type Hours struct {
	windows []window
	text    string // as parsed, cleaned: for messages and the status
	loc     *time.Location
}

// window is one day set and a minute-of-day range [start, end); end <= start wraps past
// midnight into the next day.
type window struct {
	days       [7]bool // by time.Weekday
	start, end int     // minutes from midnight, 0..1440
}

var dayNames = [7]string{"sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"}

// ParseHours parses s (see Hours) for the clock of loc (nil: time.Local). An empty s is
// always open. An error names the token that is wrong.
func ParseHours(s string, loc *time.Location) (*Hours, error) {
	if loc == nil {
		loc = time.Local
	}
	h := &Hours{loc: loc}
	if strings.TrimSpace(s) == "" {
		return h, nil
	}
	var texts []string
	for part := range strings.SplitSeq(s, ",") {
		fields := strings.Fields(part)
		var w window
		switch len(fields) {
		case 0:
			return nil, fmt.Errorf("hours %q: an empty window (a comma too many?)", s)
		case 1:
			for d := range w.days {
				w.days[d] = true
			}
		case 2:
			days, err := parseDays(fields[0])
			if err != nil {
				return nil, fmt.Errorf("hours %q: %w", s, err)
			}
			w.days = days
			fields = fields[1:]
		default:
			return nil, fmt.Errorf("hours %q: window %q: want [DAY[-DAY]] HH:MM-HH:MM", s, strings.TrimSpace(part))
		}
		start, end, ok := strings.Cut(fields[0], "-")
		var err error
		if !ok {
			return nil, fmt.Errorf("hours %q: %q: want a time range HH:MM-HH:MM", s, fields[0])
		}
		if w.start, err = parseClock(start, false); err != nil {
			return nil, fmt.Errorf("hours %q: %w", s, err)
		}
		if w.end, err = parseClock(end, true); err != nil {
			return nil, fmt.Errorf("hours %q: %w", s, err)
		}
		if w.start == w.end {
			return nil, fmt.Errorf("hours %q: %q: a window that starts when it ends (for a whole day write 00:00-24:00)", s, fields[0])
		}
		if w.start == 24*60 {
			return nil, fmt.Errorf("hours %q: %q: a window cannot start at 24:00", s, start)
		}
		h.windows = append(h.windows, w)
		texts = append(texts, strings.Join(strings.Fields(part), " "))
	}
	h.text = strings.Join(texts, ", ")
	return h, nil
}

// parseDays parses DAY or DAY-DAY (wrapping past Sunday).
func parseDays(tok string) ([7]bool, error) {
	var days [7]bool
	a, b, isRange := strings.Cut(tok, "-")
	from, err := parseDay(a)
	if err != nil {
		return days, err
	}
	to := from
	if isRange {
		if to, err = parseDay(b); err != nil {
			return days, err
		}
	}
	for d := from; ; d = (d + 1) % 7 {
		days[d] = true
		if d == to {
			break
		}
	}
	return days, nil
}

// parseDay accepts a day's English name or its first three letters or more, any case.
func parseDay(tok string) (int, error) {
	t := strings.ToLower(tok)
	if len(t) >= 3 {
		for d, name := range dayNames {
			if strings.HasPrefix(name, t) {
				return d, nil
			}
		}
	}
	return 0, fmt.Errorf("%q is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)", tok)
}

// parseClock parses H:MM or HH:MM into minutes from midnight; 24:00 only as an end.
func parseClock(tok string, end bool) (int, error) {
	hs, ms, ok := strings.Cut(tok, ":")
	h, err1 := strconv.Atoi(hs)
	m, err2 := strconv.Atoi(ms)
	switch {
	case !ok || err1 != nil || err2 != nil || len(hs) == 0 || len(hs) > 2 || len(ms) != 2 ||
		h < 0 || m < 0 || m > 59 || h > 24 || (h == 24 && m != 0):
		return 0, fmt.Errorf("%q is not a time of day (HH:MM, 00:00 to 24:00)", tok)
	case h == 24 && !end:
		return 0, fmt.Errorf("%q: a window cannot start at 24:00", tok)
	}
	return h*60 + m, nil
}

// Always reports whether h admits jobs at every time (no windows).
func (h *Hours) Always() bool { return h == nil || len(h.windows) == 0 }

// String returns the windows as parsed ("" for always).
func (h *Hours) String() string {
	if h == nil {
		return ""
	}
	return h.text
}

// inWindow reports whether t is inside one of h's windows.
func (h *Hours) inWindow(t time.Time) bool {
	if h.Always() {
		return true
	}
	t = t.In(h.loc)
	day, min := int(t.Weekday()), t.Hour()*60+t.Minute()
	prev := (day + 6) % 7
	for _, w := range h.windows {
		if w.start < w.end {
			if w.days[day] && min >= w.start && min < w.end {
				return true
			}
		} else if (w.days[day] && min >= w.start) || (w.days[prev] && min < w.end) {
			return true
		}
	}
	return false
}

// next returns the first window start after t (t outside every window), zero if h is
// always open. A start that the clock skips (a DST change) is taken as time.Date
// normalises it: an hour later.
func (h *Hours) next(t time.Time) time.Time {
	if h.Always() {
		return time.Time{}
	}
	lt := t.In(h.loc)
	var best time.Time
	for k := 0; k <= 8; k++ {
		date := time.Date(lt.Year(), lt.Month(), lt.Day()+k, 12, 0, 0, 0, h.loc)
		for _, w := range h.windows {
			if !w.days[date.Weekday()] {
				continue
			}
			s := time.Date(date.Year(), date.Month(), date.Day(), w.start/60, w.start%60, 0, 0, h.loc)
			if s.After(t) && (best.IsZero() || s.Before(best)) {
				best = s
			}
		}
		if !best.IsZero() {
			return best
		}
	}
	return best
}

// hoursNow returns the worker's clock now.
func (w *Worker) hoursNow() time.Time {
	if w.cfg.now != nil {
		return w.cfg.now()
	}
	return time.Now()
}

// offHours reports whether the worker is outside the donor's hours now, and if so when
// the next window opens.
func (w *Worker) offHours() (off bool, next time.Time) {
	h := w.cfg.Hours
	if h.Always() {
		return false, time.Time{}
	}
	now := w.hoursNow()
	if h.inWindow(now) {
		return false, time.Time{}
	}
	return true, h.next(now)
}

// checkHours is nil, or the BUSY refusal of a job outside the donor's hours.
func (w *Worker) checkHours() error {
	off, next := w.offHours()
	if !off {
		return nil
	}
	return protocol.Errorf(protocol.Code_BUSY, "outside the donor's hours (next window at %s)", next.Format("Mon Jan 2 15:04 MST"))
}

package jobs

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // the DST cases need America/New_York wherever the tests run

	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

func newYork(t testing.TB) *time.Location {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestHoursInWindow(t *testing.T) {
	ny := newYork(t)
	at := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, ny) }
	// 2026-12-02 is a Wednesday; 2026-12-05 a Saturday.
	const evenings = "Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00"
	tests := []struct {
		name  string
		hours string
		t     time.Time
		want  bool
	}{
		{"always", "", at(2026, 12, 2, 12, 0), true},
		{"weekday noon", evenings, at(2026, 12, 2, 12, 0), false},
		{"window opens", evenings, at(2026, 12, 2, 18, 0), true},
		{"a minute before", evenings, at(2026, 12, 2, 17, 59), false},
		{"past midnight, from the day before", evenings, at(2026, 12, 3, 7, 59), true},
		{"window closes", evenings, at(2026, 12, 3, 8, 0), false},
		{"saturday morning", evenings, at(2026, 12, 5, 7, 0), true},
		{"sunday night", evenings, at(2026, 12, 6, 23, 59), true},
		// The window of a day crossing midnight belongs to the day it starts on: Sunday's
		// ends at 24:00, and Monday's night starts at 18:00.
		{"monday morning", evenings, at(2026, 12, 7, 7, 0), false},
		{"friday night into saturday", "Fri 22:00-02:00", at(2026, 12, 5, 1, 30), true},
		{"thursday night is not friday's", "Fri 22:00-02:00", at(2026, 12, 4, 1, 30), false},
		{"day range wrapping past sunday", "Fri-Mon 20:00-24:00", at(2026, 12, 7, 21, 0), true},
		{"wrapped range leaves tuesday out", "Fri-Mon 20:00-24:00", at(2026, 12, 8, 21, 0), false},
		{"every day", "22:00-06:00", at(2026, 12, 2, 3, 0), true},
		{"full day names, any case", "SATURDAY 09:00-17:00", at(2026, 12, 5, 9, 0), true},
		// DST: 2026-03-08 02:00 EST becomes 03:00 EDT; 2026-11-01 02:00 EDT becomes 01:00 EST.
		{"spring forward, wall clock", "22:00-06:00", at(2026, 3, 8, 5, 30), true},
		{"spring forward, closed at 06:00 EDT", "22:00-06:00", at(2026, 3, 8, 6, 0), false},
		{"fall back, first 01:30 (EDT)", "01:00-02:00", time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC), true},
		{"fall back, second 01:30 (EST)", "01:00-02:00", time.Date(2026, 11, 1, 6, 30, 0, 0, time.UTC), true},
		{"fall back, 02:00 EST", "01:00-02:00", time.Date(2026, 11, 1, 7, 0, 0, 0, time.UTC), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHours(tt.hours, ny)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.inWindow(tt.t); got != tt.want {
				t.Fatalf("%q at %v: got %v, want %v", tt.hours, tt.t.In(ny), got, tt.want)
			}
		})
	}
}

func TestHoursNext(t *testing.T) {
	ny := newYork(t)
	tests := []struct {
		name    string
		hours   string
		t, want time.Time
	}{
		{"later today", "Mon-Fri 18:00-08:00", time.Date(2026, 12, 2, 12, 0, 0, 0, ny), time.Date(2026, 12, 2, 18, 0, 0, 0, ny)},
		{"after the weekend", "Mon-Fri 18:00-08:00", time.Date(2026, 12, 5, 12, 0, 0, 0, ny), time.Date(2026, 12, 7, 18, 0, 0, 0, ny)},
		{"a week on", "Wed 18:00-19:00", time.Date(2026, 12, 2, 19, 0, 0, 0, ny), time.Date(2026, 12, 9, 18, 0, 0, 0, ny)},
		{"earliest of several", "20:00-21:00, 13:00-14:00", time.Date(2026, 12, 2, 12, 0, 0, 0, ny), time.Date(2026, 12, 2, 13, 0, 0, 0, ny)},
		// Across spring forward: 22:00 EDT on 2026-03-08 is 02:00 UTC on the 9th, not 03:00.
		{"after spring forward", "22:00-06:00", time.Date(2026, 3, 8, 7, 0, 0, 0, ny), time.Date(2026, 3, 9, 2, 0, 0, 0, time.UTC)},
		{"always", "", time.Date(2026, 12, 2, 12, 0, 0, 0, ny), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHours(tt.hours, ny)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.next(tt.t); !got.Equal(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseHoursErrors(t *testing.T) {
	tests := []struct{ hours, token string }{
		{"Mon-Fry 18:00-08:00", `"Fry"`},
		{"Mo 18:00-19:00", `"Mo"`},
		{"Mon 25:00-08:00", `"25:00"`},
		{"Mon 18:00-08:60", `"08:60"`},
		{"Mon 18:0-19:00", `"18:0"`},
		{"Mon 18:00", `"18:00"`},
		{"18:00-18:00", `"18:00-18:00"`},
		{"24:00-08:00", `"24:00"`},
		{"Mon Tue 18:00-19:00", `"Mon Tue 18:00-19:00"`},
		{"18:00-19:00,", "empty window"},
		{"Mon 6pm-8am", `"6pm"`},
	}
	for _, tt := range tests {
		t.Run(tt.hours, func(t *testing.T) {
			_, err := ParseHours(tt.hours, time.UTC)
			if err == nil || !strings.Contains(err.Error(), tt.token) {
				t.Fatalf("got %v, want an error naming %s", err, tt.token)
			}
		})
	}
}

// FuzzParseHours: the parser never panics, and what it prints parses to the same windows.
func FuzzParseHours(f *testing.F) {
	for _, s := range []string{"", "Mon-Fri 18:00-08:00, Sat-Sun 00:00-24:00", "22:00-06:00", "Fri-Mon 0:00-24:00", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHours(s, time.UTC)
		if err != nil {
			return
		}
		h2, err := ParseHours(h.String(), time.UTC)
		if err != nil {
			t.Fatalf("%q printed as %q, which does not parse: %v", s, h.String(), err)
		}
		if len(h2.windows) != len(h.windows) {
			t.Fatalf("%q: %d windows, reparsed %d", s, len(h.windows), len(h2.windows))
		}
		for i := range h.windows {
			if h.windows[i] != h2.windows[i] {
				t.Fatalf("%q: window %d %+v, reparsed %+v", s, i, h.windows[i], h2.windows[i])
			}
		}
	})
}

// TestWorkerHours drives a worker's clock across its donor's window: outside it, a job is
// refused BUSY naming the next window and the signed offer says off hours, when the next
// window opens, and no free slot; inside it, the same request is admitted.
func TestWorkerHours(t *testing.T) {
	ctx := context.Background()
	hours, err := ParseHours("Mon-Fri 18:00-08:00", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) // a Wednesday noon
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	g := newGrid(t, WorkerConfig{Runner: echo, Slots: 2, Hours: hours, now: clock, CPUShare: 50})
	ai := addrInfo(g.hosts[0])
	c, _ := g.stores[0].Put(ctx, testBinary)
	req := func() *protocol.JobRequest {
		return &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: nonce()}
	}

	o, _, err := g.sub.queryOffer(ctx, ai)
	if err != nil {
		t.Fatal(err)
	}
	if stretch := max(1, 2/CPUQuota(50)); o.CPUShare != 50 || o.WallStretch != math.Round(stretch*1000)/1000 {
		t.Errorf("got offer cpu share %d, wall stretch %v; want 50, %.3f", o.CPUShare, o.WallStretch, stretch)
	}
	open := time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	if !o.OffHours || !o.NextWindow.Equal(open) || o.SlotsFree != 0 {
		t.Fatalf("off hours: got offer off_hours %v, next window %v, slots free %d; want true, %v, 0", o.OffHours, o.NextWindow, o.SlotsFree, open)
	}
	_, err = rawJob(t, g.subHost, ai.ID, req())
	if !errors.Is(err, protocol.ErrBusy) || !strings.Contains(err.Error(), "outside the donor's hours (next window at Wed Dec 2 18:00 UTC)") {
		t.Fatalf("off hours: got %v, want BUSY: outside the donor's hours (next window at Wed Dec 2 18:00 UTC)", err)
	}

	set(open)
	if o, _, err = g.sub.queryOffer(ctx, ai); err != nil {
		t.Fatal(err)
	}
	if o.OffHours || !o.NextWindow.IsZero() || o.SlotsFree != 1 {
		t.Fatalf("in hours: got offer off_hours %v, next window %v, slots free %d; want false, zero, 1", o.OffHours, o.NextWindow, o.SlotsFree)
	}
	res, err := rawJob(t, g.subHost, ai.ID, req())
	if err != nil || res.Receipt == nil {
		t.Fatalf("in hours: got %v, %v; want a result", statusOf(res), err)
	}
}

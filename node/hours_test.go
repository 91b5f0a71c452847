package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gridnode/gridnode/jobs"
)

// TestStatusDonorControls opens a worker whose only window is a minute that has just
// passed and checks that its status says it is off hours, when it opens again, and why no
// job arrives; and that the CPU share is reported.
func TestStatusDonorControls(t *testing.T) {
	ctx := context.Background()
	past := time.Now().Add(-2 * time.Minute).In(time.Local)
	end := past.Add(time.Minute)
	spec := past.Format("Mon 15:04") + "-" + end.Format("15:04")
	hours, err := jobs.ParseHours(spec, time.Local)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true, Runner: echoRunner, Slots: 1, Hours: hours, CPUShare: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	st := n.Status()
	want := time.Date(past.Year(), past.Month(), past.Day()+7, past.Hour(), past.Minute(), 0, 0, time.Local)
	if !st.OffHours || st.NextWindow == nil || !st.NextWindow.Equal(want) {
		t.Fatalf("got off_hours %v, next window %v; want true, %v", st.OffHours, st.NextWindow, want)
	}
	if st.Policy.Hours != spec || st.Policy.CPUShare != 100 {
		t.Fatalf("got policy hours %q, cpu share %d; want %q, 100", st.Policy.Hours, st.Policy.CPUShare, spec)
	}
	if len(st.Reasons) == 0 || !strings.HasPrefix(st.Reasons[0], "outside the donor's hours") {
		t.Fatalf("got reasons %q, want the donor's hours first", st.Reasons)
	}
}

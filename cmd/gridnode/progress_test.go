package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestSubmitPhase feeds the status line's state the lines of real submits (2 of 3
// replicas agreeing; a failed replica; a busy grid) and reads its status line.
func TestSubmitPhase(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		line  string
		at    time.Duration // after t0
		print bool          // printed above the status line
		want  string        // the status line then, without "[elapsed] "
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a quorum", []step{
			{"asking 3 candidates for offers", 0, false, "finding workers: asking 3"},
			{"3 workers can take the job", 10 * time.Millisecond, false, "finding workers: 3 can take the job"},
			{"…rb4Zn8kF: sending job bafkreidc7p76utnfu77wwsj54xw22tdg7xxcxv4ukwefiuhmtv4uo4ddbq", 20 * time.Millisecond, false, "sending the binary to 1 of 2"},
			{"…qKV23Cud: sending job bafkreidc7p76utnfu77wwsj54xw22tdg7xxcxv4ukwefiuhmtv4uo4ddbq", 30 * time.Millisecond, false, "sending the binary to 2 of 2"},
			{"", 2 * time.Second, false, "running on 2 of 2"},
			{"…qKV23Cud: exited 0, output bafkreidwebu3yb5g4g256er2llt33eobbwvai2kpxkqx7oqm22unztupei (1 of 2 needed)", 3 * time.Second, false, "running on 1 of 2, verifying: 1 of 2 agree"},
			{"quorum: 2 agree: exited 0, output bafkreidwebu3yb5g4g256er2llt33eobbwvai2kpxkqx7oqm22unztupei", 3 * time.Second, false, "verified: 2 agree"},
		}},
		{"a failed replica and a spare", []step{
			{"only 1 worker can take the job, fewer than the 2 replicas asked for", 0, true, "finding workers: 1 can take the job"},
			{"…rb4Zn8kF: sending job bafkreidc", 0, false, "sending the binary to 1 of 2"},
			{"…rb4Zn8kF: refused: BUSY: all slots busy", 2 * time.Second, true, "running on 0 of 2"},
			{"the other replicas are late: one more sent", 2 * time.Second, false, "sending the binary to 1 of 2"},
			{"…wawTQrQM: wall_timeout SIGKILL, output bafkreih (1 of 2 needed)", 4 * time.Second, false, "running on 0 of 2, verifying: 1 of 2 agree"},
		}},
		{"a busy grid", []step{
			{"all 2 workers that can take the job are busy; waiting for a free slot", 0, false, "waiting for a free slot: 2 workers busy"},
			{"…abcdefgh: no offer: context deadline exceeded", 0, true, "waiting for a free slot: 2 workers busy"},
		}},
		{"through the daemon", []step{
			{"submitting through /tmp/d/api.sock", 0, false, "submitting through the daemon at /tmp/d/api.sock"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &submitPhase{replicas: 2, quorum: 2}
			for _, st := range tt.steps {
				now := t0.Add(st.at)
				if st.line != "" {
					if got := s.update(st.line, now); got != st.print {
						t.Errorf("%q: got print %v, want %v", st.line, got, st.print)
					}
				}
				_, got, _ := strings.Cut(s.status(now, st.at), "] ")
				if got != st.want {
					t.Errorf("after %q: got status %q, want %q", st.line, got, st.want)
				}
			}
		})
	}
}

// TestSubmitProgressPlain: where stderr is not a terminal, every line as it comes.
func TestSubmitProgressPlain(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	p := newSubmitProgress(f, 2, 2)
	p.Line("asking 3 candidates for offers")
	p.Line("…rb4Zn8kF: sending job bafk")
	p.Close()
	p.Line("exited 0 in 46ms")
	b, _ := os.ReadFile(f.Name())
	want := "gridnode: asking 3 candidates for offers\ngridnode: …rb4Zn8kF: sending job bafk\ngridnode: exited 0 in 46ms\n"
	if string(b) != want {
		t.Errorf("got %q, want %q", b, want)
	}
}

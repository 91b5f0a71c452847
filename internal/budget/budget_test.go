package budget

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestBudget(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		p    peer.ID
		at   time.Duration // after t0
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"burst then refused", []step{{"a", 0, true}, {"a", 0, true}, {"a", 0, false}}},
		{"one back per period", []step{{"a", 0, true}, {"a", 0, true}, {"a", 0, false}, {"a", 9 * time.Second, false}, {"a", 10 * time.Second, true}, {"a", 10 * time.Second, false}}},
		{"refills to burst only", []step{{"a", 0, true}, {"a", time.Hour, true}, {"a", time.Hour, true}, {"a", time.Hour, false}}},
		{"peers are apart", []step{{"a", 0, true}, {"a", 0, true}, {"b", 0, true}, {"a", 0, false}, {"b", 0, true}}},
		// Three peers tracked at most: a fourth gets nothing while the others' buckets are
		// spent, and gets in once one has refilled.
		{"new identities buy nothing", []step{{"a", 0, true}, {"b", 0, true}, {"c", 0, true}, {"d", 0, false}, {"d", 20 * time.Second, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(2, 10*time.Second, 3)
			for i, s := range tt.steps {
				if got := b.Take(s.p, t0.Add(s.at)); got != s.want {
					t.Fatalf("step %d (%s at %v): got %v, want %v", i, s.p, s.at, got, s.want)
				}
			}
		})
	}
}

func TestBudgetSpent(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := New(2, 10*time.Second, 1)
	tests := []struct {
		name string
		take peer.ID // taken before the check, if set
		p    peer.ID
		at   time.Duration
		want bool
	}{
		{name: "untracked", p: "a", want: false},
		{name: "one left", take: "a", p: "a", want: false},
		{name: "none left", take: "a", p: "a", want: true},
		{name: "refilled", p: "a", at: 10 * time.Second, want: false},
		{name: "newcomer beyond maxPeers", p: "b", want: false},
	}
	for _, tt := range tests {
		if tt.take != "" {
			b.Take(tt.take, t0)
		}
		if got := b.Spent(tt.p, t0.Add(tt.at)); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

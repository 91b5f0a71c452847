package jobs

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestStretched(t *testing.T) {
	tests := []struct {
		name    string
		s       float64
		d, want time.Duration
	}{
		{"no cap", 0, time.Minute, time.Minute},
		{"a stretch of 1 is none", 1, time.Minute, time.Minute},
		{"half a core", 2, time.Minute, 2*time.Minute + 6*time.Second},
		{"a worker's claim is bounded", 1e9, time.Minute, MaxWallStretch*time.Minute + 6*time.Second},
		{"NaN", nanStretch(), time.Minute, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := stretched(tt.d, tt.s); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func nanStretch() float64 { z := 0.0; return z / z }

func TestCheckCPUShare(t *testing.T) {
	cores := runtime.NumCPU()
	tests := []struct {
		name         string
		share, slots int
		err          string
	}{
		{"none", 0, 8, ""},
		{"all", 100, 8, ""},
		{"a quarter core per slot", 25, cores, ""},
		{"too little per slot", 12, cores, "at least 1/4"},
		{"negative", -1, 1, "want 1 to 100"},
		{"above 100", 101, 1, "want 1 to 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkCPUShare(tt.share, tt.slots)
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("got %v, want %q", err, tt.err)
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := (&DemoCommand{Stdout: &out}).Run(ctx, []string{"--nodes", "5", "--replicas", "2", "--job", "primes", "--input", "100000"})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.Contains(s, "\n9592\n") { // primes <= 100000
		t.Errorf("output lacks the prime count 9592")
	}
	if got := strings.Count(s, "receipt valid"); got < 2 {
		t.Errorf("got %d valid receipts, want at least 2", got)
	}
	if strings.Contains(s, "INVALID") {
		t.Error("a receipt did not verify")
	}
}

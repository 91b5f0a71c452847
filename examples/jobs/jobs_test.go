package examplejobs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	examplejobs "github.com/gridnode/gridnode/examples/jobs"
)

// build compiles the named example into a fresh temp dir.
func build(t *testing.T, name string) string {
	t.Helper()
	bin, err := examplejobs.Build(context.Background(), name, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// run executes bin natively (the jobs only read, write and exit) with stdin.
func run(t *testing.T, bin string, stdin []byte) []byte {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = []string{}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("run %s: %v: %s", bin, err, stderr.Bytes())
	}
	return out
}

func TestNames(t *testing.T) {
	got := examplejobs.Names()
	for _, want := range []string{"echo", "mandelbrot", "primes", "sha256"} {
		if !slices.Contains(got, want) {
			t.Errorf("got names %v, want %q among them", got, want)
		}
	}
	if _, err := examplejobs.Source("nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Source(nope): got %v, want fs.ErrNotExist", err)
	}
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestEcho(t *testing.T) {
	bin := build(t, "echo")
	for _, n := range []int{0, 1, 65535, 65536, 200_001} {
		in := randomBytes(n)
		if got := run(t, bin, in); !bytes.Equal(got, in) {
			t.Errorf("%d bytes: got %d bytes back, want the input", n, len(got))
		}
	}
}

func TestSHA256(t *testing.T) {
	bin := build(t, "sha256")
	inputs := map[string][]byte{
		"empty":  {},
		"abc":    []byte("abc"),
		"55":     bytes.Repeat([]byte{'a'}, 55),
		"56":     bytes.Repeat([]byte{'a'}, 56),
		"63":     bytes.Repeat([]byte{'a'}, 63),
		"64":     bytes.Repeat([]byte{'a'}, 64),
		"65":     bytes.Repeat([]byte{'a'}, 65),
		"random": randomBytes(100_003),
		"1MiB+":  randomBytes(1<<20 + 17),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			sum := sha256.Sum256(in)
			want := hex.EncodeToString(sum[:]) + "\n"
			if got := string(run(t, bin, in)); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// countPrimes is the truth for the primes job.
func countPrimes(n int) int {
	if n < 2 {
		return 0
	}
	composite := make([]bool, n+1)
	count := 0
	for i := 2; i <= n; i++ {
		if composite[i] {
			continue
		}
		count++
		for j := i * i; j <= n; j += i {
			composite[j] = true
		}
	}
	return count
}

func TestPrimes(t *testing.T) {
	bin := build(t, "primes")
	tests := []struct {
		in   string
		want int
	}{
		{"", countPrimes(100000)},
		{"0", 0},
		{"1", 0},
		{"2", 1},
		{"3\n", 2},
		{" 10 ", 4},
		{"97", 25},
		{"1000", 168},
		{"1000000", countPrimes(1000000)},
		{"10000019\n", countPrimes(10000019)},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			got := strings.TrimSpace(string(run(t, bin, []byte(tt.in))))
			if got != strconv.Itoa(tt.want) {
				t.Errorf("got %s, want %d", got, tt.want)
			}
		})
	}
	t.Run("bad input", func(t *testing.T) {
		cmd := exec.Command(bin)
		cmd.Stdin = strings.NewReader("ten")
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("got %v, want exit status 1", err)
		}
	})
}

func TestMandelbrot(t *testing.T) {
	bin := build(t, "mandelbrot")
	tests := []struct {
		in         string
		w, h, iter int
	}{
		{"", 640, 480, 256},
		{"40 20 100", 40, 20, 100},
		{"7 3", 7, 3, 256},
		{"1 1 1\n", 1, 1, 1},
	}
	outs := map[string][]byte{}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			out := run(t, bin, []byte(tt.in))
			outs[tt.in] = out
			hdr := fmt.Sprintf("P5\n%d %d\n255\n", tt.w, tt.h)
			if !bytes.HasPrefix(out, []byte(hdr)) {
				t.Fatalf("got header %q, want %q", out[:min(len(out), len(hdr))], hdr)
			}
			if got, want := len(out), len(hdr)+tt.w*tt.h; got != want {
				t.Errorf("got %d bytes, want %d", got, want)
			}
		})
	}

	// (-0.5, 0) is in the set; the top-left corner (-2.5, -1.25) escapes after one
	// iteration: 255 - 1*255/100.
	out := outs["40 20 100"]
	if out == nil {
		t.Fatal("the 40x20 case did not run")
	}
	px := out[len("P5\n40 20\n255\n"):]
	if got := px[10*40+20]; got != 0 {
		t.Errorf("pixel at (-0.5, 0): got %d, want 0", got)
	}
	if got := px[0]; got != 253 {
		t.Errorf("pixel at (-2.5, -1.25): got %d, want 253", got)
	}
	if again := run(t, bin, []byte("40 20 100")); !bytes.Equal(again, out) {
		t.Error("two runs gave different images")
	}
}

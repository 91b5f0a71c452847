package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// testKey returns a deterministic Ed25519 key for seed.
func testKey(t testing.TB, seed uint64) (crypto.PrivKey, peer.ID) {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.NewChaCha8(seedBytes(seed)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, id
}

func testNonce() []byte { return bytes.Repeat([]byte{7}, 24) }

func testReceipt(worker peer.ID) *Receipt {
	return &Receipt{
		JobCID:    cids.Sum([]byte("job")),
		InputCID:  cids.Sum([]byte("input")),
		OutputCID: cids.Sum([]byte("output")),
		StderrCID: cids.Sum([]byte("stderr")),
		Status:    "exited",
		ExitCode:  3,
		CPU:       1500 * time.Microsecond,
		Wall:      2 * time.Second,
		Worker:    worker,
		Nonce:     testNonce(),
	}
}

func testOffer(id peer.ID) *Offer {
	return &Offer{
		Peer: id, Arch: sandbox.ArchAMD64, SlotsFree: 1, SlotsTotal: 4,
		Max:      sandbox.Limits{CPU: time.Minute, Wall: time.Hour, Memory: 1 << 28, Stack: 8 << 20, MaxOutput: 1 << 24, MaxBinary: 1 << 26},
		MaxInput: 1 << 24,
		Time:     time.UnixMilli(1700000000000), Nonce: testNonce(),
		Isolation: "seccomp strict, uid per slot, no_new_privs",
	}
}

func TestMsgRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   proto.Message
		out  proto.Message
	}{
		{"empty info", &InfoRequest{}, &InfoRequest{}},
		{"blob request", &BlobRequest{Cid: cids.Sum(nil).Bytes()}, &BlobRequest{}},
		{"job request", &JobRequest{JobCid: cids.Sum(nil).Bytes(), InputCid: cids.Sum(nil).Bytes(), InputSize: 300000, InputInline: true, Nonce: testNonce(), Limits: &Limits{CpuMs: 5}}, &JobRequest{}},
		{"job result", &JobResult{OutputSize: 300000, Stderr: bytes.Repeat([]byte("e"), 60000), Receipt: []byte("r")}, &JobResult{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteMsg(&buf, tt.in); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("trailing raw bytes")
			if err := ReadMsg(&buf, tt.out, MaxJobResult); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(tt.in, tt.out) {
				t.Fatalf("got %v, want %v", tt.out, tt.in)
			}
			if got := buf.String(); got != "trailing raw bytes" {
				t.Fatalf("ReadMsg read past the message: left %q", got)
			}
		})
	}
}

func TestReadMsgRejects(t *testing.T) {
	uv := func(x uint64) []byte { return binary.AppendUvarint(nil, x) }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty stream", nil, io.EOF},
		{"prefix above max", uv(MaxControlMsg + 1), ErrTooLarge},
		{"huge prefix", uv(1 << 62), ErrTooLarge},
		{"truncated varint", []byte{0x80}, io.ErrUnexpectedEOF},
		{"non-minimal varint", []byte{0x81, 0x00}, ErrBadRequest},
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11), ErrBadRequest},
		{"truncated body", append(uv(10), 1, 2), io.ErrUnexpectedEOF},
		{"garbage body", append(uv(3), 0xff, 0xff, 0xff), ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ReadMsg(bytes.NewReader(tt.in), &JobAdmit{}, MaxControlMsg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestReadMsgBoundedAlloc checks that a length prefix alone does not make ReadMsg allocate:
// memory grows with the bytes that arrive.
func TestReadMsgBoundedAlloc(t *testing.T) {
	for _, prefix := range []uint64{1 << 40, MaxJobRequest} {
		in := append(binary.AppendUvarint(nil, prefix), make([]byte, 100)...)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := ReadMsg(bytes.NewReader(in), &JobRequest{}, MaxJobRequest)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("prefix %d: got nil error", prefix)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Fatalf("prefix %d: allocated %d bytes, want < 1 MiB", prefix, got)
		}
	}
}

func TestCodes(t *testing.T) {
	for _, ce := range codeErrs {
		t.Run(ce.code.String(), func(t *testing.T) {
			err := FromCode(ce.code, "detail")
			if !errors.Is(err, ce.err) {
				t.Fatalf("got %v, want errors.Is %v", err, ce.err)
			}
			if got := CodeOf(fmt.Errorf("wrapped: %w", err)); got != ce.code {
				t.Fatalf("CodeOf(wrapped CodeError): got %v, want %v", got, ce.code)
			}
			if got := CodeOf(fmt.Errorf("wrapped: %w", ce.err)); got != ce.code {
				t.Fatalf("CodeOf(wrapped sentinel): got %v, want %v", got, ce.code)
			}
		})
	}
	if FromCode(Code_OK, "") != nil || CodeOf(nil) != Code_OK {
		t.Fatal("OK must map to nil")
	}
	if got := CodeOf(errors.New("other")); got != Code_INTERNAL {
		t.Fatalf("got %v, want INTERNAL", got)
	}
	if err := FromCode(Code(999), "x"); !errors.Is(err, ErrUnknownCode) {
		t.Fatalf("got %v, want ErrUnknownCode", err)
	}
}

func TestReceipt(t *testing.T) {
	key, id := testKey(t, 1)
	otherKey, _ := testKey(t, 2)
	want := testReceipt(id)
	sealed, err := SealReceipt(want, key)
	if err != nil {
		t.Fatal(err)
	}
	got, signer, err := OpenReceipt(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if signer != id {
		t.Fatalf("signer: got %s, want %s", signer, id)
	}
	if !got.JobCID.Equals(want.JobCID) || !got.InputCID.Equals(want.InputCID) || !got.OutputCID.Equals(want.OutputCID) ||
		!got.StderrCID.Equals(want.StderrCID) || got.Status != want.Status || got.ExitCode != want.ExitCode || got.CPU != want.CPU || got.Wall != want.Wall ||
		got.Worker != want.Worker || !bytes.Equal(got.Nonce, want.Nonce) {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	forged, err := SealReceipt(testReceipt(id), otherKey) // worker field says id
	if err != nil {
		t.Fatal(err)
	}
	offer, err := SealOffer(testOffer(id), key)
	if err != nil {
		t.Fatal(err)
	}
	bad := testReceipt(id)
	bad.Nonce = nil
	noNonce, err := SealReceipt(bad, key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"signed by another key", forged, ErrBadEnvelope},
		{"offer opened as receipt", offer, ErrBadEnvelope},
		{"missing nonce", noNonce, ErrBadEnvelope},
		{"too large", make([]byte, MaxEnvelope+1), ErrTooLarge},
		{"garbage", []byte("garbage"), ErrBadEnvelope},
	}
	// Flip every byte in turn: nothing but an error may come out.
	for i := range sealed {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		tests = append(tests, struct {
			name string
			in   []byte
			want error
		}{fmt.Sprintf("tampered byte %d", i), b, nil})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _, err := OpenReceipt(tt.in)
			if err == nil {
				t.Fatalf("got receipt %+v, want an error", r)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestOffer(t *testing.T) {
	key, id := testKey(t, 1)
	otherKey, _ := testKey(t, 2)
	want := testOffer(id)
	sealed, err := SealOffer(want, key)
	if err != nil {
		t.Fatal(err)
	}
	got, signer, err := OpenOffer(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if signer != id || got.Peer != id || got.Arch != want.Arch || got.SlotsFree != 1 || got.SlotsTotal != 4 ||
		got.Max != want.Max || got.MaxInput != want.MaxInput || !got.Time.Equal(want.Time) || !bytes.Equal(got.Nonce, want.Nonce) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	forged, err := SealOffer(testOffer(id), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenOffer(forged); !errors.Is(err, ErrBadEnvelope) {
		t.Fatalf("forged offer: got %v, want ErrBadEnvelope", err)
	}
	receipt, err := SealReceipt(testReceipt(id), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenOffer(receipt); !errors.Is(err, ErrBadEnvelope) {
		t.Fatalf("receipt opened as offer: got %v, want ErrBadEnvelope", err)
	}
}

func TestJobResultCheck(t *testing.T) {
	tests := []struct {
		name string
		m    *JobResult
		want error
	}{
		{"result", &JobResult{OutputSize: 3, Stderr: []byte("err"), Receipt: []byte("r")}, nil},
		{"largest output", &JobResult{OutputSize: MaxOutput, Receipt: []byte("r")}, nil},
		{"output too large", &JobResult{OutputSize: MaxOutput + 1, Receipt: []byte("r")}, ErrTooLarge},
		{"output inside (job/2)", &JobResult{Output: []byte("out"), Receipt: []byte("r")}, ErrBadRequest},
		{"refusal", &JobResult{Code: Code_BUSY}, nil},
		{"refusal with output", &JobResult{Code: Code_BUSY, OutputSize: 1}, ErrBadRequest},
		{"no receipt", &JobResult{OutputSize: 3}, ErrBadRequest},
		{"stderr too large", &JobResult{Stderr: make([]byte, MaxStderr+1), Receipt: []byte("r")}, ErrTooLarge},
		{"input request", &JobResult{SendInput: true}, nil},
		{"input request with a result", &JobResult{SendInput: true, Receipt: []byte("r")}, ErrBadRequest},
		{"input request with stderr", &JobResult{SendInput: true, Stderr: []byte("e")}, ErrBadRequest},
		{"input request with output", &JobResult{SendInput: true, OutputSize: 1}, ErrBadRequest},
		{"input request with a code", &JobResult{SendInput: true, Code: Code_INTERNAL}, ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.m.Check(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestJobRequestCheck(t *testing.T) {
	ok := func() *JobRequest {
		return &JobRequest{JobCid: cids.Sum([]byte("job")).Bytes(), InputCid: cids.Sum([]byte("in")).Bytes(), InputSize: 2, InputInline: true, Nonce: testNonce()}
	}
	tests := []struct {
		name   string
		modify func(m *JobRequest)
		want   error
	}{
		{"ok", func(*JobRequest) {}, nil},
		{"input by cid", func(m *JobRequest) { m.InputInline = false }, nil},
		{"no input", func(m *JobRequest) { m.InputCid, m.InputSize, m.InputInline = nil, 0, false }, nil},
		{"input in the header", func(m *JobRequest) { m.Input = []byte("in") }, ErrBadRequest},
		{"input size without cid", func(m *JobRequest) { m.InputCid = nil }, ErrBadRequest},
		{"inline input too large", func(m *JobRequest) { m.InputSize = MaxInline + 1 }, ErrTooLarge},
		{"no job cid", func(m *JobRequest) { m.JobCid = nil }, ErrBadRequest},
		{"garbage job cid", func(m *JobRequest) { m.JobCid = []byte("xyz") }, ErrBadRequest},
		{"short nonce", func(m *JobRequest) { m.Nonce = m.Nonce[:8] }, ErrBadRequest},
		{"long nonce", func(m *JobRequest) { m.Nonce = make([]byte, MaxNonce+1) }, ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ok()
			tt.modify(m)
			if err := m.Check(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadBlobHeader(t *testing.T) {
	frame := func(m *BlobResponse) []byte {
		var b bytes.Buffer
		if err := WriteMsg(&b, m); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	tests := []struct {
		name string
		in   []byte
		size int64
		want error
	}{
		{"ok", frame(&BlobResponse{Size: 100}), 100, nil},
		{"not found", frame(&BlobResponse{Code: Code_NOT_FOUND}), 0, ErrNotFound},
		{"too large", frame(&BlobResponse{Size: 101}), 0, ErrTooLarge},
		{"garbage", []byte{5, 0xff}, 0, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size, err := ReadBlobHeader(bytes.NewReader(tt.in), 100)
			if !errors.Is(err, tt.want) || size != tt.size {
				t.Fatalf("got %d, %v; want %d, %v", size, err, tt.size, tt.want)
			}
		})
	}
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	return b
}

func TestClean(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},
		{"a\xffb", 10, "a\uFFFDb"},
	}
	for _, tt := range tests {
		if got := Clean(tt.in, tt.n); got != tt.want {
			t.Errorf("Clean(%q, %d): got %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// TestLimitsWire checks that every sandbox limit has a uint64 field of its name in the wire
// Limits (and the wire has no other), and that limits survive the trip in the wire's units.
func TestLimitsWire(t *testing.T) {
	names := sandbox.LimitNames()
	if n := limitsFields().Len(); n != len(names) {
		t.Errorf("wire Limits has %d fields, sandbox.Limits %d", n, len(names))
	}
	for _, name := range names {
		fd := limitsFields().ByName(protoreflect.Name(name))
		if fd == nil || fd.Kind() != protoreflect.Uint64Kind {
			t.Errorf("sandbox limit %q has no uint64 field in the wire Limits", name)
		}
	}
	l := sandbox.Limits{CPU: 1500 * time.Microsecond, Wall: time.Hour, Memory: 1 << 28, Stack: 3 << 20, MaxOutput: 5, MaxBinary: 1 << 26}
	w := WireLimits(l)
	if w.CpuMs != 2 || w.WallMs != 3600000 || w.Memory != 1<<28 || w.Stack != 3<<20 || w.Output != 5 || w.Binary != 1<<26 {
		t.Fatalf("wire form of %+v: %+v", l, w)
	}
	back := w.Sandbox()
	if want := l; back.CPU != 2*time.Millisecond || func() bool { want.CPU = back.CPU; return back != want }() {
		t.Fatalf("round trip of %+v: %+v", l, back)
	}
	if got := (*Limits)(nil).Sandbox(); got != (sandbox.Limits{}) {
		t.Fatalf("nil wire limits: %+v, want unset", got)
	}
	if got := (&Limits{CpuMs: math.MaxUint64, Memory: math.MaxUint64}).Sandbox(); got.CPU != math.MaxInt64 || got.Memory != math.MaxInt64 {
		t.Fatalf("huge wire limits: %+v, want saturated", got)
	}
}

// TestRefusalSaysTheCodeOnce: a refusal crosses the wire and reads as the sender wrote it,
// the code's own words once (they were twice: "binary rejected: binary rejected: ...").
func TestRefusalSaysTheCodeOnce(t *testing.T) {
	for _, err := range []error{
		Errorf(Code_REJECTED, "not an ELF file"),
		fmt.Errorf("binary: %w", Errorf(Code_REJECTED, "not an ELF file")),
	} {
		got := FromCode(Refusal(err)).Error()
		if strings.Count(got, "binary rejected") != 1 || !strings.Contains(got, "not an ELF file") {
			t.Errorf("%v crossed the wire as %q", err, got)
		}
	}
	// The host's own failures stay on the host: a stranger learns no path.
	if code, msg := Refusal(errors.New("open /var/lib/gridnode/blobs/x: permission denied")); code != Code_INTERNAL || strings.Contains(msg, "/var/lib") {
		t.Errorf("an internal error crossed the wire as %v %q", code, msg)
	}
}

// TestReadPayload reads a raw payload the way a job stream's peer sends it: after its
// header, with bytes of the next message behind it, and cut short.
func TestReadPayload(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789"), 100000) // several pieces, the last short
	var hashed bytes.Buffer
	r := bytes.NewReader(append(slices.Clone(payload), "next"...))
	got, err := ReadPayload(r, int64(len(payload)), &hashed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) || !bytes.Equal(hashed.Bytes(), payload) {
		t.Fatalf("got %d bytes read and %d hashed, want the %d sent", len(got), hashed.Len(), len(payload))
	}
	if cap(got) != len(payload) {
		t.Errorf("got a buffer of capacity %d, want exactly %d", cap(got), len(payload))
	}
	if rest, _ := io.ReadAll(r); string(rest) != "next" {
		t.Errorf("ReadPayload read past the payload: left %q", rest)
	}
	if _, err := ReadPayload(bytes.NewReader(payload[:10]), 11, io.Discard); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short payload: got %v, want io.ErrUnexpectedEOF", err)
	}
	if got, err := ReadPayload(bytes.NewReader(nil), 0, io.Discard); err != nil || len(got) != 0 {
		t.Errorf("empty payload: got %q, %v", got, err)
	}
}

package protocol

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// TestWriteMsgPayloadSizes: at each side of the size where WriteMsgPayload stops copying
// the payload into its header's Write, the bytes on the wire read back as a peer reads
// them (ReadMsg, then ReadPayload of the size the header states, hashed as it comes),
// nothing more, nothing less.
func TestWriteMsgPayloadSizes(t *testing.T) {
	for _, n := range []int{0, 1, smallPayload - 1, smallPayload, smallPayload + 1, 3 * smallPayload} {
		payload := bytes.Repeat([]byte{byte(n)}, n)
		for i := range payload {
			payload[i] ^= byte(i)
		}
		var wire bytes.Buffer
		if err := WriteMsgPayload(&wire, &JobResult{OutputSize: uint64(n), Reason: "r"}, payload); err != nil {
			t.Fatal(err)
		}
		var m JobResult
		if err := ReadMsg(&wire, &m, MaxJobResult); err != nil {
			t.Fatalf("%d bytes: header: %v", n, err)
		}
		h := sha256.New()
		got, err := ReadPayload(&wire, int64(m.OutputSize), h)
		if err != nil || !bytes.Equal(got, payload) || m.Reason != "r" {
			t.Fatalf("%d bytes: got %d bytes (%v), reason %q", n, len(got), err, m.Reason)
		}
		if want := sha256.Sum256(payload); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("%d bytes: hashed other bytes than it returned", n)
		}
		if wire.Len() != 0 {
			t.Fatalf("%d bytes: %d bytes left on the wire", n, wire.Len())
		}
	}
}

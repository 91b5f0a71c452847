package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/gridnode/gridnode/cids"
)

// Second round of probes of Store.Hold (ce0b96c).

// TestHoldAttack2ShorterLiveHold: the reader Open returned fixed its size from the hold
// live then; a later read copies from whichever hold is live. If that one is shorter (a
// hold whose bytes do not match its CID: a violated precondition), Read slices b[r.off:]
// past its end and panics; in serveBlob that is a stream handler, which libp2p does not
// recover: the whole node dies. At r.off == len(b) it returns (0, nil) forever, and
// io.CopyBuffer spins on s.mu until the hold goes. Either way it should be an error.
func TestHoldAttack2ShorterLiveHold(t *testing.T) {
	for _, tc := range []struct {
		name      string
		read, low int // bytes read before the switch; the shorter hold's length
	}{
		{"offset past the shorter hold", 3 << 10, 1 << 10},
		{"offset at the shorter hold's end", 1 << 10, 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st := newStore(t)
			long := heldPattern(4<<10, 21)
			c := cids.Sum(long)
			relLong := st.Hold(c, long)
			rc, size, err := st.Open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(rc, make([]byte, tc.read)); err != nil {
				t.Fatal(err)
			}
			defer st.Hold(c, heldPattern(tc.low, 22))() // the buggy caller's hold
			relLong()
			var n int
			var rerr error
			func() {
				defer func() {
					if p := recover(); p != nil {
						rerr = fmt.Errorf("panic: %v", p)
					}
				}()
				n, rerr = rc.Read(make([]byte, 64<<10))
			}()
			switch {
			case rerr != nil && bytes.HasPrefix([]byte(rerr.Error()), []byte("panic")):
				t.Fatalf("Read of a %d-byte blob at offset %d, served now by a %d-byte hold: %v (in serveBlob this kills the node)", size, tc.read, tc.low, rerr)
			case rerr == nil && n == 0:
				t.Fatalf("Read of a %d-byte blob at offset %d, served now by a %d-byte hold: (0, nil): io.Copy spins until that hold is released", size, tc.read, tc.low)
			}
		})
	}
}

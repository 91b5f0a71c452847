package protocol

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

// TestOfferDonorControls checks that the donor's hours and CPU cap survive sealing and
// opening, and that malformed ones are refused.
func TestOfferDonorControls(t *testing.T) {
	key, id := testKey(t, 1)
	next := time.UnixMilli(1767290400000)
	tests := []struct {
		name      string
		off       bool
		next      time.Time
		share     int
		stretch   float64
		wantShare int
	}{
		{"none", false, time.Time{}, 0, 0, 0},
		{"off hours", true, next, 0, 0, 0},
		{"capped", false, time.Time{}, 50, 2, 50},
		{"share above 100", false, time.Time{}, 300, 1, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOffer(id)
			o.OffHours, o.NextWindow, o.CPUShare, o.WallStretch = tt.off, tt.next, tt.share, tt.stretch
			sealed, err := SealOffer(o, key)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := OpenOffer(sealed)
			if err != nil {
				t.Fatal(err)
			}
			if got.OffHours != tt.off || !got.NextWindow.Equal(tt.next) || got.CPUShare != tt.wantShare || got.WallStretch != tt.stretch {
				t.Fatalf("got off %v next %v share %d stretch %v; want %v %v %d %v", got.OffHours, got.NextWindow, got.CPUShare, got.WallStretch, tt.off, tt.next, tt.wantShare, tt.stretch)
			}
		})
	}
	for name, m := range map[string]*OfferPayload{
		"share 101":               {CpuSharePct: 101},
		"next window, not closed": {NextWindowUnixMs: 1},
	} {
		m.PeerId, m.Arch = []byte(id), "linux/amd64"
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := new(Offer).UnmarshalRecord(b); !errors.Is(err, ErrBadEnvelope) {
			t.Errorf("%s: got %v, want ErrBadEnvelope", name, err)
		}
	}
}

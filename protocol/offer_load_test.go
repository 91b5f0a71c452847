package protocol

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
)

// TestOfferLoad checks that the donor's load policy survives sealing and opening, in
// thousandths, and that an offer paused by load without a max load is refused.
func TestOfferLoad(t *testing.T) {
	key, id := testKey(t, 1)
	tests := []struct {
		name          string
		maxLoad, load float64
		paused        bool
		wantMax       float64
		wantLoad      float64
	}{
		{"no policy", 0, 0, false, 0, 0},
		{"admitting", 1.5, 0.25, false, 1.5, 0.25},
		{"paused", 0.3, 2.0004, true, 0.3, 2},
		{"negative load", 1, -3, false, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOffer(id)
			o.MaxLoad, o.Load, o.Paused = tt.maxLoad, tt.load, tt.paused
			sealed, err := SealOffer(o, key)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := OpenOffer(sealed)
			if err != nil {
				t.Fatal(err)
			}
			if got.MaxLoad != tt.wantMax || got.Load != tt.wantLoad || got.Paused != tt.paused {
				t.Fatalf("got max load %v, load %v, paused %v; want %v, %v, %v", got.MaxLoad, got.Load, got.Paused, tt.wantMax, tt.wantLoad, tt.paused)
			}
		})
	}

	// Read back as the submitter's decoder does, a paused offer without a max is malformed.
	b, err := proto.Marshal(&OfferPayload{PeerId: []byte(id), Arch: "linux/amd64", LoadPaused: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := new(Offer).UnmarshalRecord(b); !errors.Is(err, ErrBadEnvelope) {
		t.Fatalf("paused with no max load: got %v, want ErrBadEnvelope", err)
	}
}

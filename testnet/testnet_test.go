package testnet

import (
	"context"
	"github.com/gridnode/gridnode/sandbox"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	for _, tc := range []struct {
		name          string
		nodes, bucket int
	}{
		{"5", 5, 0},
		{"25-small-buckets", 25, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.nodes > 5 {
				t.Skip("slow")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			n, err := Start(ctx, Setup{Nodes: tc.nodes, BucketSize: tc.bucket})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if got := len(n.Nodes()); got != tc.nodes {
				t.Fatalf("got %d nodes, want %d", got, tc.nodes)
			}
			c, err := n.NewClient(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ws, err := c.FindWorkers(ctx, sandbox.ArchAMD64)
			if err != nil {
				t.Fatal(err)
			}
			if len(ws) != tc.nodes {
				t.Errorf("client found %d workers, want %d", len(ws), tc.nodes)
			}
			for _, w := range ws {
				if w.ID == c.ID() {
					t.Error("client found itself as a worker")
				}
			}
		})
	}
}

package node

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/dht"
)

// discoverWant is how many candidate workers a submit's discovery asks the DHT for
// (docs/SCALE.md): the submitter asks up to MaxReplicas+Replicas of them for offers (7 at
// the default two replicas), and some are busy or refuse. The DHT lookup stops once it has
// this many, so a submit costs the same on any grid size.
const discoverWant = 3 * dht.ShardTarget / 4

// discover polls the DHT for up to discoverWant workers for arch from one random shard
// (dht.FindShard) until it finds one or ctx ends: a grid that just started may still be
// announcing.
func (n *Node) discover(ctx context.Context, arch string) ([]peer.AddrInfo, error) {
	return n.pollWorkers(ctx, arch, discoverWant, 1)
}

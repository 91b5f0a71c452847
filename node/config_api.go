package node

import (
	"net/http"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
)

// ConfigInfo is GET /v1/config: the daemon's effective configuration (defaults filled in),
// the same keys as `gridnode run`'s flags (docs/API.md).
type ConfigInfo struct {
	DataDir      string            `json:"data"`
	Listen       []string          `json:"listen"`
	Bootstrap    []string          `json:"bootstrap"`
	Relays       []string          `json:"relay"`
	Worker       bool              `json:"worker"`
	Slots        int               `json:"slots"`
	SlotsPerPeer int               `json:"slots_per_peer"`
	MaxLoad      float64           `json:"max_load"`
	Hours        string            `json:"hours"`
	CPUShare     int               `json:"cpu_share"`
	StoreQuota   int64             `json:"store_quota"`
	Limits       map[string]uint64 `json:"limits"` // the most a job may ask for, in the wire's units (ms, bytes)
	Reach        string            `json:"reach"`
	MDNS         bool              `json:"mdns"`
	RelayService bool              `json:"relay_service"`
	Metrics      bool              `json:"metrics"`
	Trusted      int               `json:"trusted_peers"` // how many, from DATA/trusted-peers and the config
}

// Config returns the node's effective configuration.
func (n *Node) Config() ConfigInfo {
	c := n.cfg
	info := ConfigInfo{
		DataDir: n.dir, Listen: n.AddrStrings(), Bootstrap: c.Bootstrap, Relays: c.Relays, Worker: c.Worker,
		Slots: c.Slots, SlotsPerPeer: c.SlotsPerPeer, MaxLoad: c.MaxLoad, CPUShare: c.CPUShare,
		StoreQuota: c.StoreQuota, Reach: c.Reach.String(), MDNS: c.MDNS, RelayService: c.RelayService,
		Metrics: c.Metrics, Trusted: n.jobs.sub.TrustedCount(), Limits: map[string]uint64{},
	}
	if info.Slots <= 0 {
		info.Slots = jobs.DefaultSlots()
	}
	if info.SlotsPerPeer <= 0 {
		info.SlotsPerPeer = (info.Slots + 1) / 2
	}
	if c.Hours != nil {
		info.Hours = c.Hours.String()
	}
	if info.StoreQuota <= 0 {
		info.StoreQuota = store.DefaultQuota
	}
	c.Limits.Or(sandbox.DefaultLimits()).Wire(func(name string, v uint64) { info.Limits[name] = v })
	return info
}

// configRoutes adds GET /v1/config to mux.
func (n *Node) configRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/config", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, n.Config()) })
}

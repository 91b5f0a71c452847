package node

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/gridnode/gridnode/internal/atomicfile"
)

// BootstrapFile, in the data dir, lists peers to join the grid through, one full
// /p2p/ multiaddr per line ('#' starts a comment), as --bootstrap does. The node never
// writes it.
const BootstrapFile = "bootstrap"

// PeersFile, in the data dir, is where a daemon remembers grid peers it dialled, to rejoin
// through them next time when its bootstrap peers are gone. The node rewrites it
// (atomically) now and then and on Close.
const PeersFile = "peers"

// Bounds on the peer files: a remembered peer list holds at most maxRemembered peers with
// at most maxRememberedAddrs addresses each; a bootstrap file at most maxBootstrapLines
// addresses; either is read up to maxPeersFileSize bytes.
const (
	maxRemembered      = 32
	maxRememberedAddrs = 4
	maxBootstrapLines  = 64
	maxPeersFileSize   = 64 << 10
)

// Join loop timing: the grid is looked at every joinPoll; each known peer is tried with its
// own backoff from joinMinBackoff doubling up to joinMaxBackoff, which only a connection
// that stayed up for joinStable resets; remembered peers are saved every rememberEvery.
// Variables, for tests.
var (
	joinPoll       = time.Second
	joinMinBackoff = time.Second
	joinMaxBackoff = 5 * time.Minute
	joinStable     = 2 * time.Second
	rememberEvery  = 5 * time.Minute
)

// Bounds on what peers may make of DATA/peers: at most maxRememberedPerPrefix peers from one
// network prefix (/24, /48), and a save replaces at most half of the peers of the last one.
const maxRememberedPerPrefix = 2

// readPeerFile parses a peer file: one multiaddr per line, blank lines and '#' comments
// skipped, at most maxLines addresses, at most maxPeersFileSize bytes read. Lines that do
// not parse are returned as bad, not as an error: one typo should not stop a node.
func readPeerFile(path string, maxLines int) (peers []peer.AddrInfo, bad []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var mas []multiaddr.Multiaddr
	sc := bufio.NewScanner(io.LimitReader(f, maxPeersFileSize))
	for sc.Scan() && len(mas) < maxLines {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		ma, err := multiaddr.NewMultiaddr(line)
		if err == nil {
			_, err = peer.AddrInfoFromP2pAddr(ma)
		}
		if err != nil {
			bad = append(bad, line)
			continue
		}
		mas = append(mas, ma)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	peers, err = peer.AddrInfosFromP2pAddrs(mas...)
	return peers, bad, err
}

// writePeerFile replaces path with peers, atomically (a temporary file renamed over it),
// mode 0600.
func writePeerFile(path string, peers []peer.AddrInfo) error {
	var b bytes.Buffer
	b.WriteString("# Grid peers this node dialled, rewritten by gridnode; list your own in " + BootstrapFile + ".\n")
	for _, ai := range peers {
		mas, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil {
			continue
		}
		for _, a := range mas {
			b.WriteString(a.String() + "\n")
		}
	}
	return atomicfile.Write(path, b.Bytes(), 0o600, true)
}

// joinSchedule decides when a node tries each known peer and when it says that it lost or
// found the grid; it is pure, for testing. Every peer has its own backoff, and an attempt
// does not reset it (a peer that accepts connections and closes them at once counts as
// reached): only a connection to it that stayed up does (reset).
type joinSchedule struct {
	min, max time.Duration
	peers    map[peer.ID]*joinRetry
	in       bool // in the grid at the last observation
	started  bool // observed at least once
}

type joinRetry struct {
	next time.Time     // earliest next attempt
	wait time.Duration // the wait after the next attempt
}

func newJoinSchedule(min, max time.Duration) *joinSchedule {
	return &joinSchedule{min: min, max: max, peers: make(map[peer.ID]*joinRetry)}
}

// Transitions observe reports.
const (
	joinNone = iota
	joinFound
	joinLost
)

// observe records whether this node is in the grid at now and reports a transition.
// Losing the grid makes every peer due at once; their backoffs stay.
func (s *joinSchedule) observe(now time.Time, in bool) int {
	was, started := s.in, s.started
	s.in, s.started = in, true
	switch {
	case in && (!was || !started):
		return joinFound
	case !in && was:
		for _, r := range s.peers {
			r.next = now
		}
		return joinLost
	}
	return joinNone
}

// due reports whether to try p at now.
func (s *joinSchedule) due(now time.Time, p peer.ID) bool {
	r := s.peers[p]
	return r == nil || !now.Before(r.next)
}

// tried records an attempt on p at now and returns the wait before the next one: the
// peer's backoff, or the longest while in the grid.
func (s *joinSchedule) tried(now time.Time, p peer.ID) time.Duration {
	r := s.peers[p]
	if r == nil {
		r = &joinRetry{wait: s.min}
		s.peers[p] = r
	}
	wait := r.wait
	if s.in {
		// In the grid a known peer is only tried now and then: every node of a grid may
		// have the same bootstrap peer, which then trims connections, and all of them
		// dialling it again a second later kept it at a full mesh and trimming.
		wait = s.max
	}
	r.next = now.Add(wait)
	r.wait = min(2*r.wait, s.max)
	return wait
}

// reset restarts p's backoff: a connection to it stayed up.
func (s *joinSchedule) reset(p peer.ID) {
	if r := s.peers[p]; r != nil {
		r.wait = s.min
	}
}

// wait is how long from now until a peer of ps is due.
func (s *joinSchedule) wait(now time.Time, ps []peer.AddrInfo) time.Duration {
	w := s.max
	for _, ai := range ps {
		if r := s.peers[ai.ID]; r != nil {
			w = min(w, max(r.next.Sub(now), 0))
		} else {
			return 0
		}
	}
	return w
}

// joiner keeps a daemon in its grid: it tries the bootstrap and remembered peers with
// backoff while it is out of the grid, and its bootstrap peers now and then while it is in
// (a few strangers must not become its whole grid), logs when the grid is lost and found,
// and remembers the peers it dialled in the data dir.
//
// In the grid means: a stable connection to a peer this node chose (a bootstrap or
// remembered peer, or a LAN peer it dialled at the address mDNS gave), or a routing table
// of at least half a bucket from at least joinPrefixes network prefixes. A peer that
// connects and says it runs gridnode proves nothing: identify's agent version is the
// peer's word.
type joiner struct {
	n          *Node
	boot       []peer.AddrInfo // --bootstrap and the bootstrap file
	remembered []peer.AddrInfo // from the peers file
	path       string          // the peers file; "" for none
	sched      *joinSchedule
	saved      []peer.AddrInfo // the peers file's peers, as last written; nil: remembered
}

// joinPrefixes is how many network prefixes a routing table must span to count as the grid.
const joinPrefixes = 3

// candidates are the peers to try at now: bootstrap peers first, then remembered ones
// (while out of the grid only), not connected ones or this node, those that are due.
func (j *joiner) candidates(now time.Time) []peer.AddrInfo {
	h := j.n.h
	known := j.boot
	if !j.sched.in {
		known = slices.Concat(j.boot, j.remembered)
	}
	var out []peer.AddrInfo
	seen := map[peer.ID]bool{h.ID(): true}
	for _, ai := range known {
		if seen[ai.ID] || h.Network().Connectedness(ai.ID) == network.Connected || !j.sched.due(now, ai.ID) {
			continue
		}
		seen[ai.ID] = true
		out = append(out, ai)
	}
	return out
}

// gridPeers counts the connected peers that say they run gridnode.
func gridPeers(h host.Host) int {
	n := 0
	for _, p := range h.Network().Peers() {
		if isGridPeer(h, p) {
			n++
		}
	}
	return n
}

func isGridPeer(h host.Host, p peer.ID) bool {
	v, err := h.Peerstore().Get(p, "AgentVersion")
	s, _ := v.(string)
	return err == nil && (s == userAgent || strings.HasPrefix(s, userAgent+"/"))
}

// stable reports whether a connection to p has been open for joinStable at now.
func stable(nw network.Network, p peer.ID, now time.Time) bool {
	for _, c := range nw.ConnsToPeer(p) {
		if now.Sub(c.Stat().Opened) >= joinStable {
			return true
		}
	}
	return false
}

// inGrid judges at now whether this node is in the grid (see joiner), and restarts the
// backoff of every known peer it is stably connected to.
func (j *joiner) inGrid(now time.Time) bool {
	nw := j.n.h.Network()
	in := false
	for _, ai := range slices.Concat(j.boot, j.remembered) {
		if stable(nw, ai.ID, now) {
			j.sched.reset(ai.ID)
			in = true
		}
	}
	if in {
		return true
	}
	prefixes := map[string]bool{}
	routed := 0
	for _, p := range nw.Peers() {
		if j.n.lan.verified(p) && stable(nw, p, now) {
			return true
		}
		if !j.n.d.Routes(p) {
			continue
		}
		routed++
		for _, c := range nw.ConnsToPeer(p) {
			if k, ok := netPrefix(c.RemoteMultiaddr()); ok {
				prefixes[k] = true
			}
		}
	}
	k := cmp.Or(j.n.cfg.DHTBucketSize, 20)
	return routed >= max(k/2, 1) && (len(prefixes) >= joinPrefixes || j.n.cfg.Loopback)
}

// attempt tries the due candidates once and returns how many it reached.
func (j *joiner) attempt(ctx context.Context) (ok, tried int) {
	now := time.Now()
	cands := j.candidates(now)
	if len(cands) == 0 {
		return 0, 0
	}
	for _, ai := range cands {
		j.sched.tried(now, ai.ID)
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The schedule is the backoff: the swarm's own, for addresses that failed, would hold
	// back a bootstrap peer that came back for minutes.
	actx = network.WithForceDirectDial(actx, "gridnode join")
	ok, err := j.n.d.Join(actx, cands)
	if err != nil && ok == 0 {
		j.n.log.Debug("join", "err", err)
	}
	return ok, len(cands)
}

// run is the join loop; it returns when ctx ends, after saving the remembered peers.
func (j *joiner) run(ctx context.Context) {
	t := time.NewTicker(joinPoll)
	defer t.Stop()
	saveAt := time.Now().Add(rememberEvery)
	warnedAlone := false
	for {
		now := time.Now()
		switch j.sched.observe(now, j.inGrid(now)) {
		case joinFound:
			j.n.log.Info("joined the grid", "peers", gridPeers(j.n.h), "dht_peers", j.n.d.Size())
			warnedAlone = false
		case joinLost:
			j.n.log.Warn("lost the grid: no known grid peer connected; retrying known peers", "known", len(j.boot)+len(j.remembered))
		}
		in := j.sched.in
		if !in && len(j.boot)+len(j.remembered) == 0 && !warnedAlone {
			warnedAlone = true
			j.n.log.Warn("this node knows no grid peer, so no other node can find it: give --bootstrap ADDR, list peers in " +
				filepath.Join(j.n.dir, BootstrapFile) + lanHint(j.n.cfg) + "; or let others join through this node's addresses")
		}
		ok, tried := j.attempt(ctx)
		if ctx.Err() != nil {
			return
		}
		if tried > 0 && ok == 0 && !in {
			j.n.log.Warn("no known grid peer reachable", "tried", tried,
				"retry_in", j.sched.wait(time.Now(), slices.Concat(j.boot, j.remembered)).Round(time.Millisecond))
		}
		if now.After(saveAt) {
			j.save()
			saveAt = now.Add(rememberEvery)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func lanHint(cfg Config) string {
	if cfg.MDNS {
		return ", or start another node on this LAN (mDNS is on)"
	}
	return ""
}

// remember lists the peers worth remembering: the last list merged with the connected
// grid peers this node dialled itself or has in its routing table (it answered DHT
// queries), at the remote address of their connection (within its reach, not relayed),
// bootstrap peers excepted (they are configured anyway). The addresses a peer announces
// are its word, and any host may be behind them; a connection's address is where that
// peer's key answered, or where the peer itself connected from.
func (j *joiner) remember() []peer.AddrInfo {
	h := j.n.h
	skip := map[peer.ID]bool{}
	for _, ai := range j.boot {
		skip[ai.ID] = true
	}
	var fresh []peer.AddrInfo
	for _, p := range h.Network().Peers() {
		if skip[p] || !isGridPeer(h, p) {
			continue
		}
		routed := j.n.d.Routes(p)
		var addrs []multiaddr.Multiaddr
		for _, c := range h.Network().ConnsToPeer(p) {
			a := c.RemoteMultiaddr()
			if c.Stat().Direction != network.DirOutbound && !routed || isRelayed(a) || !within(j.n.cfg.Reach, a) || reachOf(a) == reachNever ||
				len(addrs) >= maxRememberedAddrs || slices.ContainsFunc(addrs, a.Equal) {
				continue
			}
			addrs = append(addrs, a)
		}
		if len(addrs) > 0 {
			fresh = append(fresh, peer.AddrInfo{ID: p, Addrs: addrs})
		}
	}
	slices.SortFunc(fresh, func(a, b peer.AddrInfo) int { return strings.Compare(string(a.ID), string(b.ID)) })
	old := j.saved
	if old == nil {
		old = j.remembered
	}
	perPrefix := maxRememberedPerPrefix
	if j.n.cfg.Loopback {
		perPrefix = 0 // a grid on one machine is one prefix
	}
	return mergeRemembered(old, fresh, maxRemembered, perPrefix)
}

// mergeRemembered is the next remembered list from the last one (old) and the peers
// connected now (fresh): old peers still connected (with their current addresses), then
// new peers, then the other old peers, at most limit in all and perPrefix from one network
// prefix (0: no bound). New peers take the free places and at most half of the old
// peers' places, so strangers who got dialled cannot replace the list in one save.
func mergeRemembered(old, fresh []peer.AddrInfo, limit, perPrefix int) []peer.AddrInfo {
	now := make(map[peer.ID]peer.AddrInfo, len(fresh))
	for _, ai := range fresh {
		now[ai.ID] = ai
	}
	wasOld := make(map[peer.ID]bool, len(old))
	var kept, others []peer.AddrInfo
	for _, ai := range old {
		if wasOld[ai.ID] || len(ai.Addrs) == 0 {
			continue
		}
		wasOld[ai.ID] = true
		if f, ok := now[ai.ID]; ok {
			kept = append(kept, f)
		} else {
			others = append(others, ai)
		}
	}
	var out []peer.AddrInfo
	count := map[string]int{}
	take := func(ai peer.AddrInfo) bool {
		if len(out) >= limit {
			return false
		}
		if perPrefix > 0 {
			k, _ := netPrefix(ai.Addrs[0])
			if count[k] >= perPrefix {
				return false
			}
			count[k]++
		}
		out = append(out, ai)
		return true
	}
	for _, ai := range kept {
		take(ai)
	}
	room := max(0, limit-len(wasOld)) + len(wasOld)/2
	for _, ai := range fresh {
		if room > 0 && !wasOld[ai.ID] && take(ai) {
			room--
		}
	}
	for _, ai := range others {
		take(ai)
	}
	return out
}

// save writes the remembered peers when they changed; a node with none keeps the file of
// its last run (it may be offline, and those peers are still its way back).
func (j *joiner) save() {
	if j.path == "" {
		return
	}
	peers := j.remember()
	last := j.saved
	if last == nil {
		last = j.remembered
	}
	if len(peers) == 0 || slices.EqualFunc(peers, last, func(a, b peer.AddrInfo) bool {
		return a.ID == b.ID && slices.EqualFunc(a.Addrs, b.Addrs, multiaddr.Multiaddr.Equal)
	}) {
		return
	}
	if err := writePeerFile(j.path, peers); err != nil {
		j.n.log.Warn("remember peers", "err", err)
		return
	}
	j.saved = peers
	j.n.log.Debug("remembered peers", "count", len(peers), "file", j.path)
}

// loadPeerFiles reads the bootstrap file and the remembered peers of data dir dir. A
// missing file is no error; bad lines are logged by the caller.
func loadPeerFiles(dir string) (boot, remembered []peer.AddrInfo, bad []string, err error) {
	boot, bad, err = readPeerFile(filepath.Join(dir, BootstrapFile), maxBootstrapLines)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("bootstrap file: %w", err)
	}
	remembered, _, err = readPeerFile(filepath.Join(dir, PeersFile), maxRemembered*maxRememberedAddrs)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("peers file: %w", err)
	}
	if len(remembered) > maxRemembered {
		remembered = remembered[:maxRemembered]
	}
	return boot, remembered, bad, nil
}

package node

import (
	"bufio"
	"bytes"
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
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// BootstrapFile, in the data dir, lists peers to join the grid through, one full
// /p2p/ multiaddr per line ('#' starts a comment), as --bootstrap does. The node never
// writes it.
const BootstrapFile = "bootstrap"

// PeersFile, in the data dir, is where a daemon remembers grid peers it was connected to,
// to rejoin through them next time when its bootstrap peers are gone. The node rewrites it
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

// Join loop timing: the grid is looked at every joinPoll; while this node is not in it, its
// known peers are tried with a backoff from joinMinBackoff doubling up to joinMaxBackoff;
// remembered peers are saved every rememberEvery. Variables, for tests.
var (
	joinPoll       = time.Second
	joinMinBackoff = time.Second
	joinMaxBackoff = 5 * time.Minute
	rememberEvery  = 5 * time.Minute
)

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
	b.WriteString("# Grid peers this node was connected to, rewritten by gridnode; list your own in " + BootstrapFile + ".\n")
	for _, ai := range peers {
		mas, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil {
			continue
		}
		for _, a := range mas {
			b.WriteString(a.String() + "\n")
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// joinSchedule decides when a node tries its known peers and when it says that it lost or
// found the grid; it is pure, for testing.
type joinSchedule struct {
	min, max time.Duration
	backoff  time.Duration
	next     time.Time // earliest next attempt
	in       bool      // in the grid at the last observation
	started  bool      // observed at least once
}

func newJoinSchedule(min, max time.Duration) *joinSchedule {
	return &joinSchedule{min: min, max: max, backoff: min}
}

// Transitions observe reports.
const (
	joinNone = iota
	joinFound
	joinLost
)

// observe records how many grid peers are connected at now and reports a transition.
// Losing the grid makes an attempt due at once.
func (s *joinSchedule) observe(now time.Time, peers int) int {
	in := peers > 0
	was, started := s.in, s.started
	s.in, s.started = in, true
	switch {
	case in && (!was || !started):
		s.backoff = s.min
		return joinFound
	case !in && was:
		s.backoff, s.next = s.min, now
		return joinLost
	}
	return joinNone
}

// due reports whether to try the known peers at now.
func (s *joinSchedule) due(now time.Time) bool { return !s.in && !now.Before(s.next) }

// tried records an attempt at now that reached ok peers and returns the wait before the
// next one if this node is still out of the grid.
func (s *joinSchedule) tried(now time.Time, ok int) time.Duration {
	if ok > 0 {
		s.backoff = s.min
		s.next = now.Add(s.min)
		return s.min
	}
	wait := s.backoff
	s.next = now.Add(wait)
	s.backoff = min(2*s.backoff, s.max)
	return wait
}

// joiner keeps a daemon in its grid: it tries the bootstrap and remembered peers with
// backoff while no grid peer is connected, logs when the grid is lost and found, and
// remembers the peers it was connected to in the data dir.
type joiner struct {
	n          *Node
	boot       []peer.AddrInfo // --bootstrap and the bootstrap file
	remembered []peer.AddrInfo // from the peers file
	path       string          // the peers file; "" for none
	sched      *joinSchedule
	saved      []peer.AddrInfo
}

// candidates are the peers to try: bootstrap peers first, then remembered ones, not
// connected ones or this node.
func (j *joiner) candidates() []peer.AddrInfo {
	h := j.n.h
	var out []peer.AddrInfo
	seen := map[peer.ID]bool{h.ID(): true}
	for _, ai := range slices.Concat(j.boot, j.remembered) {
		if seen[ai.ID] || h.Network().Connectedness(ai.ID) != 0 {
			continue
		}
		seen[ai.ID] = true
		out = append(out, ai)
	}
	return out
}

// gridPeers counts the connected peers that run gridnode.
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

// attempt tries the candidates once and returns how many it reached.
func (j *joiner) attempt(ctx context.Context) (ok, tried int) {
	cands := j.candidates()
	if len(cands) == 0 {
		return 0, 0
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
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
		switch j.sched.observe(now, gridPeers(j.n.h)) {
		case joinFound:
			j.n.log.Info("joined the grid", "peers", gridPeers(j.n.h), "dht_peers", j.n.d.Size())
			warnedAlone = false
		case joinLost:
			j.n.log.Warn("lost the grid: no grid peer connected; retrying known peers", "known", len(j.candidates()))
		}
		if j.sched.due(now) {
			ok, tried := j.attempt(ctx)
			if ctx.Err() != nil {
				return
			}
			wait := j.sched.tried(time.Now(), ok)
			switch {
			case tried == 0 && len(j.boot)+len(j.remembered) == 0 && !warnedAlone:
				warnedAlone = true
				j.n.log.Warn("this node knows no grid peer, so no other node can find it: give --bootstrap ADDR, list peers in " +
					filepath.Join(j.n.dir, BootstrapFile) + lanHint(j.n.cfg) + "; or let others join through this node's addresses")
			case tried > 0 && ok == 0:
				j.n.log.Warn("no known grid peer reachable", "tried", tried, "retry_in", wait)
			}
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

// remember lists the peers worth remembering: connected grid peers with addresses this
// node may dial again directly (within its reach, not relayed), bootstrap peers excepted
// (they are configured anyway), at most maxRemembered.
func (j *joiner) remember() []peer.AddrInfo {
	h := j.n.h
	skip := map[peer.ID]bool{}
	for _, ai := range j.boot {
		skip[ai.ID] = true
	}
	var out []peer.AddrInfo
	for _, p := range h.Network().Peers() {
		if len(out) >= maxRemembered {
			break
		}
		if skip[p] || !isGridPeer(h, p) || !hasDirect(h.Network(), p) {
			continue
		}
		var addrs []multiaddr.Multiaddr
		for _, a := range h.Peerstore().Addrs(p) {
			if len(addrs) < maxRememberedAddrs && within(j.n.cfg.Reach, a) && !isRelayed(a) && reachOf(a) != reachNever {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) > 0 {
			out = append(out, peer.AddrInfo{ID: p, Addrs: addrs})
		}
	}
	slices.SortFunc(out, func(a, b peer.AddrInfo) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// save writes the remembered peers when they changed; a node with none keeps the file of
// its last run (it may be offline, and those peers are still its way back).
func (j *joiner) save() {
	if j.path == "" {
		return
	}
	peers := j.remember()
	if len(peers) == 0 || slices.EqualFunc(peers, j.saved, func(a, b peer.AddrInfo) bool {
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

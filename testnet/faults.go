package testnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// Behaviour is how a test node misbehaves: a set of faults; the zero value is an honest node.
// Faults exist only here, for tests and demos; no production flag turns them on.
type Behaviour uint8

const (
	// Liar runs jobs but returns a wrong output (Forge of the real one, so that every liar
	// returns the same wrong output for a job and two liars agree), with a valid receipt
	// signed by its own key over that output.
	Liar Behaviour = 1 << iota
	// Staller admits jobs and never answers: it holds the job until the submitter gives up
	// (or the stream's deadline passes).
	Staller
	// Boaster signs offers claiming BoastSlots free slots of BoastSlots; otherwise its
	// offers are the real worker's.
	Boaster
)

// BoastSlots is the free capacity a Boaster claims.
const BoastSlots = 1 << 30

var faultNames = []struct {
	b    Behaviour
	name string
}{{Liar, "liar"}, {Staller, "staller"}, {Boaster, "boaster"}}

// String names the faults, joined by '+' ("liar+boaster"); "honest" for none.
func (b Behaviour) String() string {
	var names []string
	for _, f := range faultNames {
		if b&f.b != 0 {
			names = append(names, f.name)
		}
	}
	if len(names) == 0 {
		return "honest"
	}
	return strings.Join(names, "+")
}

// ParseBehaviour parses what String prints; ',' separates faults too.
func ParseBehaviour(s string) (Behaviour, error) {
	var b Behaviour
	for name := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == '+' || r == ',' }) {
		i := slices.IndexFunc(faultNames, func(f struct {
			b    Behaviour
			name string
		}) bool {
			return f.name == name
		})
		switch {
		case i >= 0:
			b |= faultNames[i].b
		case name != "honest":
			return 0, fmt.Errorf("unknown behaviour %q: want liar, staller, boaster or honest, joined by +", name)
		}
	}
	return b, nil
}

// Runner wraps inner with the job-running faults of b (Liar, Staller); without them it
// returns inner.
func (b Behaviour) Runner(inner jobs.Runner) jobs.Runner {
	switch {
	case b&Staller != 0:
		return jobs.RunnerFunc(func(ctx context.Context, _ sandbox.Job, _ sandbox.Limits) (sandbox.Result, error) {
			<-ctx.Done()
			return sandbox.Result{}, ctx.Err()
		})
	case b&Liar != 0:
		return jobs.RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
			r, err := inner.Run(ctx, job, lim)
			if err != nil || r.Status == sandbox.StatusRejected {
				return r, err
			}
			r.Output = Forge(r.Output, lim.Or(sandbox.DefaultLimits()).MaxOutput)
			r.OutputCID = cids.Sum(r.Output)
			return r, nil
		})
	}
	return inner
}

// Forge returns the wrong output a Liar returns for out: its ASCII letters with their case
// swapped ("hello" gives "HELLO"), or, with no letter, its first byte changed; "forged\n"
// (cut to maxOutput) for an empty output. It always differs from out.
func Forge(out []byte, maxOutput int64) []byte {
	if len(out) == 0 {
		return []byte("forged\n")[:min(7, max(maxOutput, 1))]
	}
	f := slices.Clone(out)
	changed := false
	for i, c := range f {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			f[i] = c ^ 0x20
			changed = true
		}
	}
	if !changed {
		f[0] ^= 1
	}
	return f
}

// Configure makes the worker node that cfg opens misbehave as b: it wraps cfg.Runner (or,
// when nil, a sandbox runner made as node makes its default) with b.Runner, and returns
// what to call once the node is open: a Boaster then replaces the node's /gridnode/info
// handler with one that signs boastful offers. An honest b changes nothing.
func (b Behaviour) Configure(cfg *node.Config) (started func(ctx context.Context, n *node.Node) error) {
	if b == 0 {
		return func(context.Context, *node.Node) error { return nil }
	}
	if cfg.Logger != nil {
		cfg.Logger.Warn("this node misbehaves, for tests", "behaviour", b.String())
	}
	var isolation string // a wrapped runner hides the sandbox's layers from the node's offer
	if cfg.Runner == nil {
		slots := cfg.Slots
		if slots <= 0 {
			slots = runtime.NumCPU()
		}
		mem := cfg.Limits.Or(sandbox.DefaultLimits()).Memory
		log := cfg.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		sr := &sandbox.Runner{Logger: log.With("component", "sandbox"), JobUIDs: cfg.JobUIDs,
			JobsMemory: int64(slots) * (mem + 16<<20)}
		cfg.Runner, isolation = sr, sr.Isolation().String()
	}
	cfg.Runner = b.Runner(cfg.Runner)
	return func(ctx context.Context, n *node.Node) error {
		if b&Boaster == 0 {
			return nil
		}
		real, err := RealOffer(ctx, n.Host())
		if err != nil {
			return fmt.Errorf("boaster: %w", err)
		}
		if isolation != "" {
			real.Isolation = isolation
		}
		Boast(n.Host(), real)
		return nil
	}
}

// Boast makes h answer /gridnode/info with offer o, signed with h's key, claiming
// BoastSlots free slots of BoastSlots, for the asker's nonce and at the time asked.
func Boast(h host.Host, o *protocol.Offer) {
	key := h.Peerstore().PrivKey(h.ID())
	h.SetStreamHandler(protocol.InfoID, func(s network.Stream) {
		protocol.SetDeadline(s, protocol.InfoTimeout)
		var req protocol.InfoRequest
		if err := protocol.ReadMsg(s, &req, protocol.MaxControlMsg); err != nil {
			s.Reset()
			return
		}
		lie := *o
		lie.Peer, lie.SlotsFree, lie.SlotsTotal, lie.Time, lie.Nonce = h.ID(), BoastSlots, BoastSlots, time.Now(), req.Nonce
		resp := &protocol.InfoResponse{}
		if len(req.Nonce) > protocol.MaxNonce {
			resp.Code, resp.Message = protocol.Code_BAD_REQUEST, "nonce too long"
		} else if sealed, err := protocol.SealOffer(&lie, key); err != nil {
			resp.Code, resp.Message = protocol.Code_INTERNAL, err.Error()
		} else {
			resp.Offer = sealed
		}
		if err := protocol.WriteMsg(s, resp); err != nil {
			s.Reset()
			return
		}
		s.Close()
	})
}

// RealOffer asks worker host w for its signed offer from a throwaway loopback peer, as a
// submitter would, and checks it.
func RealOffer(ctx context.Context, w host.Host) (*protocol.Offer, error) {
	ctx, cancel := context.WithTimeout(ctx, protocol.InfoTimeout)
	defer cancel()
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport), libp2p.DisableRelay())
	if err != nil {
		return nil, fmt.Errorf("ask offer: %w", err)
	}
	defer h.Close()
	if err := h.Connect(ctx, peer.AddrInfo{ID: w.ID(), Addrs: w.Addrs()}); err != nil {
		return nil, fmt.Errorf("ask offer: %w", err)
	}
	s, err := h.NewStream(ctx, w.ID(), protocol.InfoID)
	if err != nil {
		return nil, fmt.Errorf("ask offer: %w", err)
	}
	defer s.Reset()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	nonce := []byte("testnet-real-offer-nonce")
	var resp protocol.InfoResponse
	if err = protocol.WriteMsg(s, &protocol.InfoRequest{Nonce: nonce}); err == nil {
		s.CloseWrite()
		err = protocol.ReadMsg(s, &resp, protocol.MaxControlMsg)
	}
	if err == nil {
		err = resp.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("ask offer: %w", err)
	}
	o, signer, err := protocol.OpenOffer(resp.Offer)
	switch {
	case err != nil:
		return nil, fmt.Errorf("ask offer: %w", err)
	case signer != w.ID() || string(o.Nonce) != string(nonce):
		return nil, errors.New("ask offer: signed by another peer or for another nonce")
	}
	return o, nil
}

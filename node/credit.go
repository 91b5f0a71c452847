package node

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/gridnode/gridnode/credit"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
)

// Credit deliveries are best effort: at most creditSenders at once, and creditPending
// waiting; past that, credit is dropped (and logged) rather than holding anything up.
const (
	creditSenders = 4
	creditPending = 256
)

// creditPart gives the workers whose replicas agreed with this node's accepted submits
// their signed credit over /gridnode/credit/1.0.0, and on a worker checks and keeps the
// credit submitters give it (package credit).
type creditPart struct {
	h      host.Host
	log    *slog.Logger
	key    crypto.PrivKey
	keeper *credit.Keeper // nil without a history
	served bool           // the credit protocol is served (a worker with a history)

	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}

	mu      sync.Mutex
	closed  bool
	pending int
	wg      sync.WaitGroup
}

// openCredit makes the node's credit part and adds its events; before the worker and the
// submitter are made.
func openCredit(n *Node) (*creditPart, error) {
	cp := &creditPart{h: n.h, log: n.log.With("component", "credit"), key: n.h.Peerstore().PrivKey(n.h.ID()),
		sem: make(chan struct{}, creditSenders)}
	// Not the node's lifetime, which ends as Close begins: close gives deliveries a grace.
	cp.ctx, cp.cancel = context.WithCancel(context.Background())
	ev := jobs.Events{Submitted: cp.submitted}
	if n.hist != nil {
		k, err := credit.Open(n.hist, n.h.ID(), credit.Options{MaxRan: n.cfg.HistoryMaxJobs})
		if err != nil {
			cp.cancel()
			return nil, err
		}
		cp.keeper, ev.Job = k, k.NoteRan
		if n.cfg.Worker {
			cp.served = true
			n.h.SetStreamHandler(protocol.CreditID, cp.handle)
		}
	}
	n.events = append(n.events, ev)
	return cp, nil
}

// creditGrace is how long close lets the deliveries under way finish before it cancels
// them: a one-shot submit closes its node as soon as it has printed the output.
const creditGrace = 3 * time.Second

// close stops serving credit and waits for the deliveries under way, cancelling those
// still running after creditGrace.
func (cp *creditPart) close() {
	if cp.served {
		cp.h.RemoveStreamHandler(protocol.CreditID)
	}
	cp.mu.Lock()
	cp.closed = true
	cp.mu.Unlock()
	done := make(chan struct{})
	go func() { cp.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(creditGrace):
	}
	cp.cancel()
	<-done
}

// submitted signs the credit an accepted submit earns and delivers it in the background;
// it has jobs.Events.Submitted's signature.
func (cp *creditPart) submitted(rep *jobs.Report, err error) {
	if err != nil || cp.key == nil {
		return
	}
	for _, c := range credit.Issue(rep, cp.h.ID(), time.Now()) {
		cp.mu.Lock()
		if cp.closed || cp.pending >= creditPending {
			cp.mu.Unlock()
			cp.log.Warn("credit not delivered: too many deliveries waiting", "peer", c.Worker, "job", c.JobCID)
			continue
		}
		cp.pending++
		cp.wg.Add(1)
		cp.mu.Unlock()
		go func() {
			defer func() {
				cp.mu.Lock()
				cp.pending--
				cp.mu.Unlock()
				cp.wg.Done()
			}()
			select {
			case cp.sem <- struct{}{}:
				defer func() { <-cp.sem }()
			case <-cp.ctx.Done():
				return
			}
			if err := cp.deliver(c); err != nil {
				cp.log.Debug("credit not delivered", "peer", c.Worker, "job", c.JobCID, "err", err)
			}
		}()
	}
}

// deliver seals c and sends it to its worker, within protocol.CreditTimeout.
func (cp *creditPart) deliver(c *protocol.Credit) error {
	env, err := protocol.SealCredit(c, cp.key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cp.ctx, protocol.CreditTimeout)
	defer cancel()
	s, err := cp.h.NewStream(network.WithAllowLimitedConn(ctx, "credit"), c.Worker, protocol.CreditID)
	if err != nil {
		return err
	}
	defer s.Close()
	protocol.SetDeadline(s, protocol.CreditTimeout)
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if err := protocol.WriteMsg(s, &protocol.CreditDelivery{Credit: env}); err != nil {
		return err
	}
	s.CloseWrite()
	var ack protocol.CreditAck
	if err := protocol.ReadMsg(s, &ack, protocol.MaxControlMsg); err != nil {
		return err
	}
	return ack.Err()
}

// handle receives one credit record from a submitter and answers whether it is kept.
func (cp *creditPart) handle(s network.Stream) {
	defer s.Close()
	protocol.SetDeadline(s, protocol.CreditTimeout)
	from := s.Conn().RemotePeer()
	var m protocol.CreditDelivery
	err := protocol.ReadMsg(s, &m, protocol.MaxCreditMsg)
	if err == nil {
		err = m.Check()
	}
	ack := &protocol.CreditAck{}
	if err == nil {
		var rec credit.Record
		if rec, err = cp.keeper.Accept(from, m.Credit); err == nil {
			cp.log.Info("credit kept", "peer", from, "job", rec.JobCID, "cpu", time.Duration(rec.CPUUs)*time.Microsecond)
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, credit.ErrForged), errors.Is(err, credit.ErrNotMine), errors.Is(err, credit.ErrNotRun),
		errors.Is(err, credit.ErrReplay), errors.Is(err, credit.ErrNotAccepted):
		ack.Code, ack.Message = protocol.Code_BAD_REQUEST, protocol.Clean(err.Error(), protocol.MaxReason)
	case errors.Is(err, protocol.ErrBadRequest), errors.Is(err, protocol.ErrTooLarge):
		ack.Code, ack.Message = protocol.CodeOf(err), protocol.Clean(err.Error(), protocol.MaxReason)
	default:
		ack.Code = protocol.Code_INTERNAL // its text, with the host's paths, stays in the log
		cp.log.Warn("credit not kept", "peer", from, "err", err)
	}
	if err != nil && ack.Code != protocol.Code_INTERNAL {
		cp.log.Debug("credit refused", "peer", from, "err", err)
	}
	protocol.WriteMsg(s, ack)
}

// Credit is the worker's kept credit; nil on a node without a history.
func (n *Node) Credit() *credit.Keeper {
	if n.jobs == nil || n.jobs.credit == nil {
		return nil
	}
	return n.jobs.credit.keeper
}

// CreditRecords is the answer of GET /v1/credit/records.
type CreditRecords struct {
	Records []credit.Record `json:"records"`
}

// creditRoutes adds GET /v1/credit (the summary) and /v1/credit/records to mux.
func (n *Node) creditRoutes(mux *http.ServeMux) {
	records := func(w http.ResponseWriter) ([]credit.Record, bool) {
		k := n.Credit()
		if k == nil {
			http.Error(w, "this node keeps no credit: it has no history", http.StatusServiceUnavailable)
			return nil, false
		}
		rs, err := k.Records()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return nil, false
		}
		return rs, true
	}
	mux.HandleFunc("GET /v1/credit", func(w http.ResponseWriter, r *http.Request) {
		if rs, ok := records(w); ok {
			writeJSON(w, credit.Summarize(rs))
		}
	})
	mux.HandleFunc("GET /v1/credit/records", func(w http.ResponseWriter, r *http.Request) {
		if rs, ok := records(w); ok {
			writeJSON(w, CreditRecords{Records: rs})
		}
	})
}

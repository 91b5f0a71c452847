package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/credit"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
)

// Credit deliveries are best effort: one stream at a time per worker, carrying what is
// waiting for it (at most creditPerStream records), to at most creditSenders workers at
// once, with creditPending records waiting over all; past that, credit is dropped (and
// logged) rather than holding anything up. A batch of a thousand jobs earns two thousand
// records: a stream each cost as much as a job.
const (
	creditSenders   = 4
	creditPending   = 4096
	creditPerStream = 256
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
	queues  map[peer.ID][]*protocol.Credit // waiting, per worker; a key while its sender runs
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

// submitted queues the credit an accepted submit earns for delivery in the background;
// it has jobs.Events.Submitted's signature.
func (cp *creditPart) submitted(rep *jobs.Report, err error) {
	if err != nil || cp.key == nil {
		return
	}
	for _, c := range credit.Issue(rep, cp.h.ID(), time.Now()) {
		// A worker that keeps no credit (no history) does not serve the protocol; identify
		// told us before the job's stream opened, and a delivery would cost a signature and
		// a stream for nothing.
		if ps, err := cp.h.Peerstore().SupportsProtocols(c.Worker, protocol.CreditID); err == nil && len(ps) == 0 {
			continue
		}
		cp.mu.Lock()
		if cp.closed || cp.pending >= creditPending {
			cp.mu.Unlock()
			cp.log.Warn("credit not delivered: too many deliveries waiting", "peer", c.Worker, "job", c.JobCID)
			continue
		}
		cp.pending++
		if cp.queues == nil {
			cp.queues = make(map[peer.ID][]*protocol.Credit)
		}
		q, running := cp.queues[c.Worker]
		cp.queues[c.Worker] = append(q, c)
		if !running {
			cp.wg.Add(1)
			go cp.send(c.Worker)
		}
		cp.mu.Unlock()
	}
}

// send delivers what waits for p, a stream at a time, until nothing does.
func (cp *creditPart) send(p peer.ID) {
	defer cp.wg.Done()
	acquired := false
	select {
	case cp.sem <- struct{}{}:
		acquired = true
		defer func() { <-cp.sem }()
	case <-cp.ctx.Done():
	}
	for {
		cp.mu.Lock()
		q := cp.queues[p]
		if len(q) == 0 {
			delete(cp.queues, p)
			cp.mu.Unlock()
			return
		}
		n := min(len(q), creditPerStream)
		cs := q[:n:n]
		cp.queues[p] = q[n:]
		cp.mu.Unlock()
		if acquired && cp.ctx.Err() == nil {
			if err := cp.deliver(p, cs); err != nil {
				cp.log.Debug("credit not delivered", "peer", p, "records", len(cs), "err", err)
			}
		}
		cp.mu.Lock()
		cp.pending -= n
		cp.mu.Unlock()
	}
}

// deliver seals cs and sends them to p on one stream, each answered by an ack, within
// protocol.CreditTimeout each. A worker that ends the stream after one record (one that
// takes a record a stream) is sent the rest on new streams.
// It returns the first refusal, or why the rest could not be sent.
func (cp *creditPart) deliver(p peer.ID, cs []*protocol.Credit) error {
	var refused error
	for len(cs) > 0 {
		n, err := cp.deliverOn(p, cs, &refused)
		if err != nil && n == 0 {
			return err
		}
		cs = cs[n:]
	}
	return refused
}

// deliverOn sends cs on one new stream and returns how many were answered; the first
// refusal goes to *refused.
func (cp *creditPart) deliverOn(p peer.ID, cs []*protocol.Credit, refused *error) (int, error) {
	ctx, cancel := context.WithCancel(cp.ctx)
	defer cancel()
	s, err := cp.h.NewStream(network.WithAllowLimitedConn(ctx, "credit"), p, protocol.CreditID)
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	for i, c := range cs {
		env, err := protocol.SealCredit(c, cp.key)
		if err != nil {
			s.Reset()
			return i + 1, err // this one never can be: skip it
		}
		protocol.SetDeadline(s, protocol.CreditTimeout)
		var ack protocol.CreditAck
		err = protocol.WriteMsg(s, &protocol.CreditDelivery{Credit: env})
		if err == nil {
			err = protocol.ReadMsg(s, &ack, protocol.MaxControlMsg)
		}
		if err != nil {
			s.Reset()
			return i, err
		}
		if err := ack.Err(); err != nil && *refused == nil {
			*refused = err
		}
	}
	s.CloseWrite()
	s.Close()
	return len(cs), nil
}

// handle receives credit records from a submitter, one after another (at most
// creditPerStream on a stream), and answers each with whether it is kept.
func (cp *creditPart) handle(s network.Stream) {
	defer s.Close()
	from := s.Conn().RemotePeer()
	for range creditPerStream {
		protocol.SetDeadline(s, protocol.CreditTimeout)
		var m protocol.CreditDelivery
		err := protocol.ReadMsg(s, &m, protocol.MaxCreditMsg)
		if errors.Is(err, io.EOF) {
			return // the submitter has sent all it had
		}
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
		if protocol.WriteMsg(s, ack) != nil {
			s.Reset()
			return
		}
		if err != nil {
			// A malformed message leaves the framing untrustworthy, and a record refused
			// after its signature was checked (a replay, a forgery) is one an honest
			// submitter does not send: another costs the sender a new stream.
			return
		}
	}
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

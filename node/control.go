package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/store"
)

// The local control API (docs/API.md): status, peers, jobs, one job, its result, pause and
// resume, beside POST /v1/submit, behind the same socket, token and checks (api.go). Its
// JSON is a schema of its own, versioned by APIVersion, with the shapes `gridnode status
// --json` and the others print.

// APIVersion is the control API's schema version: it is in every status, and a change
// that breaks readers bumps it (and the /v1/ of the paths).
const APIVersion = 1

// Status is GET /v1/status.
type Status struct {
	APIVersion     int      `json:"api_version"`
	PeerID         string   `json:"peer_id"`
	Addrs          []string `json:"addrs"`
	Reachability   string   `json:"reachability"`
	ConnectedPeers int      `json:"connected_peers"`
	RoutingTable   int      `json:"routing_table"` // peers in the DHT's routing table
	Worker         bool     `json:"worker"`
	Announced      bool     `json:"announced"` // the worker's capacity reached the DHT
	// Worker only (zero otherwise):
	Arch      string  `json:"arch,omitempty"`
	SlotsBusy int     `json:"slots_busy"`
	SlotsFree int     `json:"slots_free"`
	Policy    *Policy `json:"policy,omitempty"`
	Paused    bool    `json:"paused"` // by the donor (gridnode pause)
	Load      float64 `json:"load"`   // the machine's non-grid load, with a max load
	// LoadPaused: refusing jobs because Load is above Policy.MaxLoad.
	LoadPaused bool `json:"load_paused"`
	// OffHours: refusing jobs outside the donor's Policy.Hours until NextWindow.
	OffHours       bool            `json:"off_hours"`
	NextWindow     *time.Time      `json:"next_window,omitempty"`
	StoreUsed      int64           `json:"store_used_bytes"`
	StoreQuota     int64           `json:"store_quota_bytes"`
	CPUSeconds     float64         `json:"cpu_seconds_donated"` // all time, from the history
	JobsRun        int64           `json:"jobs_run"`
	History        *history.Totals `json:"history,omitempty"` // nil without a history
	HistoryDropped uint64          `json:"history_dropped"`   // records lost to a full queue
	Started        time.Time       `json:"started"`
	UptimeSeconds  float64         `json:"uptime_seconds"`
	// Why no job may be arriving, most likely first (condor_q -better-analyze); empty
	// when nothing seems to stand in the way.
	Reasons []string `json:"reasons"`
}

// Policy is a worker's donor policy in Status.
type Policy struct {
	Slots        int              `json:"slots"`
	SlotsPerPeer int              `json:"slots_per_peer"`
	Limits       *protocol.Limits `json:"limits"` // the most a job may ask for, in wire units (ms, bytes)
	MaxInput     int64            `json:"max_input"`
	MaxLoad      float64          `json:"max_load"`  // 0: none
	Hours        string           `json:"hours"`     // the donor's --hours; "": always
	CPUShare     int              `json:"cpu_share"` // the donor's --cpu-share in percent; 0: none
}

// PeerStatus is one connected peer in GET /v1/peers.
type PeerStatus struct {
	PeerID    string   `json:"peer_id"`
	Addrs     []string `json:"addrs"`     // of its connections to this node
	Direction string   `json:"direction"` // of the first connection: inbound or outbound
	Relayed   bool     `json:"relayed"`   // every connection goes through a relay
	LatencyMs float64  `json:"latency_ms"`
	Agent     string   `json:"agent"`
	Routing   bool     `json:"routing"` // in the DHT's routing table
}

// Peers is GET /v1/peers.
type Peers struct {
	Peers []PeerStatus `json:"peers"`
}

// JobList is GET /v1/jobs.
type JobList struct {
	Jobs []history.Job `json:"jobs"`
}

// PauseState is the answer to POST /v1/pause and /v1/resume.
type PauseState struct {
	Paused    bool `json:"paused"`
	Running   int  `json:"running"`   // jobs still running (they finish unless cancelled)
	Cancelled bool `json:"cancelled"` // running jobs were cancelled
}

// Default and largest ?limit of GET /v1/jobs.
const (
	defaultJobList = 20
	maxJobList     = history.DefaultMaxJobs
)

// Status returns the node's status.
func (n *Node) Status() Status {
	st := Status{APIVersion: APIVersion, PeerID: n.ID().String(), Addrs: n.AddrStrings(),
		Reachability: string(n.Reachability()), ConnectedPeers: len(n.h.Network().Peers()),
		RoutingTable: n.d.Size(), Worker: n.jobs.worker != nil, Started: n.started,
		UptimeSeconds: time.Since(n.started).Round(time.Second).Seconds(), Reasons: []string{}}
	if st.Addrs == nil {
		st.Addrs = []string{}
	}
	st.StoreUsed, st.StoreQuota = n.jobs.store.Used(), n.jobs.store.Quota
	if st.StoreQuota <= 0 {
		st.StoreQuota = store.DefaultQuota
	}
	if n.hist != nil {
		if t, err := n.hist.Totals(); err == nil {
			st.History = &t
			st.CPUSeconds, st.JobsRun = float64(t.CPUMs)/1000, t.Ran
		}
		st.HistoryDropped = n.hist.Dropped()
	}
	if w := n.jobs.worker; w != nil {
		ws := w.Status()
		select {
		case <-n.announced:
			st.Announced = true
		default:
		}
		st.Arch, st.SlotsBusy, st.SlotsFree = ws.Arch, ws.Busy, max(0, ws.Slots-ws.Busy)
		st.Policy = &Policy{Slots: ws.Slots, SlotsPerPeer: ws.SlotsPerPeer, Limits: protocol.WireLimits(ws.Max),
			MaxInput: ws.MaxInput, MaxLoad: ws.MaxLoad, Hours: ws.Hours, CPUShare: ws.CPUShare}
		st.Paused, st.Load, st.LoadPaused, st.OffHours = ws.Paused, ws.Load, ws.LoadPaused, ws.OffHours
		if ws.OffHours && !ws.NextWindow.IsZero() {
			st.NextWindow = &ws.NextWindow
		}
	}
	st.Reasons = reasons(st, n.relayed())
	return st
}

// relayed reports whether the node has a relay address (a reservation).
func (n *Node) relayed() bool {
	return slices.ContainsFunc(n.h.Addrs(), isRelayed)
}

// reasons says why a worker may be getting no jobs, most likely first: a pure function
// of its status, for tests.
func reasons(st Status, relayAddr bool) []string {
	out := []string{}
	if !st.Worker {
		return append(out, "not a worker: this node only submits")
	}
	if st.Paused {
		out = append(out, "paused by the donor: run 'gridnode resume'")
	}
	if st.OffHours && st.Policy != nil {
		why := fmt.Sprintf("outside the donor's hours (--hours %q)", st.Policy.Hours)
		if st.NextWindow != nil {
			why += ": the next window opens " + st.NextWindow.Local().Format("Mon Jan 2 15:04 MST")
		}
		out = append(out, why)
	}
	if st.LoadPaused && st.Policy != nil {
		out = append(out, fmt.Sprintf("the machine is busy: load %.2f above --max-load %.2f", st.Load, st.Policy.MaxLoad))
	}
	if st.ConnectedPeers == 0 {
		out = append(out, "no peers connected: check --bootstrap (or DATA/bootstrap) and the network")
	} else if st.RoutingTable == 0 {
		out = append(out, "the DHT's routing table is empty: peers are connected but none routes yet")
	}
	if !st.Announced {
		out = append(out, "capacity not announced on the DHT yet: submitters cannot find this worker")
	}
	switch Reachability(st.Reachability) {
	case ReachabilityNAT, ReachabilityRelayed:
		if !relayAddr {
			out = append(out, "behind NAT without a relay: peers outside the LAN cannot reach this node (forward the port, or give --relay)")
		}
	}
	if st.Worker && st.SlotsFree == 0 && st.Policy != nil && !st.Paused {
		out = append(out, fmt.Sprintf("all %d slots busy", st.Policy.Slots))
	}
	return out
}

// Peers returns the connected peers.
func (n *Node) Peers() Peers {
	out := Peers{Peers: []PeerStatus{}}
	for _, p := range n.h.Network().Peers() {
		conns := n.h.Network().ConnsToPeer(p)
		if len(conns) == 0 {
			continue
		}
		ps := PeerStatus{PeerID: p.String(), Addrs: []string{}, Direction: strings.ToLower(conns[0].Stat().Direction.String()),
			Relayed: true, LatencyMs: float64(n.h.Peerstore().LatencyEWMA(p).Microseconds()) / 1000, Routing: n.d.Routes(p)}
		for _, c := range conns {
			ps.Addrs = append(ps.Addrs, c.RemoteMultiaddr().String())
			ps.Relayed = ps.Relayed && isRelayed(c.RemoteMultiaddr())
		}
		if v, err := n.h.Peerstore().Get(p, "AgentVersion"); err == nil {
			if s, ok := v.(string); ok {
				ps.Agent = protocol.Clean(s, protocol.MaxText)
			}
		}
		out.Peers = append(out.Peers, ps)
	}
	slices.SortFunc(out.Peers, func(a, b PeerStatus) int { return strings.Compare(a.PeerID, b.PeerID) })
	return out
}

// Pause pauses the worker (see jobs.Worker.Pause); ErrNotWorker on a node that is none.
func (n *Node) Pause(cancelRunning bool) (PauseState, error) {
	w := n.jobs.worker
	if w == nil {
		return PauseState{}, ErrNotWorker
	}
	w.Pause(cancelRunning)
	n.log.Info("paused by the donor", "cancel_running", cancelRunning)
	return PauseState{Paused: true, Running: w.Running(), Cancelled: cancelRunning}, nil
}

// Resume resumes a paused worker.
func (n *Node) Resume() (PauseState, error) {
	w := n.jobs.worker
	if w == nil {
		return PauseState{}, ErrNotWorker
	}
	w.Resume()
	n.log.Info("resumed by the donor")
	return PauseState{Running: w.Running()}, nil
}

// controlRoutes adds the control API to mux.
func (n *Node) controlRoutes(mux *http.ServeMux) {
	n.configRoutes(mux)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, n.Status()) })
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, n.Peers()) })
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		limit := defaultJobList
		if s := r.URL.Query().Get("limit"); s != "" {
			var err error
			if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxJobList {
				http.Error(w, fmt.Sprintf("bad request: limit %q: want a number from 1 to %d", s, maxJobList), http.StatusBadRequest)
				return
			}
		}
		if !n.needHistory(w) {
			return
		}
		js, err := n.hist.Jobs(limit)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, JobList{Jobs: js})
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if j, ok := n.lookupJob(w, r); ok {
			writeJSON(w, j)
		}
	})
	mux.HandleFunc("GET /v1/jobs/{id}/result", func(w http.ResponseWriter, r *http.Request) {
		j, ok := n.lookupJob(w, r)
		if !ok {
			return
		}
		switch {
		case j.Kind != history.KindSubmitted:
			http.Error(w, fmt.Sprintf("job %d was run for %s, not submitted here: a worker keeps no output", j.ID, j.Submitter), http.StatusNotFound)
			return
		case !j.Accepted:
			http.Error(w, fmt.Sprintf("job %d has no accepted output: %s", j.ID, j.Error), http.StatusConflict)
			return
		case !j.OutputKept:
			http.Error(w, fmt.Sprintf("job %d's output (%d bytes) was too large to keep", j.ID, j.OutputSize), http.StatusGone)
			return
		}
		out, err := n.hist.Output(j.ID)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		w.Write(out)
	})
	pause := func(w http.ResponseWriter, r *http.Request, on bool) {
		var cancel bool
		switch c := r.URL.Query().Get("cancel"); c {
		case "", "0", "false":
		case "1", "true":
			cancel = true
		default:
			http.Error(w, fmt.Sprintf("bad request: cancel %q: want 1 or 0", c), http.StatusBadRequest)
			return
		}
		if !on && cancel {
			http.Error(w, "bad request: cancel is for pause", http.StatusBadRequest)
			return
		}
		ps, err := n.Resume()
		if on {
			ps, err = n.Pause(cancel)
		}
		if err != nil {
			http.Error(w, "conflict: "+err.Error(), http.StatusConflict)
			return
		}
		writeJSON(w, ps)
	}
	mux.HandleFunc("POST /v1/pause", func(w http.ResponseWriter, r *http.Request) { pause(w, r, true) })
	mux.HandleFunc("POST /v1/resume", func(w http.ResponseWriter, r *http.Request) { pause(w, r, false) })
}

// needHistory answers 503 without a history; with one, it waits for the writes queued
// so far, so that a job just ended is listed.
func (n *Node) needHistory(w http.ResponseWriter) bool {
	if n.hist == nil {
		http.Error(w, "this node keeps no history", http.StatusServiceUnavailable)
		return false
	}
	n.hist.Flush()
	return true
}

// lookupJob answers 404 (or 400 for a malformed ID) when the job named in the path is not
// in the history.
func (n *Node) lookupJob(w http.ResponseWriter, r *http.Request) (history.Job, bool) {
	id := r.PathValue("id")
	if !validJobRef(id) {
		http.Error(w, fmt.Sprintf("bad request: job %q: want a job number from 'gridnode jobs' or a job CID", id), http.StatusBadRequest)
		return history.Job{}, false
	}
	if !n.needHistory(w) {
		return history.Job{}, false
	}
	j, err := n.hist.Job(id)
	switch {
	case errors.Is(err, history.ErrNotFound):
		http.Error(w, "not found: "+err.Error(), http.StatusNotFound)
		return j, false
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return j, false
	}
	return j, true
}

// validJobRef: a decimal ID or something shaped like a CID (base32 or base58 letters).
func validJobRef(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ErrNoDaemon: nothing listens on the API socket or address.
var ErrNoDaemon = errors.New("no gridnode daemon running")

// Get fetches path (such as "/v1/status") from the API into out (JSON), or, when out is
// a *[]byte, its raw body. A non-2xx answer is an error with the daemon's message.
func (c *APIClient) Get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// Post posts body (JSON; nil sends {}) to path and decodes the answer into out.
func (c *APIClient) Post(ctx context.Context, path string, body, out any) error {
	if body == nil {
		body = struct{}{}
	}
	return c.do(ctx, http.MethodPost, path, body, out)
}

func (c *APIClient) do(ctx context.Context, method, path string, body, out any) error {
	return c.exchange(ctx, method, path, body, func(r io.Reader) error {
		if raw, ok := out.(*[]byte); ok {
			var err error
			*raw, err = io.ReadAll(r)
			return err
		}
		if err := json.NewDecoder(r).Decode(out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
		return nil
	})
}

// exchange sends body (JSON, if not nil) to path and gives read the body of a 2xx answer.
func (c *APIClient) exchange(ctx context.Context, method, path string, body any, read func(io.Reader) error) error {
	client, base, tok, err := c.dial()
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		hr.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(hr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w at %s: start one with 'gridnode run' (with the same --data), or give --api", ErrNoDaemon, c.Addr)
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &APIError{Status: resp.StatusCode, Msg: strings.TrimSpace(string(msg))}
	}
	return read(resp.Body)
}

// APIError is a non-2xx answer of the API.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return fmt.Sprintf("daemon: %s (HTTP %d)", e.Msg, e.Status) }

// dial returns the HTTP client, base URL and token for c.Addr.
func (c *APIClient) dial() (*http.Client, string, string, error) {
	tok := c.Token
	if !strings.Contains(c.Addr, "/") {
		return &http.Client{Transport: &http.Transport{}}, "http://" + c.Addr, tok, nil
	}
	if _, err := os.Stat(c.Addr); errors.Is(err, os.ErrNotExist) {
		return nil, "", "", fmt.Errorf("%w: no API socket at %s: start one with 'gridnode run' (with the same --data), or give --api", ErrNoDaemon, c.Addr)
	}
	if tok == "" {
		var err error
		if tok, err = ReadAPIToken(filepath.Join(filepath.Dir(c.Addr), APITokenFile)); err != nil {
			return nil, "", "", fmt.Errorf("api token beside the socket: %w", err)
		}
	}
	var d net.Dialer
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "unix", c.Addr)
	}}}
	return client, "http://localhost", tok, nil
}

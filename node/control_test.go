package node

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
)

// apiCall sends a raw request to the API at c (with its token unless noAuth) and returns
// the status and body.
func apiCall(t *testing.T, c *APIClient, method, path, ctype string) (int, string) {
	t.Helper()
	client, base, tok, err := c.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// openDaemon opens a persistent loopback worker in dir with its API on the unix socket.
func openDaemon(t *testing.T, ctx context.Context, dir string, boot []string) (*Node, *APIClient) {
	t.Helper()
	n, err := Open(ctx, Config{DataDir: dir, Loopback: true, Worker: true, Runner: echoRunner, Slots: 2, Bootstrap: boot})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if _, err := n.ServeAPI(""); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitAnnounced(ctx); err != nil {
		t.Fatal(err)
	}
	return n, &APIClient{Addr: filepath.Join(dir, APISocket)}
}

// TestControlAPI checks every endpoint of the control API on a daemon of a loopback grid,
// that malformed requests get a 4xx with a message, that pause shows in the status and
// the offer, and that a restart keeps the history and the record of workers.
func TestControlAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, client := openGrid(t, ctx, 2, echoRunner)
	dir := t.TempDir()
	d, api := openDaemon(t, ctx, dir, ws[0].AddrStrings())
	trustWorkers([]*Node{d, client}, ws)
	client.Trust(d.ID())

	// The daemon runs a replica for the client (3 replicas on 3 workers) and submits a job.
	waitUntil(t, 30*time.Second, "the client to see 3 workers", func() bool {
		w, _ := client.FindWorkers(ctx, "linux/amd64")
		return len(w) >= 3
	})
	if rep, err := client.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("for the daemon"), Replicas: 3}); err != nil {
		t.Fatal(err)
	} else if !slices.ContainsFunc(rep.Replicas, func(r jobs.Replica) bool { return r.Worker == d.ID() && r.Err == nil }) {
		t.Fatalf("the daemon ran no counted replica: %+v", rep.Replicas)
	}
	rep, err := api.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("from the daemon"), Replicas: 2})
	if err != nil || rep.Err() != nil {
		t.Fatalf("submit through the API: %v, %v", err, rep.Err())
	}

	var st Status
	waitUntil(t, 30*time.Second, "the status to count the job run", func() bool {
		if err := api.Get(ctx, "/v1/status", &st); err != nil {
			t.Fatal(err)
		}
		return st.JobsRun == 1 && st.History != nil && st.History.Submitted == 1
	})
	if st.APIVersion != APIVersion || st.PeerID != d.ID().String() || !st.Worker || !st.Announced || st.Policy == nil ||
		st.Policy.Slots != 2 || st.SlotsFree != 2 || st.ConnectedPeers < 2 || st.RoutingTable < 1 || len(st.Addrs) == 0 ||
		st.Reachability != string(ReachabilityLoopback) || st.StoreQuota == 0 || st.Paused || st.UptimeSeconds < 0 {
		t.Errorf("status: got %+v", st)
	}
	if len(st.Reasons) != 0 {
		t.Errorf("status reasons: got %q, want none on a healthy worker", st.Reasons)
	}

	var peers Peers
	if err := api.Get(ctx, "/v1/peers", &peers); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(peers.Peers, func(p PeerStatus) bool { return p.PeerID == ws[0].ID().String() && len(p.Addrs) > 0 }) {
		t.Errorf("peers: got %+v, want %s among them", peers, ws[0].ID())
	}

	var list JobList
	if err := api.Get(ctx, "/v1/jobs?limit=10", &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Jobs) != 2 || list.Jobs[0].Kind != history.KindSubmitted || list.Jobs[1].Kind != history.KindRan {
		t.Fatalf("jobs: got %+v, want the submit, then the run", list.Jobs)
	}
	sub, ran := list.Jobs[0], list.Jobs[1]
	if ran.Submitter != client.ID().String() || ran.Status != "exited" || len(ran.Receipt) == 0 || ran.Error != "" {
		t.Errorf("the job run: got %+v", ran)
	}
	var one history.Job
	if err := api.Get(ctx, "/v1/jobs/"+strconv.FormatUint(sub.ID, 10), &one); err != nil {
		t.Fatal(err)
	}
	if !one.Accepted || len(one.Replicas) < 2 || one.OutputCID != rep.OutputCID || !one.Replicas[0].ReceiptValid {
		t.Errorf("the job submitted: got %+v", one)
	}
	for _, ref := range []string{strconv.FormatUint(sub.ID, 10), sub.JobCID} {
		var out []byte
		if err := api.Get(ctx, "/v1/jobs/"+ref+"/result", &out); err != nil || string(out) != "from the daemon" {
			t.Errorf("result of %s: got %q, %v, want the output", ref, out, err)
		}
	}

	// Malformed requests: 4xx with a message.
	for _, tt := range []struct {
		method, path, ctype string
		want                int
	}{
		{"GET", "/v1/jobs?limit=abc", "", 400},
		{"GET", "/v1/jobs?limit=0", "", 400},
		{"GET", "/v1/jobs?limit=99999999", "", 400},
		{"GET", "/v1/jobs/no-such-job", "", 400},
		{"GET", "/v1/jobs/" + strings.Repeat("a", 200), "", 400},
		{"GET", "/v1/jobs/999", "", 404},
		{"GET", "/v1/jobs/999/result", "", 404},
		{"GET", "/v1/jobs/" + strconv.FormatUint(ran.ID, 10) + "/result", "", 404},
		{"GET", "/v1/nonsense", "", 404},
		{"POST", "/v1/status", "application/json", 405},
		{"GET", "/v1/pause", "", 405},
		{"POST", "/v1/pause", "text/plain", 415},
		{"POST", "/v1/pause?cancel=maybe", "application/json", 400},
		{"POST", "/v1/resume?cancel=1", "application/json", 400},
		{"POST", "/v1/submit", "application/json", 200}, // {} is a submit that fails, with a report
	} {
		code, body := apiCall(t, api, tt.method, tt.path, tt.ctype)
		if code != tt.want || strings.TrimSpace(body) == "" {
			t.Errorf("%s %s: got %d %q, want %d with a message", tt.method, tt.path, code, body, tt.want)
		}
	}

	// Pause: shown in the status and the signed offer, and jobs are refused.
	var ps PauseState
	if err := api.Post(ctx, "/v1/pause", nil, &ps); err != nil || !ps.Paused {
		t.Fatalf("pause: got %+v, %v", ps, err)
	}
	if err := api.Get(ctx, "/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	if !st.Paused || !slices.ContainsFunc(st.Reasons, func(r string) bool { return strings.Contains(r, "paused by the donor") }) {
		t.Errorf("paused status: got paused %v, reasons %q", st.Paused, st.Reasons)
	}
	o := askOffer(t, ctx, client.Host(), d.ID())
	if !o.DonorPaused || o.SlotsFree != 0 {
		t.Errorf("paused offer: got donor_paused %v, slots free %d; want true, 0", o.DonorPaused, o.SlotsFree)
	}
	rep2, err := client.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("while paused"), Replicas: 2, Quorum: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep2.Replicas {
		if r.Worker == d.ID() && r.Err == nil {
			t.Errorf("a paused worker ran a counted replica")
		}
	}
	if err := api.Post(ctx, "/v1/resume", nil, &ps); err != nil || ps.Paused {
		t.Fatalf("resume: got %+v, %v", ps, err)
	}

	// A restart keeps the history, its totals and the record of workers.
	d.History().Flush()
	before, _ := d.History().Jobs(0)
	d.Close()
	recs, err := jobs.OpenRecords(filepath.Join(dir, RecordsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if r := recs.Get(w.ID()); r.Agreed < 1 {
			t.Errorf("record of %s after close: got %+v, want an agreement", w.ID(), r)
		}
	}
	d2, api2 := openDaemon(t, ctx, dir, ws[0].AddrStrings())
	if err := api2.Get(ctx, "/v1/jobs?limit=100", &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Jobs) != len(before) || len(before) < 3 {
		t.Errorf("after a restart: got %d jobs, want the %d before", len(list.Jobs), len(before))
	}
	if err := api2.Get(ctx, "/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.JobsRun != 1 || st.CPUSeconds != 0 || st.PeerID != d2.ID().String() || st.History == nil || st.History.Submitted != 2 {
		t.Errorf("status after a restart: got jobs run %d, history %+v", st.JobsRun, st.History)
	}
}

// TestControlAPINoDaemon checks the client's message when no daemon runs.
func TestControlAPINoDaemon(t *testing.T) {
	dir := t.TempDir()
	var st Status
	err := (&APIClient{Addr: filepath.Join(dir, APISocket)}).Get(context.Background(), "/v1/status", &st)
	if !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), "gridnode run") {
		t.Errorf("got %v, want ErrNoDaemon saying how to start one", err)
	}
}

// TestOneShotHistory checks that an ephemeral node given the data dir's history records
// its submits, and goes without when a daemon holds it.
func TestOneShotHistory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _ := openGrid(t, ctx, 2, echoRunner)
	path := filepath.Join(t.TempDir(), HistoryFile)
	submit := func() *Node {
		n, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Bootstrap: ws[0].AddrStrings(), History: path})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		trustWorkers([]*Node{n}, ws)
		if _, err := n.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte("one shot"), Replicas: 2}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := submit(); n.History() == nil {
		t.Fatal("no history")
	}
	held, err := history.Open(path, history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if js, _ := held.Jobs(0); len(js) != 1 || js[0].Kind != history.KindSubmitted || !js[0].Accepted {
		t.Fatalf("the one-shot's history: got %+v", js)
	}
	start := time.Now()
	if n := submit(); n.History() != nil { // held: the submit runs without
		t.Error("got a history that another process holds")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a held history cost the submit %v", d)
	}
}

// askOffer asks p for its signed offer, as a submitter does, and opens it.
func askOffer(t *testing.T, ctx context.Context, h host.Host, p peer.ID) *protocol.Offer {
	t.Helper()
	s, err := h.NewStream(ctx, p, protocol.InfoID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	if err := protocol.WriteMsg(s, &protocol.InfoRequest{Nonce: []byte("0123456789abcdef")}); err != nil {
		t.Fatal(err)
	}
	var resp protocol.InfoResponse
	if err := protocol.ReadMsg(s, &resp, protocol.MaxControlMsg); err != nil {
		t.Fatal(err)
	}
	o, signer, err := protocol.OpenOffer(resp.Offer)
	if err != nil || signer != p {
		t.Fatalf("offer: %v, signed by %s", err, signer)
	}
	return o
}

func TestReasons(t *testing.T) {
	healthy := Status{Worker: true, Announced: true, ConnectedPeers: 3, RoutingTable: 3, SlotsFree: 2,
		Reachability: string(ReachabilityPublic), Policy: &Policy{Slots: 2, MaxLoad: 1}}
	tests := []struct {
		name    string
		edit    func(*Status)
		relayed bool
		want    []string // each in one reason, in this order
	}{
		{"healthy", func(*Status) {}, false, nil},
		{"not a worker", func(s *Status) { s.Worker = false }, false, []string{"not a worker"}},
		{"paused", func(s *Status) { s.Paused, s.SlotsFree = true, 0 }, false, []string{"paused by the donor"}},
		{"busy machine", func(s *Status) { s.LoadPaused, s.Load = true, 2.5 }, false, []string{"load 2.50 above --max-load 1.00"}},
		{"alone", func(s *Status) { s.ConnectedPeers, s.RoutingTable, s.Announced = 0, 0, false }, false,
			[]string{"no peers connected", "not announced"}},
		{"empty routing table", func(s *Status) { s.RoutingTable = 0 }, false, []string{"routing table is empty"}},
		{"behind NAT", func(s *Status) { s.Reachability = string(ReachabilityNAT) }, false, []string{"behind NAT without a relay"}},
		{"behind NAT, relayed", func(s *Status) { s.Reachability = string(ReachabilityRelayed) }, true, nil},
		{"full", func(s *Status) { s.SlotsFree = 0 }, false, []string{"all 2 slots busy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := healthy
			tt.edit(&st)
			got := reasons(st, tt.relayed)
			if len(got) != len(tt.want) {
				t.Fatalf("got %q, want %d reasons like %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("reason %d: got %q, want it to say %q", i, got[i], w)
				}
			}
		})
	}
}

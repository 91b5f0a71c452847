package natlab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	examplejobs "github.com/gridnode/gridnode/examples/jobs"
)

// submitReport is the part of `gridnode submit --json` the lab reads.
type submitReport struct {
	Status   string `json:"status"`
	Output   []byte `json:"output"`
	Error    string `json:"error"`
	Replicas []struct {
		Worker       string `json:"worker"`
		Status       string `json:"status"`
		ReceiptValid bool   `json:"receipt_valid"`
		Error        string `json:"error"`
	} `json:"replicas"`
}

// TestNATLab runs real gridnode processes in network namespaces:
//
//	internet (192.0.0.64/26): boot (bootstrap + relay service), pub2 (a second public node)
//	home A, cone NAT:      worker wa        home B, cone NAT: worker wb
//	home C, cone NAT:      the submitter    home S, symmetric NAT: worker ws
//	home M, cone NAT:      m1, m2 (mDNS, no bootstrap), m3 (--no-mdns)
//
// A job with two replicas from home C runs on wa and wb over hole-punched connections; with
// those two gone, a job runs on ws, where hole punching cannot work, through boot's relay;
// m1 and m2 find each other on their LAN with nothing configured.
func TestNATLab(t *testing.T) {
	if testing.Short() {
		t.Skip("the NAT lab takes about a minute; it runs without -short")
	}
	needTools(t) // before the build: a machine without namespaces fails with what it lacks
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	work := t.TempDir()
	bin := filepath.Join(work, "gridnode")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	if out, err := exec.CommandContext(ctx, gobin, "build", "-o", bin, "github.com/gridnode/gridnode/cmd/gridnode").CombinedOutput(); err != nil {
		t.Fatalf("build gridnode: %v\n%s", err, out)
	}
	job, err := examplejobs.Build(ctx, "sha256", work)
	if err != nil {
		t.Fatal(err)
	}

	l := newLab(t, bin)
	l.publicHost("boot", "192.0.0.65")
	l.publicHost("pub2", "192.0.0.66")
	homes := []struct {
		router, wan, lan string
		kind             natKind
		hosts            []string
	}{
		{"ra", "192.0.0.71", "10.1.0", coneNAT, []string{"wa"}},
		{"rb", "192.0.0.72", "10.2.0", coneNAT, []string{"wb"}},
		{"rc", "192.0.0.73", "10.3.0", coneNAT, []string{"sub"}},
		{"rs", "192.0.0.74", "10.4.0", symmetricNAT, []string{"ws"}},
		{"rm", "192.0.0.75", "10.5.0", coneNAT, []string{"m1", "m2", "m3"}},
	}
	for _, h := range homes {
		l.router(h.router, h.wan, h.lan, h.kind)
		for i, name := range h.hosts {
			l.homeHost(h.router, name, fmt.Sprintf("%s.%d", h.lan, i+2))
		}
	}
	data := func(ns string) string { return filepath.Join(l.dir, ns) }
	started := time.Now()

	boot := l.start("boot", "run", "--data", data("boot"), "--relay-service", "--worker=false", "--no-mdns")
	bootAddr := boot.waitFor(t, 30*time.Second, true, "/ip4/192.0.0.65/tcp/4011/p2p/")
	pub2 := l.start("pub2", "run", "--data", data("pub2"), "--worker=false", "--no-mdns", "--bootstrap", bootAddr)
	pub2Addr := pub2.waitFor(t, 30*time.Second, true, "/ip4/192.0.0.66/tcp/4011/p2p/")

	// Each worker its own job uids: they share this machine's uid space.
	worker := func(ns string, uid0 int, extra ...string) *proc {
		args := []string{"run", "--data", data(ns), "--bootstrap", bootAddr, "--bootstrap", pub2Addr,
			"--slots", "1", "--job-uids", fmt.Sprintf("%d-%d", uid0, uid0+3), "-v"}
		return l.start(ns, append(args, extra...)...)
	}
	wa := worker("wa", 2100000100)
	wb := worker("wb", 2100000110)
	// ws accepts at most 30 s of CPU, so the first jobs (which ask for 1 min) skip it.
	ws := worker("ws", 2100000120, "--cpu", "30s")
	lanNode := func(ns string, uid0 int, extra ...string) *proc {
		args := []string{"run", "--data", data(ns), "--slots", "1", "--job-uids", fmt.Sprintf("%d-%d", uid0, uid0+3), "-v"}
		return l.start(ns, append(args, extra...)...)
	}
	m1 := lanNode("m1", 2100000130)
	m2 := lanNode("m2", 2100000140)
	m3 := lanNode("m3", 2100000150, "--no-mdns")
	id := func(p *proc) string {
		first := p.waitFor(t, 30*time.Second, true, "")
		return strings.TrimSpace(first)
	}
	waID, wbID, wsID, m1ID, m2ID, m3ID := id(wa), id(wb), id(ws), id(m1), id(m2), id(m3)

	// Reachability: the workers find out they are behind NAT, get a relay reservation from
	// boot (found on the DHT), and judge their NAT from what boot and pub2 saw.
	for _, w := range []*proc{wa, wb, ws} {
		w.waitFor(t, 90*time.Second, false, "relay addresses", "/p2p-circuit")
	}
	t.Logf("workers reachable through the relay %v after start", time.Since(started).Round(time.Millisecond))
	wa.waitFor(t, 30*time.Second, false, "reachability", "reach=nat-punch")
	wb.waitFor(t, 30*time.Second, false, "reachability", "reach=nat-punch")
	ws.waitFor(t, 30*time.Second, false, "reachability", "reach=relayed")

	// 1. Two replicas on wa and wb, behind different cone NATs, from home C; a fresh
	// submitter (a new identity, so new connections and a new hole punch) each round.
	rounds := 5
	if r, err := strconv.Atoi(os.Getenv("NATLAB_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	var punches []string
	for round := range rounds {
		in1 := fmt.Appendf(nil, "gridnode NAT lab, round %d\n", round)
		inFile := filepath.Join(work, "in1")
		os.WriteFile(inFile, in1, 0o600)
		t0 := time.Now()
		// The lab's owner trusts its workers (docs/TRUST.md); and the NATs' public addresses
		// all sit in 192.0.0.64/26, one /24, so replicas are counted by peer.
		rep, subID := submit(ctx, t, l, "--bootstrap", bootAddr, "--replicas", "2", "--cpu", "1m", "--trust", waID, "--trust", wbID, "--same-prefix", "--input", inFile, job)
		took := time.Since(t0)
		checkOutput(t, rep, in1)
		workers := map[string]bool{}
		for _, r := range rep.Replicas {
			workers[r.Worker] = r.ReceiptValid
		}
		if !workers[waID] || !workers[wbID] {
			t.Fatalf("round %d: replicas ran on %v, want wa (%s) and wb (%s) with valid receipts", round, workers, waID, wbID)
		}
		for _, w := range []*proc{wa, wb} {
			line := w.waitFor(t, 5*time.Second, false, "job stream", "dir=inbound", "peer="+subID)
			if logValue(line, "relayed") != "false" {
				t.Errorf("round %d: %s: the job came over a relayed connection, want a hole-punched one: %s", round, w.name, line)
				continue
			}
			direct := w.has(false, "direct connection", "peer="+subID)
			punch := w.has(false, "hole punch succeeded", "peer="+subID)
			if direct == "" || punch == "" {
				t.Errorf("round %d: %s: a direct job stream without a hole punch logged; log:\n%s", round, w.name, w.tail(30))
				continue
			}
			punches = append(punches, logValue(direct, "after_relayed"))
			t.Logf("round %d: %s: direct %s after the relayed connection (the punch itself %s), job stream over %s",
				round, w.name, logValue(direct, "after_relayed"), logValue(punch, "took"), logValue(line, "remote"))
		}
		t.Logf("round %d: job on wa+wb (R=2) took %v, the submitter's start included", round, took.Round(time.Millisecond))
	}
	t.Logf("hole punched: %d of %d job connections; times to a direct connection: %v", len(punches), 2*rounds, punches)

	// 2. Only ws (symmetric NAT) is left: the job runs over boot's relay, the binary pulled
	// by ws through it, with a larger input to measure the relay path.
	wa.stop()
	wb.stop()
	in2 := make([]byte, 16<<20) // the most a worker takes by default
	for i := range in2 {
		in2[i] = byte(rand.Uint32())
	}
	inFile2 := filepath.Join(work, "in2")
	os.WriteFile(inFile2, in2, 0o600)
	t0 := time.Now()
	rep, _ := submit(ctx, t, l, "--bootstrap", bootAddr, "--replicas", "1", "--trust", wsID, "--cpu", "20s", "--wall", "1m", "--input", inFile2, job)
	took2 := time.Since(t0)
	checkOutput(t, rep, in2)
	if len(rep.Replicas) != 1 || rep.Replicas[0].Worker != wsID {
		t.Fatalf("replicas %+v, want one on ws (%s)", rep.Replicas, wsID)
	}
	line := ws.waitFor(t, 5*time.Second, false, "job stream", "dir=inbound")
	if logValue(line, "relayed") != "true" {
		t.Errorf("ws: the job came over %s, want the relay (hole punching cannot pass a symmetric NAT)", logValue(line, "remote"))
	}
	if ws.has(false, "hole punch succeeded") != "" {
		t.Errorf("ws: a hole punch succeeded through a symmetric NAT")
	}
	subID := logValue(line, "peer")
	if pull := ws.has(false, "job stream", "dir=outbound", "/gridnode/blob/", "peer="+subID); logValue(pull, "relayed") != "true" {
		t.Errorf("ws: the binary was not pulled through the relay: %q", pull)
	}
	admitted, done := ws.has(false, "job admitted", "peer="+subID), ws.has(false, "job done", "peer="+subID)
	st, _ := os.Stat(job)
	t.Logf("relayed job on ws: binary %d B pulled + input %d B sent through the relay; admission to result %v; the whole submit %v",
		st.Size(), len(in2), logTime(t, done).Sub(logTime(t, admitted)).Round(time.Millisecond), took2.Round(time.Millisecond))

	// 3. LAN: m1 and m2 found each other with no bootstrap address; m3 (--no-mdns) stayed out.
	m1.waitFor(t, 5*time.Second, false, "knows no grid peer")
	m1.waitFor(t, 30*time.Second, false, "lan peer found", m2ID)
	m2.waitFor(t, 30*time.Second, false, "lan peer found", m1ID)
	m1.waitFor(t, 10*time.Second, false, "joined the grid")
	for _, m := range []*proc{m1, m2} {
		if m.has(false, "lan peer found", m3ID) != "" {
			t.Errorf("%s found m3, which runs with --no-mdns", m.name)
		}
	}
	if l := m3.has(false, "lan peer found"); l != "" {
		t.Errorf("m3 (--no-mdns) found a LAN peer: %s", l)
	}
	// pub2 is public: boot's AutoNAT server dialled it back.
	pub2.waitFor(t, 30*time.Second, false, "reachability", "reach=public")
}

// submit runs `gridnode submit --json args...` in home C and returns its report and the
// submitter's peer ID.
func submit(ctx context.Context, t *testing.T, l *lab, args ...string) (*submitReport, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	t0 := time.Now()
	out, errOut, err := l.run(ctx, "sub", nil, append([]string{"submit", "--json", "-v"}, args...)...)
	if d := time.Since(t0); d > 15*time.Second {
		// A submit of a second or so that took this long: say where the time went.
		t.Logf("a slow submit (%v); the end of its log:\n%s", d.Round(time.Millisecond), tailBytes(errOut, 80))
	}
	var rep submitReport
	if jerr := json.Unmarshal(out, &rep); jerr != nil || err != nil {
		t.Fatalf("submit: %v (json: %v)\nstdout: %s\nstderr:\n%s", err, jerr, out, tailBytes(errOut, 40))
	}
	var id string
	for _, line := range strings.Split(string(errOut), "\n") {
		if strings.Contains(line, `msg="node started"`) {
			id = logValue(line, "self")
		}
	}
	if id == "" {
		t.Fatalf("submit logged no peer ID:\n%s", tailBytes(errOut, 40))
	}
	return &rep, id
}

func checkOutput(t *testing.T, rep *submitReport, in []byte) {
	t.Helper()
	sum := sha256.Sum256(in)
	want := hex.EncodeToString(sum[:]) + "\n"
	if rep.Status != "exited" || !bytes.Equal(rep.Output, []byte(want)) {
		t.Fatalf("submit: status %q output %q (error %q), want exited with %q", rep.Status, rep.Output, rep.Error, want)
	}
}

func tailBytes(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// logTime is the time= of a slog text line.
func logTime(t *testing.T, line string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, logValue(" "+line, "time"))
	if err != nil {
		t.Fatalf("no time in log line %q", line)
	}
	return at
}

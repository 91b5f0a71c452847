package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// scrape GETs url and parses it as Prometheus does.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got %s, want 200", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the sample of family name whose labels include labels
// ("k=v" pairs); -1 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			found := false
			for _, lp := range m.Label {
				found = found || lp.GetName() == k && lp.GetValue() == v
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestMetricsMoveWithJobs runs jobs on a grid whose nodes keep metrics, scrapes /metrics
// over HTTP with the Prometheus text parser, and checks the counters moved: jobs, CPU,
// latency and blob bytes on the workers, submits and agreeing replicas on the client.
func TestMetricsMoveWithJobs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cpuRunner := jobs.RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		in, _ := io.ReadAll(job.Stdin)
		return sandbox.Result{Status: sandbox.StatusExited, Output: in, OutputCID: cids.Sum(in), CPUTime: 1500 * time.Millisecond}, nil
	})
	ws, c := openGridConfig(t, ctx, 2, Config{Runner: cpuRunner, Metrics: true})

	url := func(n *Node) string {
		ln, err := ListenMetrics("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := n.ServeMetrics(ln); err != nil {
			t.Fatal(err)
		}
		return "http://" + ln.Addr().String() + "/metrics"
	}
	wURL := []string{url(ws[0]), url(ws[1])}
	cURL := url(c)

	before := scrape(t, wURL[0])
	if got := value(before, "gridnode_jobs_total", "status=exited"); got != 0 {
		t.Errorf("before any job: gridnode_jobs_total{status=exited} = %v, want 0", got)
	}
	const runs = 3
	for i := range runs {
		if _, err := c.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte(fmt.Sprint("ping", i)), Replicas: 2}); err != nil {
			t.Fatal(err)
		}
	}

	// Each submit ran on both workers (2 replicas, 2 workers).
	for i, u := range wURL {
		fams := scrape(t, u)
		for _, tc := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"gridnode_jobs_total", []string{"status=exited"}, runs},
			{"gridnode_cpu_seconds_donated_total", nil, 1.5 * runs},
			{"gridnode_job_duration_seconds", nil, runs},
		} {
			if got := value(fams, tc.name, tc.labels...); got != tc.want {
				t.Errorf("worker %d: %s%v = %v, want %v", i, tc.name, tc.labels, got, tc.want)
			}
		}
		for _, tc := range []struct {
			name   string
			labels []string
		}{
			{"gridnode_blob_bytes_total", []string{"direction=in"}}, // it fetched the binary and no more
			{"gridnode_peers", nil},
			{"gridnode_dht_routing_table_peers", nil},
			{"gridnode_store_quota_bytes", nil},
			{"gridnode_store_bytes", nil}, // the binary it kept
		} {
			if got := value(fams, tc.name, tc.labels...); got <= 0 {
				t.Errorf("worker %d: %s%v = %v, want > 0", i, tc.name, tc.labels, got)
			}
		}
		rc := 0
		for name := range fams {
			if strings.HasPrefix(name, "libp2p_rcmgr_") {
				rc++
			}
		}
		if rc == 0 {
			t.Errorf("worker %d: no libp2p_rcmgr_ metrics", i)
		}
	}
	fams := scrape(t, cURL)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"gridnode_submits_total", []string{"result=accepted"}, runs},
		{"gridnode_verification_replicas_total", []string{"outcome=agreed"}, 2 * runs},
		{"gridnode_verification_replicas_total", []string{"outcome=disagreed"}, 0},
	} {
		if got := value(fams, tc.name, tc.labels...); got != tc.want {
			t.Errorf("client: %s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if got := value(fams, "gridnode_blob_bytes_total", "direction=out"); got < float64(len(fakeELF)) {
		t.Errorf("client: blob bytes out = %v, want at least the binary's %d", got, len(fakeELF))
	}

	resp, err := http.Post(cURL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: got %s, want 405", resp.Status)
	}
}

// TestMetricsEvents feeds the events the grid test cannot easily provoke: refusals by code,
// disagreeing replicas, failed and cancelled jobs.
func TestMetricsEvents(t *testing.T) {
	m := newMetrics(&Node{})
	ev := m.events()
	ev.Refused("", protocol.Code_BUSY)
	ev.Refused("", protocol.Code_BUSY)
	ev.Refused("", protocol.Code_LIMITS)
	ev.Job(jobs.JobEvent{Err: context.Canceled})
	ev.Job(jobs.JobEvent{Err: io.ErrUnexpectedEOF})
	ev.Submitted(&jobs.Report{Replicas: []jobs.Replica{{}, {}, {Err: fmt.Errorf("w: %w", jobs.ErrDisagrees)}, {Err: jobs.ErrNotNeeded}}}, nil)
	ev.Submitted(nil, jobs.ErrNoQuorum)

	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := make(map[string]*dto.MetricFamily)
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	for _, tc := range []struct {
		name  string
		label string
		want  float64
	}{
		{"gridnode_refusals_total", "code=BUSY", 2},
		{"gridnode_refusals_total", "code=LIMITS", 1},
		{"gridnode_jobs_total", "status=cancelled", 1},
		{"gridnode_jobs_total", "status=failed", 1},
		{"gridnode_jobs_total", "status=exited", 0},
		{"gridnode_verification_replicas_total", "outcome=agreed", 2},
		{"gridnode_verification_replicas_total", "outcome=disagreed", 1},
		{"gridnode_submits_total", "result=accepted", 1},
		{"gridnode_submits_total", "result=failed", 1},
	} {
		if got := value(byName, tc.name, tc.label); got != tc.want {
			t.Errorf("%s{%s} = %v, want %v", tc.name, tc.label, got, tc.want)
		}
	}
}

func TestListenMetrics(t *testing.T) {
	for _, addr := range []string{":9090", "9090", "", "[::]"} {
		if ln, err := ListenMetrics(addr); err == nil {
			ln.Close()
			t.Errorf("ListenMetrics(%q): got no error, want one", addr)
		}
	}
	ln, err := ListenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := (&Node{}).ServeMetrics(ln); err == nil {
		t.Error("ServeMetrics without Config.Metrics: got no error, want one")
	}
}

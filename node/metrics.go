package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
)

// nodeMetrics are a node's Prometheus metrics (Config.Metrics), served by ServeMetrics.
// They hold counts and sizes only: no CID, peer ID, input or output appears in a label.
type nodeMetrics struct {
	reg        *prometheus.Registry
	jobs       *prometheus.CounterVec // by status
	cpu        prometheus.Counter
	latency    prometheus.Histogram
	refusals   *prometheus.CounterVec // by code
	submits    *prometheus.CounterVec // by result
	replicas   *prometheus.CounterVec // by outcome: agreed, disagreed
	blobIn     prometheus.Counter
	blobOut    prometheus.Counter
	blobReport blobReporter
}

// jobBuckets spans a job's admission to its answer: from a quick job on a warm worker
// (tens of milliseconds) to the stock wall-clock limit's order (30 minutes) and beyond.
var jobBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600}

// newMetrics makes n's metrics. The gauges read n when scraped; the resource manager's
// metrics are libp2p's process-wide ones (one node per process in a daemon).
func newMetrics(n *Node) *nodeMetrics {
	reg := prometheus.NewRegistry()
	m := &nodeMetrics{
		reg: reg,
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridnode_jobs_total",
			Help: "Jobs this worker admitted, by how they ended: the sandbox status (exited, violation, crashed, cpu_limit, wall_timeout, output_limit, rejected), or cancelled or failed when no result was sent."}, []string{"status"}),
		cpu: prometheus.NewCounter(prometheus.CounterOpts{Name: "gridnode_cpu_seconds_donated_total",
			Help: "CPU seconds the jobs this worker answered used."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gridnode_job_duration_seconds",
			Help: "Time from a job's admission to its answer, on this worker.", Buckets: jobBuckets}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridnode_refusals_total",
			Help: "Job requests this worker refused before admitting them, by wire code."}, []string{"code"}),
		submits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridnode_submits_total",
			Help: "Submits of this node that ended, by result: accepted (a quorum agreed) or failed."}, []string{"result"}),
		replicas: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridnode_verification_replicas_total",
			Help: "Replicas of this node's submits whose verdict agreed with the accepted one or disagreed with it."}, []string{"outcome"}),
	}
	blob := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gridnode_blob_bytes_total",
		Help: "Bytes on blob protocol streams (job binaries and inputs), in: fetched, out: served."}, []string{"direction"})
	m.blobIn, m.blobOut = blob.WithLabelValues("in"), blob.WithLabelValues("out")
	m.blobReport = blobReporter{in: m.blobIn, out: m.blobOut}
	for _, s := range []sandbox.Status{sandbox.StatusExited, sandbox.StatusViolation, sandbox.StatusCrashed,
		sandbox.StatusCPULimit, sandbox.StatusWallTimeout, sandbox.StatusOutputLimit, sandbox.StatusRejected} {
		m.jobs.WithLabelValues(string(s)) // present at 0, so that rate() sees the first job
	}
	m.replicas.WithLabelValues("agreed")
	m.replicas.WithLabelValues("disagreed")
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(m.jobs, m.cpu, m.latency, m.refusals, m.submits, m.replicas, blob,
		gauge("gridnode_jobs_running", "Jobs running on this worker now.", func() float64 {
			if n.jobs == nil {
				return 0
			}
			return float64(n.Running())
		}),
		gauge("gridnode_store_bytes", "Bytes of blobs in the content store, counted in whole blocks as against its quota.", func() float64 {
			if n.jobs == nil {
				return 0
			}
			return float64(n.jobs.store.Used())
		}),
		gauge("gridnode_store_quota_bytes", "The content store's quota.", func() float64 {
			if n.jobs == nil || n.jobs.store.Quota <= 0 {
				return store.DefaultQuota
			}
			return float64(n.jobs.store.Quota)
		}),
		gauge("gridnode_peers", "Peers connected now.", func() float64 {
			if n.h == nil {
				return 0
			}
			return float64(len(n.h.Network().Peers()))
		}),
		gauge("gridnode_dht_routing_table_peers", "Peers in the DHT's routing table.", func() float64 {
			if n.d == nil {
				return 0
			}
			return float64(n.d.Size())
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	rcmgr.MustRegisterWith(reg)
	return m
}

// events are the jobs package's events the metrics count.
func (m *nodeMetrics) events() jobs.Events {
	return jobs.Events{
		Job: func(ev jobs.JobEvent) {
			status := ev.Status
			switch {
			case errors.Is(ev.Err, context.Canceled):
				status = "cancelled"
			case ev.Err != nil || status == "":
				status = "failed"
			}
			m.jobs.WithLabelValues(status).Inc()
			m.cpu.Add(ev.CPU.Seconds())
			m.latency.Observe(ev.End.Sub(ev.Start).Seconds())
		},
		Refused: func(_ peer.ID, code protocol.Code) {
			m.refusals.WithLabelValues(code.String()).Inc()
		},
		Submitted: func(rep *jobs.Report, err error) {
			result := "accepted"
			if err != nil {
				result = "failed"
			}
			m.submits.WithLabelValues(result).Inc()
			if rep == nil {
				return
			}
			for _, r := range rep.Replicas {
				switch {
				case r.Err == nil:
					m.replicas.WithLabelValues("agreed").Inc()
				case errors.Is(r.Err, jobs.ErrDisagrees):
					m.replicas.WithLabelValues("disagreed").Inc()
				}
			}
		},
	}
}

// ListenMetrics listens on addr (HOST:PORT) for ServeMetrics. A HOST that is not loopback
// must be given as an address (0.0.0.0 for every interface): an empty one (":9090") is
// refused rather than taken to mean every interface.
func ListenMetrics(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	switch {
	case err != nil:
		return nil, fmt.Errorf("metrics address %q: want HOST:PORT, such as 127.0.0.1:9090", addr)
	case host == "":
		return nil, fmt.Errorf("metrics address %q: no host; give 127.0.0.1%s for this machine only, or 0.0.0.0%s to serve every interface", addr, addr, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return ln, nil
}

// ServeMetrics serves the node's metrics in Prometheus' text format at GET /metrics on ln
// until Close. They hold no job data and need no token; a listener that is not on loopback
// is logged as a warning. It needs Config.Metrics.
func (n *Node) ServeMetrics(ln net.Listener) error {
	if n.metrics == nil {
		return errors.New("metrics: the node was opened without Config.Metrics")
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		// A web page reaches loopback through a DNS name rebound to it, with its own Host.
		n.serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if loopbackRequest(w, r) {
				mux.ServeHTTP(w, r)
			}
		}), nil)
		n.log.Info("metrics listening", "addr", ln.Addr())
	} else {
		n.serve(ln, mux, nil)
		n.log.Warn("metrics listening beyond loopback: whoever reaches it can read them", "addr", ln.Addr())
	}
	return nil
}

// blobReporter is the host's bandwidth reporter for the metrics: it counts the bytes of
// blob protocol streams, the binaries and inputs this node serves and fetches, and ignores
// the rest (no per-peer state, which strangers could grow).
type blobReporter struct{ in, out prometheus.Counter }

var _ metrics.Reporter = blobReporter{}

func (b blobReporter) LogRecvMessageStream(n int64, p p2pproto.ID, _ peer.ID) {
	if p == protocol.BlobID {
		b.in.Add(float64(n))
	}
}

func (b blobReporter) LogSentMessageStream(n int64, p p2pproto.ID, _ peer.ID) {
	if p == protocol.BlobID {
		b.out.Add(float64(n))
	}
}

func (blobReporter) LogSentMessage(int64)                                  {}
func (blobReporter) LogRecvMessage(int64)                                  {}
func (blobReporter) GetBandwidthForPeer(peer.ID) metrics.Stats             { return metrics.Stats{} }
func (blobReporter) GetBandwidthForProtocol(p2pproto.ID) metrics.Stats     { return metrics.Stats{} }
func (blobReporter) GetBandwidthTotals() metrics.Stats                     { return metrics.Stats{} }
func (blobReporter) GetBandwidthByPeer() map[peer.ID]metrics.Stats         { return nil }
func (blobReporter) GetBandwidthByProtocol() map[p2pproto.ID]metrics.Stats { return nil }
func (blobReporter) Reset()                                                {}
func (blobReporter) TrimIdle(time.Time)                                    {}

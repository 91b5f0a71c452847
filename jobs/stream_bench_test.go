package jobs_test

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/gridnode/gridnode/internal/testelf"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/node"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/testnet"
)

// rawID is the benchmark's own protocol: the bytes sent are read and dropped, then one byte
// answers.
const rawID = "/gridnode-bench/raw/1.0.0"

// transferSizes are the issue's: a 32 MiB binary and a 16 MiB input.
const (
	transferBinary = 32 << 20
	transferInput  = 16 << 20
)

// BenchmarkTransfer submits a fresh (uncached) 32 MiB binary with a 16 MiB input at R=2 to a
// 3-node loopback testnet running the real sandbox, through an already joined client, and
// measures submit to verified result (medians). e2e-MB/s is binary+input over the wall
// time; moved-MB/s counts them once per replica (R=2: each worker gets both). The baseline,
// in the same loop, moves those same bytes raw: 48 MiB on a plain libp2p stream to each of
// the two workers that ran the job, at once, over the connections already open; raw-MB/s
// is its rate and ratio the raw time over the submit's (1 would mean the grid costs
// nothing beyond moving the bytes). quic-share is the share of the client's connections to
// those workers that are QUIC, not TCP: nodes dial TCP first on loopback and LAN addresses
// (node.dialRanker), since a QUIC stream moves about a third of what a TCP one does there;
// a share above 0 means that stopped holding. busy-cores is the process's CPU time (every
// node is in it, and the job processes are its children) over the submit's wall time, a
// median: near the machine's core count, the submit is bound by CPU, not by waiting.
//
//	go test -run '^$' -bench BenchmarkTransfer -benchtime 10x ./jobs/
func BenchmarkTransfer(b *testing.B) {
	ctx := context.Background()
	client, net := transferNet(b)
	payload := transferBinary + transferInput
	var e2e, raw []time.Duration
	var busy []float64
	quic, conns := 0, 0
	for b.Loop() {
		b.StopTimer()
		req := transferRequest(b)
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime(b)
		rep, err := client.Submit(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		busy = append(busy, float64(cpuTime(b)-c0)/float64(t1.Sub(t0)))
		if rep.Status != string(sandbox.StatusExited) {
			b.Fatalf("got %s, want exited", rep.Outcome())
		}
		var wg sync.WaitGroup
		for _, r := range rep.Replicas {
			for _, nd := range net.Nodes() {
				if nd.ID() == r.Worker {
					wg.Go(func() { rawCopy(b, client, nd, payload) })
				}
			}
			for _, c := range client.Host().Network().ConnsToPeer(r.Worker) {
				conns++
				if _, err := c.RemoteMultiaddr().ValueForProtocol(multiaddr.P_QUIC_V1); err == nil {
					quic++
				}
			}
		}
		wg.Wait()
		e2e, raw = append(e2e, t1.Sub(t0)), append(raw, time.Since(t1))
	}
	me, mr := median(e2e), median(raw)
	b.ReportMetric(float64(payload)/me.Seconds()/1e6, "e2e-MB/s")
	b.ReportMetric(2*float64(payload)/me.Seconds()/1e6, "moved-MB/s")
	b.ReportMetric(2*float64(payload)/mr.Seconds()/1e6, "raw-MB/s")
	b.ReportMetric(mr.Seconds()/me.Seconds(), "ratio")
	b.ReportMetric(float64(quic)/float64(max(conns, 1)), "quic-share")
	slices.Sort(busy)
	b.ReportMetric(busy[len(busy)/2], "busy-cores")
}

// cpuTime is the CPU time, user and system, of this process and of its children that have
// been waited for.
func cpuTime(t testing.TB) time.Duration {
	var self, kids syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) != nil || syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids) != nil {
		t.Fatal("getrusage failed")
	}
	tv := func(v syscall.Timeval) time.Duration { return time.Duration(v.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}

// TestTransferQuick is BenchmarkTransfer's quick version: two uncached 32 MiB binaries with
// 16 MiB inputs verified on a 3-node testnet, the second at least minTransferMBps (a
// twentieth of the 300 MB/s target: CI machines are shared and slow, and a machine at a
// load of 45 on 2 cores still moved 33 MB/s).
func TestTransferQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 200 MiB over loopback")
	}
	const minTransferMBps = 15
	client, _ := transferNet(t)
	var d time.Duration
	for range 2 {
		req := transferRequest(t)
		t0 := time.Now()
		rep, err := client.Submit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		d = time.Since(t0)
		if rep.Status != string(sandbox.StatusExited) || len(rep.Replicas) < 2 {
			t.Fatalf("got %s with %d replicas, want exited with 2", rep.Outcome(), len(rep.Replicas))
		}
	}
	mbps := float64(transferBinary+transferInput) / d.Seconds() / 1e6
	t.Logf("32 MiB binary + 16 MiB input at R=2: %v, %.0f MB/s", d, mbps)
	if mbps < minTransferMBps {
		t.Errorf("got %.0f MB/s, want at least %d", mbps, minTransferMBps)
	}
}

// transferNet starts a 3-node testnet with the real sandbox and a client joined to it and
// connected to every node, which all serve the raw protocol.
func transferNet(t testing.TB) (client *node.Node, net *testnet.Net) {
	t.Helper()
	if _, err := os.Stat("/proc/self/exe"); err != nil {
		t.Skip("needs Linux")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := testnet.Start(ctx, testnet.Setup{Nodes: 3, Runner: &sandbox.Runner{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	client, err = n.NewClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range n.Nodes() {
		nd.Host().SetStreamHandler(rawID, func(s network.Stream) {
			io.Copy(io.Discard, s)
			s.Write([]byte{1})
			s.Close()
		})
		if err := client.Host().Connect(ctx, peer.AddrInfo{ID: nd.ID(), Addrs: nd.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	return client, n
}

// transferRequest is a job no worker holds yet: a 32 MiB binary that exits 0 and a 16 MiB
// input, both random.
func transferRequest(t testing.TB) jobs.Request {
	pad, in := make([]byte, transferBinary-4096-9), make([]byte, transferInput)
	rand.Read(pad)
	rand.Read(in)
	bin := testelf.Exit0(pad)
	if len(bin) != transferBinary {
		t.Fatalf("binary of %d bytes, want %d", len(bin), transferBinary)
	}
	return jobs.Request{Binary: bin, Input: in, Replicas: 2, Quorum: 2, SamePrefix: true}
}

// rawCopy sends n bytes from a to b on a new stream and waits for b's one-byte answer.
func rawCopy(t testing.TB, a, b *node.Node, n int) {
	s, err := a.Host().NewStream(context.Background(), b.ID(), rawID)
	if err != nil {
		t.Error(err)
		return
	}
	defer s.Close()
	buf := make([]byte, 256<<10)
	for left := n; left > 0; left -= len(buf) {
		if _, err := s.Write(buf[:min(left, len(buf))]); err != nil {
			t.Error(err)
			return
		}
	}
	s.CloseWrite()
	if _, err := io.ReadFull(s, buf[:1]); err != nil {
		t.Error(err)
	}
}

func median(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

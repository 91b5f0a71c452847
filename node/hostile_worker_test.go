package node

import (
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// heapInUse returns the bytes of live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// submitTo runs a job from client on both workers of a two-worker grid and fails unless w
// answered with a valid receipt.
func submitTo(ctx context.Context, client, w *Node, in string) error {
	rep, err := client.Submit(ctx, jobs.Request{Binary: fakeELF, Input: []byte(in), Replicas: 2, MaxReplicas: 2})
	if err != nil {
		return err
	}
	if string(rep.Output) != in {
		return errors.New("wrong output " + string(rep.Output))
	}
	for _, r := range rep.Replicas {
		if r.Worker == w.ID() && r.ReceiptValid && r.Err == nil {
			return nil
		}
	}
	return errors.New("no valid replica from the worker under attack")
}

// TestHostileWorkerMemory has 4 identities open 32 job streams each and send on every one
// all of the largest request the worker reads but its last byte, and hold them: the
// worker's heap must grow by less than 8 MiB (its own bound: 128 unjudged streams x 4 KiB
// headers = 512 KiB; the rest is slack for the attackers and transports in this process),
// and an honest job must still run.
//
// With the defence off (run once: MaxJobRequest back to MaxInline + 64 KiB, so a request
// carried its input and was read whole before admission) the attackers' 16 accepted streams
// (4 per peer since node/limits.go; 32 before) each pinned 16 MiB: "heap grew by 275 MiB".
func TestHostileWorkerMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, client := openGrid(t, ctx, 2, echoRunner)
	w := ws[0]
	const identities, streams = 4, 32
	var as []*attacker
	for range identities {
		a := newAttacker(t, ctx, w)
		defer a.Close()
		as = append(as, a)
	}
	before := heapInUse()

	frame := append(binary.AppendUvarint(nil, protocol.MaxJobRequest), make([]byte, protocol.MaxJobRequest-1)...)
	release := make(chan struct{})
	var wg, sending sync.WaitGroup
	var written atomic.Int32
	for _, a := range as {
		for range streams {
			sending.Add(1)
			wg.Go(func() {
				s, err := a.NewStream(ctx, w.ID(), protocol.JobID)
				if err != nil {
					sending.Done()
					return
				}
				defer s.Reset()
				_, err = s.Write(frame) // returns once the worker has read all but a window
				sending.Done()
				if err != nil {
					return // refused
				}
				written.Add(1)
				<-release
			})
		}
	}
	sending.Wait()
	// Sample the heap for a second (the last bytes of each window may still be on their
	// way), well within the HeaderTimeout after which the worker drops the streams.
	var grown int64
	for range 5 {
		grown = max(grown, int64(heapInUse())-int64(before))
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d of %d streams written (the worker then reset some); heap grew by %d KiB", written.Load(), identities*streams, grown>>10)
	if grown > 8<<20 {
		t.Errorf("heap grew by %d MiB while attackers held nearly complete requests, want under 8 MiB", grown>>20)
	}
	start := time.Now()
	if err := submitTo(ctx, client, w, "honest"); err != nil {
		t.Fatalf("honest submit during the attack: %v", err)
	}
	t.Logf("honest job ran in %v", time.Since(start))
	close(release)
	wg.Wait()
}

// TestHostileWorkerIdleStreams has 65 identities each open 8 job streams and hold them
// idle (the stream open, not one byte of the request written): together they could hold
// more than the 256 job streams the resource manager allows in all. An honest submitter
// must still get its job run within a few seconds, and the worker must let go of every
// idle stream within its header deadline.
//
// With the defence off (run once: a 60 s header deadline and no limit on unjudged streams
// in the worker, only the resource manager's 4 per peer) the attackers held 256 streams and
// the honest submit failed at once with no quorum, its job stream "refused: stream reset
// (remote)" by the resource manager. With only the 5 s deadline and the per-peer limit on
// (no reset of the oldest unjudged stream) it failed the same way: the deadline frees the
// streams, but not before the honest submitter has given up.
func TestHostileWorkerIdleStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ws, client := openGrid(t, ctx, 2, echoRunner)
	w := ws[0]
	if err := submitTo(ctx, client, w, "warm up"); err != nil {
		t.Fatal(err)
	}
	const identities, perIdentity = 65, 8
	as := make([]*attacker, identities)
	var setup sync.WaitGroup
	for i := range as {
		setup.Go(func() { as[i] = newAttacker(t, ctx, w) })
	}
	setup.Wait()
	for _, a := range as {
		defer a.Close()
	}
	release := make(chan struct{})
	var wg, opening sync.WaitGroup
	var held atomic.Int32
	for _, a := range as {
		for range perIdentity {
			opening.Add(1)
			wg.Go(func() {
				s, err := a.NewStream(ctx, w.ID(), protocol.JobID)
				if err != nil {
					opening.Done()
					return
				}
				defer s.Reset()
				_, err = s.Read(nil) // flush the lazy handshake: the node's handler runs
				opening.Done()
				if err != nil {
					return
				}
				held.Add(1)
				s.Read(make([]byte, 1)) // until the worker resets it
				held.Add(-1)
				<-release
			})
		}
	}
	opening.Wait()
	attacked := time.Now()
	count := func() int {
		k := 0
		for _, a := range as {
			k += a.handlerStreams(protocol.JobID)
		}
		return k
	}
	t.Logf("attackers hold %d job streams", count())

	start := time.Now()
	if err := submitTo(ctx, client, w, "honest"); err != nil {
		t.Fatalf("honest submit with %d idle streams held: %v", count(), err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("honest job took %v, want a few seconds at most", d)
	}
	waitUntil(t, protocol.HeaderTimeout+2*time.Second-time.Since(attacked), "the worker to let go of every idle stream", func() bool {
		return count() == 0
	})
	close(release)
	wg.Wait()
}

// TestHostileWorkerSlots has one peer keep a job in every slot it can get (jobs whose
// binary it never serves: it accepts the worker's blob stream and never answers, so each
// job holds its slot until the fetch times out) and retry the moment a slot frees: an
// honest submitter on another peer must still get a slot at once.
//
// With the defence off (run once: SlotsPerPeer equal to Slots) the attacker held both slots
// ("attacker admitted 2, refused 44; 2 slots held"), the worker's offer showed no free slot
// and the honest submit failed: "no quorum: 1 worker answered".
func TestHostileWorkerSlots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, client := openGrid(t, ctx, 2, echoRunner) // 2 slots each
	w := ws[0]
	a := newAttacker(t, ctx, w)
	defer a.Close()
	req := frameOf(t, &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: tarpitBlob.Bytes(), Nonce: make([]byte, protocol.MinNonce)})
	actx, stop := context.WithCancel(ctx)
	// The attacker never answers a blob request: each fetch holds its slot for seconds.
	a.SetStreamHandler(protocol.BlobID, func(s network.Stream) {
		<-actx.Done()
		s.Reset()
	})
	var admitted, busy atomic.Int32
	var wg sync.WaitGroup
	for range 3 { // more spinners than slots
		wg.Go(func() {
			for actx.Err() == nil {
				s, err := a.NewStream(actx, w.ID(), protocol.JobID)
				if err != nil {
					continue
				}
				unreset := context.AfterFunc(actx, func() { s.Reset() })
				var admit protocol.JobAdmit
				_, err = s.Write(req)
				if err == nil {
					err = protocol.ReadMsg(s, &admit, protocol.MaxControlMsg)
				}
				if err == nil && admit.Code == protocol.Code_OK {
					admitted.Add(1)
					s.Read(make([]byte, 1)) // hold the slot until the job ends or the test does
				} else if admit.Code == protocol.Code_BUSY {
					busy.Add(1)
				}
				unreset()
				s.Reset()
			}
		})
	}
	waitUntil(t, 10*time.Second, "the attacker to hold a slot and be refused another", func() bool {
		return admitted.Load() > 0 && busy.Load() > 0
	})
	t.Logf("attacker admitted %d, refused %d; %d slots held", admitted.Load(), busy.Load(), w.Running())
	start := time.Now()
	if err := submitTo(ctx, client, w, "honest"); err != nil {
		t.Fatalf("honest submit while one peer spins jobs in every slot it can (admitted %d, busy %d): %v", admitted.Load(), busy.Load(), err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("honest job took %v, want a few seconds at most", d)
	}
	if n := w.Running(); n > 1 {
		t.Errorf("got %d slots held while the honest job is done, want at most the attacker's 1", n)
	}
	stop()
	wg.Wait()
}

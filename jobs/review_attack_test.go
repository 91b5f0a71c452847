package jobs

// Review attacks on a real Worker on loopback (package-level: the worker's own Store and a
// fake runner where the real sandbox would only add cost). See the report in each comment.
//
// Three more findings of this review were taken out of this file for later issues, unfixed:
// placement by claimed SlotsFree (two fakes claiming 500 free slots captured the quorum in
// 10 of 10 submits, where random placement gives about 1 in 6) and a worker silent after
// admission (with two honest workers idle, Submit(R=2, Q=2, Wall 1 s) had not returned after
// 20 s, held until FetchTimeout + BlobTimeout + Wall + ReplyTimeout, > 6 min) go to issue 8
// (placement and quorum); receipts that omit the limits (a worker signed "rejected" for an
// honest 4105-byte job the submitter gave Memory=4096, with nothing in the receipt recording
// that limit) goes to issue 7 (the job contract).

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/internal/testelf"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// tinyELF returns the smallest job layout we found that sandbox.Validate accepts: one
// PT_LOAD R+X at offset 0 holding the header, the two program headers, the note and the
// code (exit(0)) plus 8 random bytes that make each one distinct.
func tinyELF(t testing.TB) []byte {
	t.Helper()
	const base, ehdr, phdr = 0x400000, 64, 56
	note := []byte("\x09\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00gridnode\x00\x00\x00\x00")
	code := []byte{0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05, 0xeb, 8, 0, 0, 0, 0, 0, 0, 0, 0}
	rand.Read(code[11:])
	noteOff := ehdr + 2*phdr
	codeOff := noteOff + len(note)
	b := make([]byte, codeOff+len(code))
	le := binary.LittleEndian
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)
	le.PutUint16(b[18:], 62)
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], uint64(base+codeOff))
	le.PutUint64(b[32:], ehdr)
	le.PutUint16(b[52:], ehdr)
	le.PutUint16(b[54:], phdr)
	le.PutUint16(b[56:], 2)
	testelf.PutPhdr(b, 0, 1, 5, 0, base, uint64(len(b)), uint64(len(b)), 4096)
	testelf.PutPhdr(b, 1, 4, 4, uint64(noteOff), uint64(base+noteOff), uint64(len(note)), uint64(len(note)), 4)
	copy(b[noteOff:], note)
	copy(b[codeOff:], code)
	if err := sandbox.Validate(b, sandbox.Limits{}); err != nil {
		t.Fatalf("tinyELF: the sandbox refuses it: %v", err)
	}
	return b
}

// diskBytes is what the files in dir take on disk (st_blocks), and their count.
func diskBytes(t testing.TB, dir string) (int64, int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, e := range ents {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(dir, e.Name()), &st) == nil {
			sum += st.Blocks * 512
		}
	}
	return sum, len(ents)
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestReviewFindingStoreQuotaCountsBytesNotFiles: a stranger sends jobs whose binaries are
// tiny, distinct, valid ELFs (served by itself over the blob protocol). Each one is
// validated, run, stored and provided. The quota counts file sizes, not disk blocks or
// files, and eviction scans every blob for each victim.
//
// Measured (2 shared cores, fake runner in place of the sandbox, which adds a few ms a job):
//   - tiny valid ELF: 219 bytes; 2000 jobs from ONE identity in 2.6-2.8 s (~700-760
//     jobs/s, one slot, no budget: each job is a ~100-byte header + a 219-byte blob), each
//     stored and provided (2000 Provide calls);
//   - the store counted 438,000 bytes (Used) but the files took 8,192,000 bytes on disk
//     (4 KiB per file): 18.7x the quota's view. At the default 2 GiB quota that is ~9.8
//     million files and ~40 GiB of disk (about 4 hours of one identity at this rate).
//   - eviction is O(blobs) per victim (evict scans the whole map under s.mu): with 40,000
//     tiny blobs in a full store, storing one 4 MiB binary (evicting 19,153 of them) took
//     9.8 s holding the store's mutex, so every Open/Get/touch of every job waits; at 9.8
//     million blobs one 64 MiB binary must evict ~300,000: ~3e12 map steps (hours).
//
// Suggested fix: charge each blob max(size, 4 KiB) rounded up to the block size (or a
// fixed per-file overhead) and cap the file count; keep blobs in an LRU list (container/list
// or a heap) so eviction is O(victims); consider a minimum binary size or a per-peer budget
// for storing new binaries.
//
// Held (after): each blob is charged its size in whole 4 KiB blocks and the store keeps at
// most one file per 64 KiB of quota; eviction walks an LRU list. Measured: 2000 jobs in
// 2.7 s (732/s), Used 8,192,000 bytes = the 8,192,000 on disk (1.0x); the 40,000 tiny blobs
// now fill a default store to its 32,768-file cap, and storing the 4 MiB binary with the
// quota set to what they use (2048 files) evicted 30,721 of them in 0.18 s. (Still open: no
// per-peer budget for storing new binaries; one identity can still churn the store.)
func TestReviewHeldStoreQuotaCountsBytesNotFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	ctx := context.Background()
	probe := tinyELF(t) // fails the test if the validator refuses it
	g := newGrid(t, WorkerConfig{Runner: sandboxLike, Validate: sandbox.Validate})
	st := g.stores[0]
	var provided atomic.Int64
	st.Provide = func(cid.Cid) { provided.Add(1) }
	a, ast := newHost(t), newStore(t)
	if err := a.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
		t.Fatal(err)
	}
	serveCounting(a, ast)
	const n = 2000
	start := time.Now()
	for i := range n {
		bin := tinyELF(t)
		c, _ := ast.Put(ctx, bin)
		req := &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(bin)), Nonce: nonce()}
		res, err := rawJob(t, a, g.hosts[0].ID(), req)
		for try := 0; err != nil && protocol.CodeOf(err) == protocol.Code_BUSY && try < 100; try++ {
			time.Sleep(time.Millisecond) // the slot is given back just after the reply
			res, err = rawJob(t, a, g.hosts[0].ID(), req)
		}
		if err != nil || statusOf(res) != string(sandbox.StatusExited) {
			t.Fatalf("job %d: %+v, %v", i, res, err)
		}
	}
	el := time.Since(start)
	disk, files := diskBytes(t, g.dirs[0])
	t.Logf("tiny ELF %d bytes; %d jobs in %v (%.0f/s); store Used=%d bytes, on disk %d bytes in %d files (%.1fx); %d provides",
		len(probe), n, el, float64(n)/el.Seconds(), st.Used(), disk, files, float64(disk)/float64(st.Used()), provided.Load())

	// Eviction cost: a full store of 20,000 tiny blobs, then one 2 MiB binary.
	st2, dir2 := newStoreDir(t)
	const nblobs = 40000
	for range nblobs {
		b := make([]byte, 219)
		rand.Read(b)
		if _, err := st2.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	st2.Quota = st2.Used()
	before := len(dirNames(t, dir2))
	big := jobELF(t, 4<<20-4096-9)
	t0 := time.Now()
	if err := st2.PutBinary(ctx, cids.Sum(big), big); err != nil {
		t.Fatal(err)
	}
	evict := time.Since(t0)
	t.Logf("full store of %d tiny blobs: storing one %d-byte binary (evicting %d blobs) took %v (store mutex held throughout eviction)", nblobs, len(big), before-len(dirNames(t, dir2))+1, evict)

	if disk > 4*st.Used() {
		t.Errorf("disk use %d is %.1fx what the quota counts (%d): quota is bypassable with many tiny binaries", disk, float64(disk)/float64(st.Used()), st.Used())
	}
	// An order-of-magnitude bound, not a performance target: evicting 30000 blobs is 30000
	// unlinks (0.2-0.6 s here, more on a loaded machine), and the O(n) scan per victim this
	// catches took minutes.
	if evict > 10*time.Second {
		t.Errorf("eviction of ~19000 tiny blobs took %v under the store mutex (O(n) scan per victim)", evict)
	}
}

// TestReviewFindingRehashAmplification: a stranger names a 64 MiB binary the worker already
// stores (any CID the worker provides on the DHT; the stranger needs not hold it), asks for
// inline input of 1 byte, and resets the stream as soon as the worker asks for it. For
// ~150 bytes sent, the worker reads the 64 MiB file, hashes it (Store.get re-checks every
// read) and validates it, at the daemon's normal priority (not SCHED_IDLE like jobs), runs
// nothing, signs nothing, and no budget limits how often. Two identities keep both slots
// busy.
//
// Measured (2 shared cores, 2 slots, 2 attacker identities, two runs): 96-142 aborted
// admissions in 5 s (19-28/s): 6.1-9.1 GB read, hashed and validated (1.2-1.8 GB/s), process
// CPU 1.2-1.8 cores (attacker side included, but it only writes 99-byte headers); ~1.9 KB/s of attacker
// traffic for 1.2-1.8 GB/s of daemon work: amplification ~650,000x in bytes.
//
// Suggested fix: keep the verified hash keyed by (inode, size, mtime) so a blob is not
// re-hashed on every job (or hash once at store time and trust the 0700 dir, re-checking
// only lazily/periodically), and fetch/validate lazily only when the input is at hand;
// charge such aborted admissions to the peer (a per-peer budget of admissions per minute).
//
// Held (after): the store remembers which file (inode, size, mtime) it hashed, so a read
// of an unchanged file skips the hash (validation is a parse of the headers, cheap); and a
// peer that abandons admitted jobs before they run gets abandonBurst (4), then one per 15 s,
// then BUSY. Measured: 8 aborted admissions in 5 s (1.6/s) from the two identities, process
// CPU 0.20 cores. With the budget off (the skipped hash alone) it was 308 in 5 s (61.5/s),
// 1.64 cores: each abort still reads the 64 MiB into memory (~27 ms of CPU each, against
// ~63 ms before), so the budget is what bounds it; fresh identities still get 4 each.
func TestReviewHeldRehashAmplification(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	ctx := context.Background()
	g := newGrid(t, WorkerConfig{Runner: sandboxLike, Validate: sandbox.Validate, Slots: 2})
	st := g.stores[0]
	bin := jobELF(t, 64<<20-4096-9)
	c := cids.Sum(bin)
	if err := st.PutBinary(ctx, c, bin); err != nil {
		t.Fatal(err)
	}
	size := len(bin)
	bin = nil
	in := []byte{0}
	var attackers []host.Host
	for range 2 {
		a := newHost(t)
		if err := a.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
			t.Fatal(err)
		}
		attackers = append(attackers, a)
	}
	wid := g.hosts[0].ID()
	req := &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(size), Nonce: nonce(), InputSize: 1, InputInline: true, InputCid: cids.Sum(in).Bytes()}
	sent := len(frame(t, req))
	dur := 5 * time.Second
	done := make(chan int)
	cpu0, t0 := cpuNow(), time.Now()
	for _, a := range attackers {
		go func(a host.Host) {
			k := 0
			for time.Since(t0) < dur {
				if abortAfterAsk(a, wid, req) {
					k++
				}
			}
			done <- k
		}(a)
	}
	total := 0
	for range attackers {
		total += <-done
	}
	el, cpu := time.Since(t0), cpuNow()-cpu0
	t.Logf("%d aborted admissions in %v (%.1f/s): %d MB read (and, unless already checked, hashed) and validated by the worker (%.0f MB/s); process CPU %v (%.2f cores); attacker sent ~%d bytes of headers each",
		total, el, float64(total)/el.Seconds(), int64(total)*64, float64(total)*64/el.Seconds(), cpu, cpu.Seconds()/el.Seconds(), sent)
	if total > 10 {
		t.Errorf("one machine made the worker hash %d x 64 MiB in %v for %d-byte requests, with no job run and no budget", total, el, sent)
	}
}

// abortAfterAsk sends req, waits for the admission and the worker's SendInput, then resets.
func abortAfterAsk(h host.Host, p peer.ID, req *protocol.JobRequest) bool {
	s, err := h.NewStream(context.Background(), p, protocol.JobID)
	if err != nil {
		return false
	}
	defer s.Reset()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if protocol.WriteMsg(s, req) != nil {
		return false
	}
	var admit protocol.JobAdmit
	if protocol.ReadMsg(s, &admit, protocol.MaxControlMsg) != nil || admit.Err() != nil {
		time.Sleep(5 * time.Millisecond)
		return false
	}
	var res protocol.JobResult
	if protocol.ReadMsg(s, &res, protocol.MaxJobResult) != nil || !res.SendInput {
		return false
	}
	return true
}

// TestReviewHeldInfoSigning measures how many signed offers one peer can force with its 4
// info streams: each costs the worker an Ed25519 signature and a stream, the attacker a
// stream; proportionate (see the log), so it held.
func TestReviewHeldInfoSigning(t *testing.T) {
	ctx := context.Background()
	g := newGrid(t, WorkerConfig{Runner: sandboxLike})
	a := newHost(t)
	if err := a.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
		t.Fatal(err)
	}
	wid := g.hosts[0].ID()
	done := make(chan int)
	t0, cpu0 := time.Now(), cpuNow()
	for range 4 {
		go func() {
			k := 0
			for time.Since(t0) < 2*time.Second {
				s, err := a.NewStream(ctx, wid, protocol.InfoID)
				if err != nil {
					continue
				}
				protocol.WriteMsg(s, &protocol.InfoRequest{Nonce: nonce()})
				var resp protocol.InfoResponse
				if protocol.ReadMsg(s, &resp, protocol.MaxControlMsg) == nil && resp.Offer != nil {
					k++
				}
				s.Close()
			}
			done <- k
		}()
	}
	n := 0
	for range 4 {
		n += <-done
	}
	el, cpu := time.Since(t0), cpuNow()-cpu0
	t.Logf("one peer, 4 streams: %d signed offers in %v (%.0f/s); whole process (attacker+worker) CPU %v = %.0f µs per offer", n, el, float64(n)/el.Seconds(), cpu, float64(cpu.Microseconds())/float64(max(n, 1)))
}

// holdAdmitted opens a job stream from h, for the binary testBinary of CID c and an inline input in with the
// largest wall limit the worker allows, waits until the worker asks for the input, then
// sends send bytes of the input (all but the end) and holds the stream open.
// It returns the stream (to be reset by the caller) or nil.
func holdAdmitted(t *testing.T, h host.Host, p peer.ID, c cid.Cid, in []byte, send int) network.Stream {
	t.Helper()
	s, err := h.NewStream(context.Background(), p, protocol.JobID)
	if err != nil {
		return nil
	}
	s.SetDeadline(time.Now().Add(10 * time.Second))
	req := &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: nonce(), InputSize: uint64(len(in)), InputInline: true, InputCid: cids.Sum(in).Bytes(),
		Limits: &protocol.Limits{WallMs: uint64((30 * time.Minute).Milliseconds())}}
	var admit protocol.JobAdmit
	var res protocol.JobResult
	if protocol.WriteMsg(s, req) != nil || protocol.ReadMsg(s, &admit, protocol.MaxControlMsg) != nil || admit.Err() != nil ||
		protocol.ReadMsg(s, &res, protocol.MaxJobResult) != nil || !res.SendInput {
		s.Reset()
		return nil
	}
	if send > 0 {
		s.Write(in[:min(send, len(in)-1)]) // the input is raw
	}
	s.SetDeadline(time.Time{})
	return s
}

// TestReviewFindingSlotsHeldWaitingForInput: two fresh identities (SlotsPerPeer is half the
// slots, so two always suffice, however many slots the worker has) each get admitted for a
// 1-byte inline input with the largest wall limit, and never send the input. The worker
// waits for it until the stream deadline set at admission: FetchTimeout + BlobTimeout(1) +
// Wall + ReplyTimeout = 5 min + 30 s + 30 min + 60 s = 36.5 min, holding the slot, running
// nothing and using no CPU the attacker pays for. Measured: both slots held, an honest job
// refused BUSY, still so 10 s later; each request cost the attacker ~150 bytes.
//
// Suggested fix: a short deadline for the input phase (BlobTimeout(inputSize) from the
// moment the worker asks), the Wall budget only from the job's start; count slots held per
// IP prefix / connection rather than per peer ID; and a per-peer budget of admissions.
//
// Held (after): the input phase has its own deadline from the moment the worker asks,
// inputTimeout = 5 s + the input at 1 MiB/s; the wall budget's deadline is set when the run
// starts. Measured: both slots taken back ~5 s after the ask, the honest job 10 s later ran
// (no BUSY); each identity's missed input also counts as an abandoned job. (Slots are still
// counted per peer ID, not per IP prefix.)
func TestReviewHeldSlotsHeldWaitingForInput(t *testing.T) {
	ctx := context.Background()
	g := newGrid(t, WorkerConfig{Runner: echo, Slots: 2})
	wid := g.hosts[0].ID()
	c, _ := g.stores[0].Put(ctx, testBinary) // a binary the worker holds
	var held []network.Stream
	for range 2 {
		a := newHost(t)
		if err := a.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
			t.Fatal(err)
		}
		if s := holdAdmitted(t, a, wid, c, []byte{1}, 0); s != nil {
			held = append(held, s)
			defer s.Reset()
		}
	}
	time.Sleep(10 * time.Second)
	honest := newHost(t)
	if err := honest.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
		t.Fatal(err)
	}
	_, err := rawJob(t, honest, wid, &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: uint64(len(testBinary)), Nonce: nonce()})
	t.Logf("2 identities hold %d admitted streams, Running=%d after 10 s; honest job: %v", len(held), g.workers[0].Running(), err)
	if protocol.CodeOf(err) == protocol.Code_BUSY {
		t.Errorf("two identities that never send their 1-byte input keep every slot (deadline ~36 min); honest job refused: %v", err)
	}
}

// TestReviewHeldInlineInputMemory: 8 identities x 4 job streams each ask for 16 MiB of inline
// input; every admitted one sends all but the last byte and holds. Admission is bounded by
// slots (2), so the worker holds at most 2 partial inputs: heap growth in the log
// (process-wide, attackers' buffers included) stays within 2 x 16 MiB plus slack.
func TestReviewHeldInlineInputMemory(t *testing.T) {
	ctx := context.Background()
	g := newGrid(t, WorkerConfig{Runner: echo, Slots: 2})
	wid := g.hosts[0].ID()
	c, _ := g.stores[0].Put(ctx, testBinary)
	in := make([]byte, 16<<20)
	rand.Read(in)
	h0 := heapNow()
	admitted := 0
	for range 8 {
		a := newHost(t)
		if err := a.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			if s := holdAdmitted(t, a, wid, c, in, len(in)+8); s != nil {
				admitted++
				defer s.Reset()
			}
		}
	}
	time.Sleep(2 * time.Second)
	grow := int64(heapNow()) - int64(h0)
	t.Logf("32 streams asked: %d admitted, Running=%d, heap +%d MiB", admitted, g.workers[0].Running(), grow>>20)
	if admitted > 2 || grow > 80<<20 {
		t.Errorf("admitted %d, heap +%d MiB", admitted, grow>>20)
	}
}

func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestReviewHeldBlobServeAbort: one peer asks for a stored 64 MiB blob on its 4 blob streams
// and resets each right after the header. The worker opens, touches and starts to hash and
// send it; the reset stops it within the stream's flow-control window. The log gives
// requests/s and the CPU per request: what the worker does is bounded by what the transport
// lets it send before the reset, and the attacker must also receive that (proportionate).
func TestReviewHeldBlobServeAbort(t *testing.T) {
	ctx := context.Background()
	g := newGrid(t, WorkerConfig{Runner: echo})
	st := g.stores[0]
	big := make([]byte, 64<<20)
	rand.Read(big)
	c, err := st.Put(ctx, big)
	if err != nil {
		t.Fatal(err)
	}
	big = nil
	a := newHost(t)
	if err := a.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
		t.Fatal(err)
	}
	wid := g.hosts[0].ID()
	t0, cpu0 := time.Now(), cpuNow()
	done := make(chan [2]int64)
	for range 4 {
		go func() {
			var k, got int64
			for time.Since(t0) < 3*time.Second {
				s, err := a.NewStream(ctx, wid, protocol.BlobID)
				if err != nil {
					continue
				}
				protocol.WriteMsg(s, &protocol.BlobRequest{Cid: c.Bytes()})
				s.CloseWrite()
				if _, err := protocol.ReadBlobHeader(s, store.MaxBlobSize); err == nil {
					k++
					n, _ := s.Read(make([]byte, 1))
					got += int64(n)
				}
				s.Reset()
			}
			done <- [2]int64{k, got}
		}()
	}
	var n int64
	for range 4 {
		r := <-done
		n += r[0]
	}
	el, cpu := time.Since(t0), cpuNow()-cpu0
	t.Logf("one peer: %d aborted 64 MiB blob requests in %v (%.0f/s); process CPU %v (%.2f cores, %.1f ms per request)",
		n, el, float64(n)/el.Seconds(), cpu, cpu.Seconds()/el.Seconds(), float64(cpu.Milliseconds())/float64(max(n, 1)))
}

// TestReviewHeldHostileWorkerOutputs: three hostile workers answer every job with 16 MiB of
// output (the most the protocol allows) and a receipt over a different output CID. The
// submitter rejects each ("bad receipt"), does not accept their output, reaches the quorum
// on the two honest workers, and its heap stays bounded (measured: +2 MiB after).
// (Receipts of other jobs or nonces: covered by TestCheckReceipt.)
func TestReviewHeldHostileWorkerOutputs(t *testing.T) {
	huge := RunnerFunc(func(ctx context.Context, job sandbox.Job, lim sandbox.Limits) (sandbox.Result, error) {
		out := make([]byte, lim.MaxOutput)
		rand.Read(out)
		return sandbox.Result{Status: sandbox.StatusExited, Output: out, OutputCID: cids.Sum([]byte("another output"))}, nil
	})
	g := newGrid(t, WorkerConfig{Runner: huge}, WorkerConfig{Runner: huge}, WorkerConfig{Runner: huge}, WorkerConfig{Runner: upper}, WorkerConfig{Runner: upper})
	g.placeFirst(g.hosts[0].ID(), g.hosts[1].ID(), g.hosts[2].ID()) // the hostile ones first
	h0 := heapNow()
	rep, err := g.sub.Submit(context.Background(), Request{Binary: testBinary, Input: []byte("ok"), Replicas: 2, Quorum: 2, MaxReplicas: 5,
		Limits: sandbox.Limits{MaxOutput: protocol.MaxOutput}})
	grow := int64(heapNow()) - int64(h0)
	bad := 0
	if rep != nil {
		for _, r := range rep.Replicas {
			if errors.Is(r.Err, ErrBadReceipt) {
				bad++
			}
		}
	}
	t.Logf("submit: err=%v, output %q, %d replicas refused as bad, submitter heap +%d MiB after", err, func() string {
		if rep == nil || len(rep.Output) > 16 {
			return "(none/large)"
		}
		return string(rep.Output)
	}(), bad, grow>>20)
	if err != nil || string(rep.Output) != "OK" || bad != 3 {
		t.Errorf("hostile outputs: %v, %+v", err, rep)
	}
}

// TestReviewFindingBlobReadsRefreshLRU: the store's LRU is refreshed by every Open, and the
// blob protocol lets any peer Open any stored blob (reset after the header costs it ~40
// bytes). So a stranger that stored its own binaries keeps them "recently used" forever with
// a blob request each per eviction round, and the binaries honest submitters actually run
// are the ones evicted (and re-fetched, up to 64 MiB each, on their next job).
// Measured (quota 3 MiB, 1 MiB binaries): honest H run last, then the stranger's 2 blob
// requests, then the stranger's third binary: H was evicted, the stranger's 3 kept.
//
// Suggested fix: count only local job use (execute's get) for LRU, not serving; or evict by
// a frequency/owner-aware policy (per-peer share of the quota for binaries it brought).
//
// Held (after): only a job's use (Store.get, PutBinary) makes a blob recently used; Open,
// which serves blobs, does not. Measured: H kept; of the stranger's, a1 (its least recently
// run) evicted, a2 and a3 kept.
func TestReviewHeldBlobReadsRefreshLRU(t *testing.T) {
	ctx := context.Background()
	g := newGrid(t, WorkerConfig{Runner: sandboxLike, Validate: sandbox.Validate})
	st := g.stores[0]
	st.Quota = 3 << 20
	wid := g.hosts[0].ID()
	honest, hst := newHost(t), newStore(t)
	a, ast := newHost(t), newStore(t)
	for _, h := range []host.Host{honest, a} {
		if err := h.Connect(ctx, addrInfo(g.hosts[0])); err != nil {
			t.Fatal(err)
		}
	}
	serveCounting(honest, hst)
	serveCounting(a, ast)
	run := func(h host.Host, c cid.Cid) {
		t.Helper()
		req := &protocol.JobRequest{Arch: sandbox.ArchAMD64, JobCid: c.Bytes(), BinarySize: 1 << 20, Nonce: nonce()}
		res, err := rawJob(t, h, wid, req)
		for try := 0; err != nil && protocol.CodeOf(err) == protocol.Code_BUSY && try < 100; try++ {
			time.Sleep(time.Millisecond)
			res, err = rawJob(t, h, wid, req)
		}
		if err != nil || statusOf(res) != string(sandbox.StatusExited) {
			t.Fatalf("job: %+v %v", res, err)
		}
	}
	mk := func(s *store.Store) cid.Cid { c, _ := s.Put(ctx, jobELF(t, 1<<20-4096-9)); return c }
	a1, a2, a3, hc := mk(ast), mk(ast), mk(ast), mk(hst)
	run(a, a1)
	run(a, a2)
	time.Sleep(10 * time.Millisecond)
	run(honest, hc) // the honest binary is now the most recently run
	time.Sleep(10 * time.Millisecond)
	for _, c := range []cid.Cid{a1, a2} { // the stranger refreshes its own
		s, err := a.NewStream(ctx, wid, protocol.BlobID)
		if err != nil {
			t.Fatal(err)
		}
		protocol.WriteMsg(s, &protocol.BlobRequest{Cid: c.Bytes()})
		s.CloseWrite()
		protocol.ReadBlobHeader(s, store.MaxBlobSize)
		s.Reset()
	}
	time.Sleep(10 * time.Millisecond)
	run(a, a3)
	t.Logf("after: honest held=%v, stranger's held=%v %v %v", st.Has(hc), st.Has(a1), st.Has(a2), st.Has(a3))
	if !st.Has(hc) && st.Has(a1) && st.Has(a2) {
		t.Errorf("the honest, most recently run binary was evicted; the stranger's blobs, only read over the blob protocol, were kept")
	}
}

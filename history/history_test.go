package history

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	bolt "go.etcd.io/bbolt"

	"github.com/gridnode/gridnode/jobs"
)

func testCID(t testing.TB, s string) cid.Cid {
	mh, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, mh)
}

func ran(t testing.TB, i int) jobs.JobEvent {
	now := time.Now()
	return jobs.JobEvent{JobCID: testCID(t, "job"), InputCID: testCID(t, strconv.Itoa(i)), Start: now.Add(-time.Second), End: now,
		Verdict: jobs.Verdict{OutputCID: testCID(t, "out"), Status: "exited"}, CPU: 1500 * time.Millisecond, Wall: time.Second,
		Receipt: []byte("sealed")}
}

func open(t testing.TB, path string, opts Options) *DB {
	t.Helper()
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestPutAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	db := open(t, path, Options{})
	db.PutJob(ran(t, 1))
	failed := ran(t, 2)
	failed.Verdict, failed.CPU, failed.Receipt, failed.Err = jobs.Verdict{}, 0, nil, errors.New("cancelled")
	db.PutJob(failed)
	out := []byte("the output\n")
	rep := &jobs.Report{JobCID: testCID(t, "job"), InputCID: testCID(t, "in"),
		Verdict: jobs.Verdict{OutputCID: testCID(t, "out"), Status: "exited"}, Output: out,
		Replicas: []jobs.Replica{{Verdict: jobs.Verdict{Status: "exited"}, ReceiptValid: true}, {Verdict: jobs.Verdict{Status: "exited"}, Err: jobs.ErrDisagrees}}}
	db.PutSubmit(rep, nil)
	db.PutSubmit(nil, jobs.ErrNoWorkers)
	if err := db.Close(); err != nil { // Close flushes
		t.Fatal(err)
	}

	db = open(t, path, Options{}) // a restart
	defer db.Close()
	js, err := db.Jobs(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 4 {
		t.Fatalf("got %d jobs, want 4", len(js))
	}
	for i, j := range js {
		if want := uint64(4 - i); j.ID != want {
			t.Errorf("job %d: got id %d, want %d (newest first)", i, j.ID, want)
		}
	}
	sub := js[1]
	if sub.Kind != KindSubmitted || !sub.Accepted || len(sub.Replicas) != 2 || sub.Replicas[1].Error == "" || sub.OutputSize != len(out) {
		t.Errorf("submitted job: got %+v", sub)
	}
	if js[0].Accepted || js[0].ErrorKind != "no_workers" {
		t.Errorf("failed submit: got accepted %v, error_kind %q", js[0].Accepted, js[0].ErrorKind)
	}
	if js[2].Error != "cancelled" || js[3].CPUMs != 1500 || string(js[3].Receipt) != "sealed" || js[3].Start.IsZero() {
		t.Errorf("ran jobs: got %+v and %+v", js[2], js[3])
	}
	if got, err := db.Output(sub.ID); err != nil || string(got) != string(out) {
		t.Errorf("output: got %q, %v, want %q", got, err, out)
	}
	if _, err := db.Output(99); !errors.Is(err, ErrNotFound) {
		t.Errorf("output of a missing job: got %v, want ErrNotFound", err)
	}
	if j, err := db.Job("3"); err != nil || j.ID != 3 {
		t.Errorf("job 3: got %+v, %v", j, err)
	}
	if j, err := db.Job(testCID(t, "job").String()); err != nil || j.ID != 3 {
		t.Errorf("job by CID: got id %d, %v, want the newest with it, 3", j.ID, err)
	}
	for _, ref := range []string{"42", "bafy-nonsense", ""} {
		if _, err := db.Job(ref); !errors.Is(err, ErrNotFound) {
			t.Errorf("job %q: got %v, want ErrNotFound", ref, err)
		}
	}
	tot, err := db.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if tot.Ran != 2 || tot.RanOK != 1 || tot.CPUMs != 1500 || tot.Submitted != 2 || tot.Accepted != 1 || tot.Since.IsZero() {
		t.Errorf("totals: got %+v", tot)
	}
}

func TestRetention(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	db := open(t, path, Options{MaxJobs: 50, MaxBytes: 1 << 20})
	defer db.Close()
	big := make([]byte, 100<<10) // 8 fit in 1 MiB, and each is under MaxBytes/8
	for i := range 200 {
		db.PutJob(ran(t, i))
		if i%10 == 0 {
			db.PutSubmit(&jobs.Report{JobCID: testCID(t, "job"), Output: big}, nil)
			db.Flush()
		}
	}
	db.PutSubmit(&jobs.Report{Output: make([]byte, 200<<10)}, nil) // above MaxBytes/8: not kept
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	n, bytes, err := db.Usage()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := db.Jobs(0)
	if n > 50 || len(js) != n || bytes > 1<<20 {
		t.Errorf("got %d jobs (%d listed) of %d bytes, want at most 50 and 1 MiB", n, len(js), bytes)
	}
	if js[0].OutputKept || js[0].OutputSize != 200<<10 {
		t.Errorf("an output above MaxBytes/8: got kept %v, size %d", js[0].OutputKept, js[0].OutputSize)
	}
	if tot, _ := db.Totals(); tot.Ran != 200 || tot.Submitted != 21 {
		t.Errorf("totals after retention: got %+v, want 200 run, 21 submitted", tot)
	}
	// The file stays near the bound: bbolt reuses the pages retention freed.
	for i := range 300 {
		db.PutSubmit(&jobs.Report{Output: big}, nil)
		if i%20 == 0 {
			db.Flush()
		}
	}
	db.Flush()
	if fi, err := os.Stat(path); err != nil || fi.Size() > 8<<20 {
		t.Errorf("file size: got %d, want at most 8 MiB for a 1 MiB bound", fi.Size())
	}
}

func TestQueueDropsOldest(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), File), Options{QueueLen: 4})
	defer db.Close()
	// Hold the writer off: a read transaction does not block it, so take the queue's lock.
	db.mu.Lock()
	for i := range 10 {
		db.mu.Unlock()
		db.PutJob(ran(t, i))
		db.mu.Lock()
	}
	n := len(db.queue)
	db.mu.Unlock()
	db.Flush()
	// The writer may have taken some before the lock: at most 4 wait at once.
	if n > 4 {
		t.Errorf("queue: got %d waiting, want at most 4", n)
	}
	js, _ := db.Jobs(0)
	if uint64(len(js))+db.Dropped() != 10 {
		t.Errorf("got %d written and %d dropped, want 10 in all", len(js), db.Dropped())
	}
	if len(js) > 0 && js[0].InputCID != testCID(t, "9").String() {
		t.Errorf("newest kept: got input %s, want the last put", js[0].InputCID)
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	db := open(t, path, Options{})
	defer db.Close()
	start := time.Now()
	_, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: got %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second open took %v, want about its timeout", d)
	}
}

func TestGenericBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), File)
	db := open(t, path, Options{})
	for _, b := range []string{"jobs", "meta", "outputs", ""} {
		if err := db.Put(b, []byte("k"), []byte("v")); !errors.Is(err, ErrReserved) {
			t.Errorf("put in %q: got %v, want ErrReserved", b, err)
		}
	}
	s1, _ := db.Append("credit", []byte("one"))
	s2, _ := db.Append("credit", []byte("two"))
	if err := db.Put("credit", []byte("x"), []byte("three")); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = open(t, path, Options{})
	defer db.Close()
	var got []string
	db.ForEach("credit", func(k, v []byte) error { got = append(got, string(v)); return nil })
	if strings.Join(got, ",") != "one,two,three" || s2 != s1+1 {
		t.Errorf("got %v (seqs %d, %d), want one,two,three in order", got, s1, s2)
	}
	db.Delete("credit", key(s1))
	if v, _ := db.Get("credit", key(s1)); v != nil {
		t.Errorf("deleted key: got %q", v)
	}
	if v, _ := db.Get("credit", []byte("x")); string(v) != "three" {
		t.Errorf("get: got %q, want three", v)
	}
	if v, err := db.Get("none", []byte("x")); v != nil || err != nil {
		t.Errorf("missing bucket: got %q, %v", v, err)
	}
}

// TestSIGKILL kills a child process that is writing (re-executing this test binary) and
// checks that the database opens and holds every batch the child saw committed.
func TestSIGKILL(t *testing.T) {
	if path := os.Getenv("HISTORY_TEST_CHILD"); path != "" {
		db, err := Open(path, Options{})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		for i := 0; ; i++ {
			db.PutJob(ran(t, i))
			db.PutSubmit(&jobs.Report{Output: make([]byte, 4096)}, nil)
			if i%5 == 4 {
				if err := db.Flush(); err != nil {
					fmt.Println("error", err)
					os.Exit(1)
				}
				fmt.Println("committed", 2*(i+1))
			}
		}
	}
	path := filepath.Join(t.TempDir(), File)
	base := 0 // jobs kept from earlier rounds
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSIGKILL$")
		cmd.Env = append(os.Environ(), "HISTORY_TEST_CHILD="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		committed := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "committed" {
				committed, _ = strconv.Atoi(f[1])
				if committed >= 200 {
					break
				}
			} else if f[0] == "error" {
				t.Fatal(sc.Text())
			}
		}
		cmd.Process.Kill() // SIGKILL, mid-write
		cmd.Wait()
		db, err := Open(path, Options{LockTimeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("round %d: open after SIGKILL: %v", round, err)
		}
		js, err := db.Jobs(0)
		tot, _ := db.Totals()
		if err != nil || len(js) < base+committed || tot.Ran+tot.Submitted != int64(len(js)) {
			t.Errorf("round %d: got %d jobs (%v), totals %+v, want at least the %d committed", round, len(js), err, tot, base+committed)
		}
		base = len(js)
		if err := db.db.View(func(tx *bolt.Tx) error {
			for e := range tx.Check() {
				return e
			}
			return nil
		}); err != nil {
			t.Errorf("round %d: consistency check: %v", round, err)
		}
		db.Close()
	}
}

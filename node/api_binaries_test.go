package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/jobs"
)

// TestAPIStoredBinary checks POST /v1/binaries and /v1/submit's job_cid: a binary sent
// once runs by its CID; one the daemon does not hold is 404 (the client sends it again),
// a request with both or a malformed CID is 400, and a file that is not a job is refused
// and not stored.
func TestAPIStoredBinary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _ := openGrid(t, ctx, 3, echoRunner)
	n := ws[0]
	if _, err := n.ServeAPI(""); err != nil {
		t.Fatal(err)
	}
	c := &APIClient{Addr: filepath.Join(n.dir, APISocket)}
	status := func(err error) int {
		var ae *APIError
		if errors.As(err, &ae) {
			return ae.Status
		}
		return 0
	}

	got, err := c.Upload(ctx, fakeELF)
	if want := cids.Sum(fakeELF).String(); err != nil || got != want {
		t.Fatalf("upload: got %q, %v; want %s", got, err, want)
	}
	rep, err := c.SubmitStored(ctx, APISubmit{Request: jobs.Request{Input: []byte("by cid"), Replicas: 2}, JobCID: got})
	if err != nil || rep.Err() != nil || string(rep.Output) != "by cid" || rep.JobCID != got {
		t.Fatalf("submit by CID: got %+v, %v; want output %q of job %s", rep, err, "by cid", got)
	}

	junk := []byte("#!/bin/sh\necho not a job\n")
	if _, err := c.Upload(ctx, junk); status(err) != 422 {
		t.Errorf("upload of a script: got %v, want 422", err)
	}
	if n.jobs.store.Has(cids.Sum(junk)) {
		t.Error("a refused binary was stored")
	}
	for _, tt := range []struct {
		name string
		req  APISubmit
		want int
	}{
		{"not held", APISubmit{JobCID: cids.Sum([]byte("never sent")).String()}, 404},
		{"refused binary's CID", APISubmit{JobCID: cids.Sum(junk).String()}, 404},
		{"both", APISubmit{Request: jobs.Request{Binary: fakeELF}, JobCID: got}, 400},
		{"malformed", APISubmit{JobCID: "bafy-not-a-cid"}, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.SubmitStored(ctx, tt.req); status(err) != tt.want {
				t.Errorf("got %v, want HTTP %d", err, tt.want)
			}
		})
	}
}

// TestJoinPeers checks the peers a one-shot submit joins through: the bootstrap file's,
// then the remembered ones, none for a data dir without either.
func TestJoinPeers(t *testing.T) {
	dir := t.TempDir()
	if ps, err := JoinPeers(dir); err != nil || len(ps) != 0 {
		t.Fatalf("empty data dir: got %q, %v; want none", ps, err)
	}
	boot := "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLRPJAA5o6xqYqKTBg6DZJTe8WtPWgEQY3J1zRP8A2tSj"
	remembered := "/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWNezhQM9Z2UzRSrSd3sCaXTB6ygFSXa79ZHdPwo4wh5rS"
	os.WriteFile(filepath.Join(dir, BootstrapFile), []byte("# mine\n"+boot+"\nnot an address\n"), 0o600)
	os.WriteFile(filepath.Join(dir, PeersFile), []byte(remembered+"\n"), 0o600)
	ps, err := JoinPeers(dir)
	if want := []string{boot, remembered}; err != nil || !slices.Equal(ps, want) {
		t.Errorf("got %q, %v; want %q", ps, err, want)
	}
}

package node

import (
	"context"
	"errors"
	"github.com/gridnode/gridnode/sandbox"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestIdentityPersists(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	open := func() *Node {
		n, err := Open(ctx, Config{DataDir: dir, Loopback: true})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n1 := open()
	id1 := n1.ID()
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode: got %#o, want 0600", got)
	}
	n2 := open()
	defer n2.Close()
	if got := n2.ID(); got != id1 {
		t.Errorf("peer ID after restart: got %s, want %s", got, id1)
	}
}

func TestIdentityErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    error
	}{
		{"garbage", []byte("this is not a key"), 0o600, ErrBadIdentity},
		{"empty", nil, 0o600, ErrBadIdentity},
		{"world-readable", []byte("x"), 0o644, ErrIdentityPerm},
		{"group-writable", []byte("x"), 0o620, ErrIdentityPerm},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), IdentityFile)
			if err := os.WriteFile(p, tc.content, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadIdentity(p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("open", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(context.Background(), Config{DataDir: dir, Loopback: true})
		if !errors.Is(err, ErrBadIdentity) {
			t.Fatalf("got %v, want %v", err, ErrBadIdentity)
		}
	})
}

func TestDefaultDataDir(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", "/x/data")
	if got, _ := DefaultDataDir(); got != "/x/data/gridnode" {
		t.Errorf("got %q, want /x/data/gridnode", got)
	}
	t.Setenv("XDG_DATA_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got, _ := DefaultDataDir(); got != "/home/u/.local/share/gridnode" {
		t.Errorf("got %q, want /home/u/.local/share/gridnode", got)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreLauncher)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	boot, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true})
	if err != nil {
		t.Fatal(err)
	}
	bs := boot.AddrStrings()
	w, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Worker: true, Bootstrap: bs})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, Config{Ephemeral: true, Loopback: true, Bootstrap: bs})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := c.WaitWorkers(ctx, sandbox.ArchAMD64, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 {
		t.Errorf("got %d workers, want 2", len(ws))
	}
	for _, n := range []*Node{c, w, boot} {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	}
}

// ignoreLauncher leaves the sandbox's launcher threads out of goleak's checks: they live as
// long as the process, by design (a job's Pdeathsig follows the thread that started it),
// from the first test that runs a real sandbox on.
var ignoreLauncher = goleak.IgnoreTopFunction("github.com/gridnode/gridnode/sandbox.(*launcher).run")

package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestDataDirLock opens two nodes on one data dir: the second fails, naming the dir and the
// holder's pid, and the dir is free again once the first is closed.
func TestDataDirLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, Loopback: true}
	a, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, cfg)
	if err == nil {
		b.Close()
		t.Fatal("a second node opened the same data dir")
	}
	if !errors.Is(err, ErrDataDirInUse) {
		t.Errorf("got %v, want ErrDataDirInUse", err)
	}
	if want := fmt.Sprintf("data dir %s: in use by another node (pid %d)", dir, os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("got %q, want it to say %q", err, want)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("after the first node closed: %v", err)
	}
	c.Close()
}

// TestListenAddrInUse listens on a TCP and a QUIC port that another node holds: each is an
// error naming the address, not a shared port (TCP) or a port silently dropped (QUIC).
func TestListenAddrInUse(t *testing.T) {
	ctx := context.Background()
	a, err := Open(ctx, Config{Ephemeral: true, Listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var taken []string
	for _, addr := range a.Host().Addrs() {
		taken = append(taken, addr.String())
	}
	if len(taken) != 2 {
		t.Fatalf("got addresses %v, want one TCP and one QUIC", taken)
	}
	for _, addr := range taken {
		t.Run(addr, func(t *testing.T) {
			free := "/ip4/127.0.0.1/tcp/0" // the other transport's, on a free port
			if strings.Contains(addr, "/tcp/") {
				free = "/ip4/127.0.0.1/udp/0/quic-v1"
			}
			b, err := Open(ctx, Config{Ephemeral: true, Listen: []string{free, addr}})
			if err == nil {
				b.Close()
				t.Fatalf("a second node listens on %s too", addr)
			}
			if !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), addr) {
				t.Errorf("got %v, want ErrAddrInUse naming %s", err, addr)
			}
		})
	}
}

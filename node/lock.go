package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/sys/unix"
)

// LockFile is the file in the data dir that a running node holds an exclusive flock on;
// it holds the node's pid. The kernel drops the lock when the process dies.
const LockFile = "lock"

// lockDataDir takes the data dir's lock, or fails with ErrDataDirInUse naming the holder's
// pid. The lock is held until the returned file is closed.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock data dir: flock %s: %w", path, err)
		}
		holder := ""
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			holder = " (pid " + strings.TrimSpace(string(b)) + ")"
		}
		return nil, fmt.Errorf("data dir %s: %w%s; give each node its own data dir", dir, ErrDataDirInUse, holder)
	}
	// Only the holder writes, so a reader sees the last holder's pid or, briefly, nothing.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// checkPortsFree fails, naming the address, when a listen address's port is in use.
// libp2p's TCP transport listens with SO_REUSEPORT so that it can dial from its listen
// port (NAT traversal learns the node's public port that way), which lets a second node of
// the same user bind the same port and silently share its connections; and libp2p only
// warns when some of the listen addresses fail. A bind without SO_REUSEPORT sees every
// listener. Addresses that libp2p cannot parse or bind for other reasons (no IPv6) are
// left to it.
func checkPortsFree(listen []string) error {
	for _, s := range listen {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			continue
		}
		network, addr, err := manet.DialArgs(a)
		if err != nil || strings.HasSuffix(addr, ":0") {
			continue
		}
		switch network {
		case "tcp4", "tcp6":
			l, err := net.Listen(network, addr)
			if err == nil {
				l.Close()
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("listen %s: %w", s, ErrAddrInUse)
			}
		case "udp4", "udp6":
			c, err := net.ListenPacket(network, addr)
			if err == nil {
				c.Close()
			}
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("listen %s: %w", s, ErrAddrInUse)
			}
		}
	}
	return nil
}

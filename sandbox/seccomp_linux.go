package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// ErrInheritedSeccomp is returned when this process itself runs under a seccomp filter (a
// systemd unit's SystemCallFilter and kin, a container runtime's profile). Jobs inherit it,
// and the kernel refuses the stub's SECCOMP_MODE_STRICT under a filter: every job would
// end "exited 125", and workers that all end so would agree on it.
var ErrInheritedSeccomp = errors.New("sandbox: this process already runs under a seccomp filter, under which the kernel refuses strict mode to its jobs: run gridnode without one (no SystemCallFilter, SystemCallArchitectures, MemoryDenyWriteExecute, RestrictNamespaces, ... in its systemd unit, no container seccomp profile; see contrib/gridnode.service)")

// ownSeccomp caches CheckSeccomp's answer. A process can enter seccomp but never leave it,
// so a filtered answer is kept for good; an unfiltered one is read again after binfmtTTL,
// as the binfmt check is, so a check per job costs nothing measurable while a filter
// installed later is still seen within a second.
var ownSeccomp struct {
	mu       sync.Mutex
	filtered bool
	at       time.Time // when /proc/self/status last said unfiltered; zero: never
}

// CheckSeccomp reports ErrInheritedSeccomp when this process runs under seccomp (its
// /proc/self/status says Seccomp: 1 or 2).
func CheckSeccomp() error {
	ownSeccomp.mu.Lock()
	defer ownSeccomp.mu.Unlock()
	if ownSeccomp.filtered {
		return ErrInheritedSeccomp
	}
	if !ownSeccomp.at.IsZero() && time.Since(ownSeccomp.at) < binfmtTTL {
		return nil
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("sandbox: read /proc/self/status: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("Seccomp:")); ok {
			if mode := string(bytes.TrimSpace(v)); mode != "0" {
				ownSeccomp.filtered = true
				return ErrInheritedSeccomp
			}
			break
		}
	}
	// No Seccomp line: a kernel without seccomp, where the stub's prctl fails and says so.
	ownSeccomp.at = time.Now()
	return nil
}

//go:build linux

package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// checkBinfmtSystem checks the binfmt_misc instances exec can use, not only the one mounted
// at BinfmtDir: exec uses the instance of the nearest user namespace that has one, wherever
// it is mounted, and in the initial user namespace its handlers live while any mount of it
// exists, in any mount namespace. So it reads every binfmt_misc mount this process can see
// and, where it may mount, a private mount of its own user namespace's instance, which is
// exactly what exec consults. (In a user namespace with no instance of its own, that mount
// creates one, empty: the namespace's execs then no longer use its ancestors' handlers.)
func checkBinfmtSystem() error {
	read := 0
	seen := map[string]bool{}
	mounts, err := binfmtMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if seen[m.dev] {
			continue
		}
		seen[m.dev] = true
		if err := checkBinfmtDir(m.dir); err != nil {
			return err
		}
		read++
	}
	err = withPrivateBinfmt(checkBinfmtDir)
	switch {
	case err == nil:
		read++
	case !errors.Is(err, errNoPrivateMount):
		return err
	}
	if read == 0 && !initialUserNS() {
		return fmt.Errorf("%w: cannot read the handlers exec would use (no binfmt_misc mount is visible and this process may not mount one in its user namespace); run gridnode as root there or mount binfmt_misc", ErrBinfmt)
	}
	return nil
}

type binfmtMount struct{ dev, dir string }

// binfmtMounts lists the binfmt_misc mounts in /proc/self/mountinfo.
func binfmtMounts() ([]binfmtMount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	var ms []binfmtMount
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional fields] - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 || g[0] != "binfmt_misc" {
			continue
		}
		ms = append(ms, binfmtMount{dev: f[2], dir: unescapeMountinfo(f[4])})
	}
	return ms, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var errNoPrivateMount = errors.New("may not mount binfmt_misc")

// withPrivateBinfmt mounts this user namespace's binfmt_misc instance over BinfmtDir in a
// mount namespace of a throwaway thread and runs f on it there; the thread, and with it the
// namespace and the mount, end when f returns.
func withPrivateBinfmt(f func(dir string) error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- fmt.Errorf("%w: unshare: %v", errNoPrivateMount, err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- fmt.Errorf("%w: make mounts private: %v", errNoPrivateMount, err)
			return
		}
		if err := unix.Mount("binfmt_misc", BinfmtDir, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			done <- fmt.Errorf("%w: mount: %v", errNoPrivateMount, err)
			return
		}
		done <- f(BinfmtDir)
	}()
	return <-done
}

// initialUserNS reports whether this process is in the initial user namespace.
func initialUserNS() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	return err == nil && strings.Join(strings.Fields(string(b)), " ") == "0 0 4294967295"
}

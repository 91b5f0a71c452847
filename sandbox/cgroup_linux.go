//go:build linux

package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// A job that got past the stub has no RLIMIT_AS: the stub sets it. As a second bound, the
// launcher's thread joins a cgroup v1 memory cgroup of this process's own, so every
// job it starts is born in them (a forked child inherits its thread's cgroups; cgroup v1
// lets one thread join): what all running jobs use together is capped, and the kernel's
// OOM killer then kills a job, not the donor's programs. Cgroup v2 has no per-thread
// membership for these controllers and would need the daemon moved to a leaf cgroup; it is
// not done (docs/SECURITY.md).

const cgroupV1 = "/sys/fs/cgroup"

var jobCgroup struct {
	once   sync.Once
	err    error
	joined atomic.Bool
}

// joinJobCgroups caps the memory of every job the launcher thread tid starts at memMax
// bytes together. It runs once per process; later calls return the first one's result.
// (No pids cgroup: a total shared by all jobs would let a few fork-bombing jobs block every
// other job's start; RLIMIT_NPROC bounds each job uid instead.)
func joinJobCgroups(tid int, memMax int64) error {
	jobCgroup.once.Do(func() {
		jobCgroup.err = joinMemoryCgroup(tid, memMax)
		jobCgroup.joined.Store(jobCgroup.err == nil)
	})
	return jobCgroup.err
}

func joinMemoryCgroup(tid int, memMax int64) error {
	own, err := ownCgroupsV1()
	if err != nil {
		return err
	}
	base, ok := own["memory"]
	if !ok {
		return fmt.Errorf("no cgroup v1 memory controller")
	}
	dir := filepath.Join(cgroupV1, "memory", base, fmt.Sprintf("gridnode-jobs-%d", os.Getpid()))
	removeStaleJobCgroups(filepath.Dir(dir))
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return err
	}
	limit := []byte(strconv.FormatInt(memMax, 10))
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), limit, 0); err != nil {
		return fmt.Errorf("memory.limit_in_bytes: %w", err)
	}
	// Memory plus swap, where swap is accounted (the file exists only then).
	if err := os.WriteFile(filepath.Join(dir, "memory.memsw.limit_in_bytes"), limit, 0); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("memory.memsw.limit_in_bytes: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tasks"), []byte(strconv.Itoa(tid)), 0); err != nil {
		return fmt.Errorf("join %s: %w", dir, err)
	}
	return nil
}

// jobCgroupJoined reports whether the launcher's thread is in the job cgroups.
func jobCgroupJoined() bool { return jobCgroup.joined.Load() }

// ownCgroupsV1 maps each cgroup v1 controller to this process's cgroup path in it.
func ownCgroupsV1() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:path; v2 is "0::path"
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if _, err := os.Stat(filepath.Join(cgroupV1, c, "tasks")); err == nil {
				m[c] = parts[2]
			}
		}
	}
	return m, sc.Err()
}

// removeStaleJobCgroups removes the job cgroups of daemons that are gone (an empty cgroup
// can be removed; one still in use cannot).
func removeStaleJobCgroups(parent string) {
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		pid, ok := strings.CutPrefix(e.Name(), "gridnode-jobs-")
		if !ok || !e.IsDir() {
			continue
		}
		if n, err := strconv.Atoi(pid); err == nil && n != os.Getpid() {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", n)); os.IsNotExist(err) {
				os.Remove(filepath.Join(parent, e.Name()))
			}
		}
	}
}

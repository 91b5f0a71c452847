package jobs

import (
	"fmt"
	"runtime"
	"time"
)

// The donor's CPU cap (`gridnode run --cpu-share P`): the grid's jobs use at most P percent
// of the machine's cores together. The Runner enforces it (sandbox.Runner.CPUQuota, by
// duty cycling, where a job's wall limit counts only the time it was let run); the worker
// reports it in its offer and waits for jobs that long.

// CPUQuota is the cores that share percent of this machine's are: the Runner's quota.
// 0 for none.
func CPUQuota(share int) float64 {
	if share <= 0 || share >= 100 {
		return 0
	}
	return float64(share) / 100 * float64(runtime.NumCPU())
}

// wallStretch is how many times its wall limit a job may take on this worker: with every
// slot busy each job runs quota/slots of the time, at the least. 0 without a cap.
func (w *Worker) wallStretch() float64 {
	q := CPUQuota(w.cfg.CPUShare)
	if q == 0 {
		return 0
	}
	return max(1, float64(w.cfg.Slots)/q)
}

// stretchWall is the wall time a job with wall limit d may take on this worker.
func (w *Worker) stretchWall(d time.Duration) time.Duration {
	return stretched(d, w.wallStretch())
}

// MaxWallStretch bounds WallStretch: a submitter waits for a job at most this many times
// its wall limit (whatever a worker's offer claims), so a worker refuses to start with a
// cap that would stretch its jobs more: with every slot busy, each job must get at least a
// quarter of a core.
const MaxWallStretch = 4

// checkCPUShare refuses a share outside 0..100, or one too small for slots.
func checkCPUShare(share, slots int) error {
	if share < 0 || share > 100 {
		return fmt.Errorf("cpu share %d%%: want 1 to 100 (0: none)", share)
	}
	if q := CPUQuota(share); q > 0 && float64(slots)/q > MaxWallStretch {
		return fmt.Errorf("cpu share %d%% of %d cores is %.2f cores for %d slots: each job would get %.2f of a core, and at least 1/%d is needed (raise --cpu-share or lower --slots)",
			share, runtime.NumCPU(), q, slots, q/float64(slots), MaxWallStretch)
	}
	return nil
}

// stretched is how long a job of wall limit d may take on a worker of stretch s (see
// wallStretch; a submitter takes it from the offer, at most MaxWallStretch), plus a tenth:
// one duty period a second, since the cycle gives held time back a period late.
func stretched(d time.Duration, s float64) time.Duration {
	if !(s > 1) {
		return d
	}
	return time.Duration(float64(d)*min(s, MaxWallStretch)) + d/10
}

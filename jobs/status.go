package jobs

import (
	"time"

	"github.com/gridnode/gridnode/sandbox"
)

// WorkerStatus is a worker's state and policy now, for the node's status.
type WorkerStatus struct {
	Arch               string
	Slots, Busy        int // total, and held by admitted jobs
	SlotsPerPeer       int
	Max                sandbox.Limits // the most a job may ask for
	MaxInput           int64
	MaxLoad, Load      float64 // the donor's --max-load (0: none) and the non-grid load now
	LoadPaused, Paused bool    // refusing jobs because of the load, or the donor's pause
	Hours              string  // the donor's --hours ("": always)
	OffHours           bool    // refusing jobs outside them, until NextWindow
	NextWindow         time.Time
	CPUShare           int // the donor's --cpu-share in percent (0: none)
}

// Status returns the worker's state now.
func (w *Worker) Status() WorkerStatus {
	load, loadPaused := w.load.state()
	off, next := w.offHours()
	w.mu.Lock()
	busy := w.nrunning
	w.mu.Unlock()
	return WorkerStatus{Arch: w.cfg.Arch, Slots: w.cfg.Slots, Busy: busy, SlotsPerPeer: w.cfg.SlotsPerPeer,
		Max: w.policy, MaxInput: w.cfg.MaxInput, MaxLoad: w.cfg.MaxLoad, Load: load,
		LoadPaused: loadPaused, Paused: w.pause.paused(),
		Hours: w.cfg.Hours.String(), OffHours: off, NextWindow: next, CPUShare: w.cfg.CPUShare}
}

package node

import (
	"errors"
	"path/filepath"
	"time"

	"github.com/gridnode/gridnode/history"
	"github.com/gridnode/gridnode/jobs"
)

// HistoryFile is the history database in the data dir (package history).
const HistoryFile = history.File

// oneShotLockWait is how long a one-shot submit waits for the history's lock: a daemon
// holding it keeps it, and the submit goes unrecorded there (the daemon's own submits
// are recorded by the daemon).
const oneShotLockWait = 200 * time.Millisecond

// openHistory opens the history database and registers its events; before openJobs.
// A daemon opens DATA/history.db (Config.History overrides it) and fails if it cannot; an
// ephemeral node opens only Config.History, and goes without it if another process
// holds it.
func (n *Node) openHistory() error {
	path, wait := n.cfg.History, history.DefaultLockTimeout
	switch {
	case n.cfg.Ephemeral && path == "":
		return nil
	case n.cfg.Ephemeral:
		wait = oneShotLockWait
	case path == "":
		path = filepath.Join(n.dir, HistoryFile)
	}
	db, err := history.Open(path, history.Options{MaxJobs: n.cfg.HistoryMaxJobs, MaxBytes: n.cfg.HistoryMaxBytes,
		LockTimeout: wait, Logger: n.log.With("component", "history")})
	if err != nil {
		if n.cfg.Ephemeral {
			level := n.log.Warn
			if errors.Is(err, history.ErrLocked) {
				level = n.log.Debug // a daemon has it: the usual case
			}
			level("submit not recorded in the history", "err", err)
			return nil
		}
		return err
	}
	n.hist = db
	n.events = append(n.events, jobs.Events{Job: db.PutJob, Submitted: db.PutSubmit})
	return nil
}

// History is the node's history database; nil when it has none (an ephemeral node, or a
// one-shot submit whose data dir a daemon holds).
func (n *Node) History() *history.DB { return n.hist }

package sandbox

import (
	"io"
	"time"

	"github.com/ipfs/go-cid"
)

// Status says how a run ended. The spellings are part of the CLI and wire contract.
type Status string

const (
	StatusExited      Status = "exited"       // the job called exit; see Result.ExitCode
	StatusViolation   Status = "violation"    // the kernel killed it for a forbidden system call
	StatusCrashed     Status = "crashed"      // another fatal signal; see Result.Signal
	StatusCPULimit    Status = "cpu_limit"    // it used up its CPU time
	StatusWallTimeout Status = "wall_timeout" // it ran past its wall-clock limit
	StatusOutputLimit Status = "output_limit" // it wrote more than Limits.MaxOutput to stdout
	StatusRejected    Status = "rejected"     // it never started; see Result.Reason
)

// Job is one run's input.
type Job struct {
	Binary []byte    // the original, unpatched ELF file; its CID is the job's CID
	Stdin  io.Reader // fed to the job's stdin; nil means empty
	// CID is Binary's CID when the caller has checked that Binary hashes to it (a worker
	// has: the store or the fetch checked it), so that the image cache names the binary by
	// it instead of hashing it again on every run; unset, the cache hashes Binary.
	CID cid.Cid
}

// Result is how a run ended.
type Result struct {
	Status   Status
	ExitCode int           // when Status is StatusExited
	Signal   string        // the fatal signal's name ("SIGSEGV") when the process was killed
	Reason   string        // why, in words, for every status but StatusExited
	CPUTime  time.Duration // user + system time of the job
	WallTime time.Duration // from start to exit
	// FirstOutput is the time from starting the process to the job's first stdout byte
	// (zero if it wrote none): the start latency the sandbox adds to.
	FirstOutput time.Duration
	Output      []byte  // stdout, at most Limits.MaxOutput bytes
	OutputCID   cid.Cid // CID of Output
	Stderr      []byte  // the first StderrLimit bytes the job wrote to stderr
}

// StderrLimit is how much of a job's stderr is kept; the rest is read and dropped.
const StderrLimit = 64 << 10

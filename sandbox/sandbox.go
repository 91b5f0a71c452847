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

// Limits bound one run. Zero fields take the defaults of DefaultLimits.
type Limits struct {
	CPU       time.Duration // CPU time; enforced by RLIMIT_CPU in whole seconds, rounded up
	Wall      time.Duration // wall-clock time from start to exit
	Memory    int64         // bytes: page-rounded segments + stub + stack, checked before exec; RLIMIT_AS
	Stack     int64         // RLIMIT_STACK in bytes
	MaxOutput int64         // bytes of stdout kept; more ends the run with StatusOutputLimit
	MaxBinary int64         // size of the ELF file
}

// DefaultLimits returns the limits a worker enforces unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{
		CPU:       10 * time.Minute,
		Wall:      30 * time.Minute,
		Memory:    256 << 20,
		Stack:     8 << 20,
		MaxOutput: 16 << 20,
		MaxBinary: 64 << 20,
	}
}

// Or returns l with its zero fields taken from d. A zero Stack becomes the smaller of
// d.Stack and a quarter of the memory limit, so that small memory limits still work.
func (l Limits) Or(d Limits) Limits {
	if l.CPU <= 0 {
		l.CPU = d.CPU
	}
	if l.Wall <= 0 {
		l.Wall = d.Wall
	}
	if l.Memory <= 0 {
		l.Memory = d.Memory
	}
	if l.Stack <= 0 {
		l.Stack = min(d.Stack, l.Memory/4)
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = d.MaxOutput
	}
	if l.MaxBinary <= 0 {
		l.MaxBinary = d.MaxBinary
	}
	return l
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits { return l.Or(DefaultLimits()) }

// Job is one run's input.
type Job struct {
	Binary []byte    // the original, unpatched ELF file; its CID is the job's CID
	Stdin  io.Reader // fed to the job's stdin; nil means empty
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

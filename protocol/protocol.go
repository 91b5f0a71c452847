package protocol

import (
	"time"

	p2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/gridnode/gridnode/sandbox"
)

// Stream protocol IDs.
const (
	InfoID p2pproto.ID = "/gridnode/info/2.0.0"
	BlobID p2pproto.ID = "/gridnode/blob/1.0.0"
	// 2: the result's status and times only in the receipt; stderr. 3: the inline input and
	// the output travel raw after their headers, not inside messages.
	JobID p2pproto.ID = "/gridnode/job/3.0.0"
)

// Size caps, checked against every length prefix before anything is allocated.
const (
	MaxControlMsg = 64 << 10 // InfoRequest, InfoResponse, BlobRequest, BlobResponse, JobAdmit
	MaxEnvelope   = 16 << 10 // a sealed offer or receipt
	MaxInline     = 16 << 20 // input sent raw on the job stream
	MaxOutput     = 16 << 20 // output sent raw after a JobResult
	// MaxJobRequest caps a JobRequest: a header of CIDs, sizes, limits and a nonce (real
	// ones are about 200 bytes). Input never rides in it, so what a worker buffers for a
	// request it has not yet judged is at most this much per stream.
	MaxJobRequest = 4 << 10
	MaxStderr     = sandbox.StderrLimit                         // stderr returned inside a JobResult
	MaxJobResult  = MaxStderr + MaxEnvelope + MaxReason + 1<<10 // the output follows it raw
	MinNonce      = 16
	MaxNonce      = 64
	MaxText       = 64      // status, signal, arch
	MaxReason     = 4 << 10 // the free-text reason of a result
	MaxIsolation  = 256     // the isolation text of an offer
)

// Timeouts for stream deadlines.
const (
	InfoTimeout    = 10 * time.Second // a whole info exchange
	HeaderTimeout  = 5 * time.Second  // for a worker to receive a JobRequest once the stream opens
	RequestTimeout = 10 * time.Second // for a submitter to send its request and be admitted or refused
	ReplyTimeout   = 60 * time.Second // to send a reply of up to MaxJobResult
	FetchTimeout   = 5 * time.Minute  // the most a worker waits to fetch a binary and input
)

// BlobTimeout returns how long a blob transfer of size bytes may take: a base for the
// exchange plus 1 MiB/s, slow enough for home uplinks.
func BlobTimeout(size int64) time.Duration {
	return 30*time.Second + time.Duration(max(size, 0)>>20)*time.Second
}

// Deadliner is the part of network.Stream that sets deadlines.
type Deadliner interface {
	SetDeadline(time.Time) error
}

// SetDeadline sets s's read and write deadline to d from now.
func SetDeadline(s Deadliner, d time.Duration) error {
	return s.SetDeadline(time.Now().Add(d))
}

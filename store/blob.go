package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/protocol"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Server answers blob requests from a store's blobs: Handle is the blob protocol's stream
// handler, registered once by the node that owns the store.
type Server struct {
	st  *Store
	log *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

// NewServer returns a Server of st's blobs; log may be nil.
func NewServer(st *Store, log *slog.Logger) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{st: st, log: orDiscard(log), ctx: ctx, cancel: cancel}
}

// Handle answers one blob request on s; after Close it resets s.
func (sv *Server) Handle(s network.Stream) {
	sv.mu.Lock()
	if sv.closed {
		sv.mu.Unlock()
		s.Reset()
		return
	}
	sv.wg.Add(1)
	sv.mu.Unlock()
	defer sv.wg.Done()
	stop := context.AfterFunc(sv.ctx, func() { s.Reset() })
	defer stop()
	serveBlob(sv.ctx, s, sv.st, sv.log)
}

// Close resets the streams being served and waits for their handlers to return. The caller
// removes the handler from its host first.
func (sv *Server) Close() error {
	sv.mu.Lock()
	sv.closed = true
	sv.mu.Unlock()
	sv.cancel()
	sv.wg.Wait()
	return nil
}

// serveBlob answers one blob request: a BlobResponse header, then the raw bytes.
func serveBlob(ctx context.Context, s network.Stream, st *Store, log *slog.Logger) {
	protocol.SetDeadline(s, protocol.InfoTimeout)
	var req protocol.BlobRequest
	if err := protocol.ReadMsg(s, &req, protocol.MaxControlMsg); err != nil {
		log.Debug("blob request", "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	c, err := cids.Cast(req.Cid)
	if err != nil {
		err = fmt.Errorf("%w: %v", protocol.ErrBadRequest, err)
	}
	var rc io.ReadCloser
	var size int64
	if err == nil {
		rc, size, err = st.Open(ctx, c)
	}
	if err != nil {
		log.Debug("blob refused", "peer", s.Conn().RemotePeer(), "err", err)
		code, msg := protocol.Refusal(err)
		if protocol.WriteMsg(s, &protocol.BlobResponse{Code: code, Message: msg}) != nil {
			s.Reset()
			return
		}
		s.Close()
		return
	}
	defer rc.Close()
	protocol.SetDeadline(s, protocol.BlobTimeout(size))
	if err := protocol.WriteMsg(s, &protocol.BlobResponse{Size: uint64(size)}); err != nil {
		s.Reset()
		return
	}
	if _, err := io.CopyBuffer(s, rc, make([]byte, copyBuffer)); err != nil {
		// The receiver's own hash check fails too; a reset tells it sooner.
		log.Warn("serve blob", "cid", c, "peer", s.Conn().RemotePeer(), "err", err)
		s.Reset()
		return
	}
	s.Close()
}

// Fetch pulls blob c from peer p into st, hashing while it receives; a blob larger than
// maxSize (0 means MaxBlobSize) or whose bytes do not hash to c is discarded and nothing is
// stored.
func Fetch(ctx context.Context, h host.Host, p peer.ID, c cid.Cid, st *Store, maxSize int64) error {
	return withBlob(ctx, h, p, c, maxSize, func(r io.Reader, size int64) error {
		return st.PutReader(ctx, c, r, size)
	})
}

// FetchBytes pulls blob c from peer p into memory, hashing while it receives, and returns
// the verified bytes; nothing is stored. The bytes are read into one buffer of the size the
// peer announces, allocated before they arrive: a blob larger than maxSize (0 means
// MaxBlobSize) is refused first, so maxSize is what a peer can make the caller hold.
func FetchBytes(ctx context.Context, h host.Host, p peer.ID, c cid.Cid, maxSize int64) ([]byte, error) {
	var b []byte
	err := withBlob(ctx, h, p, c, maxSize, func(r io.Reader, size int64) error {
		v := cids.NewVerifier(c)
		var err error
		if b, err = protocol.ReadPayload(ctxReader{ctx, r}, size, v); err != nil {
			return err
		}
		return v.Verify()
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// withBlob asks p for blob c and calls recv with the body (exactly size bytes, at most
// maxSize; 0 means MaxBlobSize) and its size.
func withBlob(ctx context.Context, h host.Host, p peer.ID, c cid.Cid, maxSize int64, recv func(r io.Reader, size int64) error) error {
	if err := cids.Check(c); err != nil {
		return fmt.Errorf("fetch %s: %w", c, err)
	}
	if maxSize <= 0 || maxSize > MaxBlobSize {
		maxSize = MaxBlobSize
	}
	s, err := h.NewStream(ctx, p, protocol.BlobID)
	if err != nil {
		return fmt.Errorf("fetch %s from %s: %w", c, p, err)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	err = func() error {
		protocol.SetDeadline(s, protocol.InfoTimeout)
		if err := protocol.WriteMsg(s, &protocol.BlobRequest{Cid: c.Bytes()}); err != nil {
			return err
		}
		s.CloseWrite()
		size, err := protocol.ReadBlobHeader(s, maxSize)
		if err != nil {
			return err
		}
		protocol.SetDeadline(s, protocol.BlobTimeout(size))
		return recv(&exactReader{r: s, left: size}, size)
	}()
	if err != nil {
		s.Reset()
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return fmt.Errorf("fetch %s from %s: %w", c, p, err)
	}
	return s.Close()
}

// exactReader reads exactly left bytes from r: an early EOF is io.ErrUnexpectedEOF.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = io.ErrUnexpectedEOF
	} else if err == io.EOF {
		err = nil
	}
	return n, err
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

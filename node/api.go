package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/net/netutil"

	"github.com/gridnode/gridnode/cids"
	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
	"github.com/gridnode/gridnode/store"
)

// The local submit API lets `gridnode submit` go through a running daemon: POST
// /v1/submit with a JSON jobs.Request (APISubmit: or the CID of a binary stored before
// with POST /v1/binaries), answered 200 with a jobs.ReportJSON (the shape of
// `submit --json`) once the submit ran, whether it succeeded or not (the report then has
// error and error_kind), or a non-2xx status and the error as text for a request that
// could not be taken.
//
// It is served on a unix socket in the data dir that only the daemon's user may open (mode
// 0600). On loopback TCP, where any local user and any web page the donor opens can reach
// it, a request also needs the bearer token of DATA/api.token. Every request needs a
// loopback Host (a page behind a rebound DNS name sends its own), no Origin (browsers send
// one with every cross-origin POST) and a JSON body (a page can send a form or text/plain
// without asking first, not JSON).

// API files in the data dir.
const (
	APISocket    = "api.sock"  // the unix socket
	APITokenFile = "api.token" // the bearer token for TCP
)

// apiMaxBody bounds a request: the largest binary and inline input, base64-encoded in the
// JSON (4 bytes for every 3), plus 1 MiB for the rest of it.
var apiMaxBody = (sandbox.DefaultLimits().MaxBinary+protocol.MaxInline)*4/3 + 1<<20

// ListenAPI listens on addr, which must be a loopback address.
func ListenAPI(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("api address %q: %w", addr, err)
	}
	if !loopbackHost(host) {
		return nil, fmt.Errorf("api address %q: %w", addr, ErrAPIAddr)
	}
	return net.Listen("tcp", addr)
}

func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// listenSocket listens on the unix socket at path with mode 0600. A socket left there by a
// daemon that did not shut down is removed; a live one is ErrAPIInUse. The socket is bound
// in a fresh 0700 directory and renamed into place, so it is never reachable with a wider
// mode.
func listenSocket(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("api socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("api socket %s: %w", path, ErrAPIInUse)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("api socket: remove stale %s: %w", path, err)
		}
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".api-")
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	if len(bound) > maxSocketPath {
		return nil, fmt.Errorf("api socket %s: the data dir's path is too long for a unix socket (%d bytes with a temporary name, at most %d); use a shorter --data", path, len(bound), maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	ln.SetUnlinkOnClose(false) // the listener knows only the temporary name
	if err := os.Chmod(bound, 0o600); err == nil {
		err = os.Rename(bound, path)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	return ln, nil
}

// maxSocketPath is the longest path Linux binds a unix socket to (sun_path less its NUL).
const maxSocketPath = 107

// LoadAPIToken returns the token in the file at path, creating the file (mode 0600) with a
// fresh random token if it does not exist. A file others may read or write is an error.
func LoadAPIToken(path string) (string, error) {
	tok, err := ReadAPIToken(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	b := make([]byte, 32)
	rand.Read(b)
	tok = hex.EncodeToString(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return ReadAPIToken(path) // another process made it first
	}
	if err != nil {
		return "", fmt.Errorf("create api token: %w", err)
	}
	_, err = f.WriteString(tok + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write api token: %w", err)
	}
	return tok, nil
}

// ReadAPIToken reads the API token at path, which must not be readable or writable by others.
func ReadAPIToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%w: %s has mode %#o; run chmod 600 %s", ErrTokenPerm, path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("api token %s is empty", path)
	}
	return tok, nil
}

// ServeAPI serves the local submit API on the unix socket DataDir/api.sock and, when tcp is
// not "", on that loopback TCP address, where requests need the token of DataDir/api.token
// (created on first use). It returns the TCP address (nil without tcp). The servers stop on
// Close.
//
// The socket needs the token too: its mode keeps other users out, and the token keeps out
// what runs as the daemon's own user but cannot read its data dir, such as a job of a
// non-root daemon that got past the stub and seccomp (Landlock denies it the token file,
// not connecting to a socket by path).
func (n *Node) ServeAPI(tcp string) (net.Addr, error) {
	tok, err := LoadAPIToken(filepath.Join(n.dir, APITokenFile))
	if err != nil {
		return nil, err
	}
	sock, err := listenSocket(filepath.Join(n.dir, APISocket))
	if err != nil {
		return nil, err
	}
	n.serve(sock, requireToken(tok, n.APIHandler()), func() { os.Remove(filepath.Join(n.dir, APISocket)) })
	n.log.Info("submit API listening", "socket", filepath.Join(n.dir, APISocket))
	if tcp == "" {
		return nil, nil
	}
	ln, err := ListenAPI(tcp)
	if err != nil {
		return nil, err
	}
	n.serve(ln, requireToken(tok, n.APIHandler()), nil)
	n.log.Info("submit API listening", "addr", ln.Addr(), "token", filepath.Join(n.dir, APITokenFile))
	return ln.Addr(), nil
}

// API connection bounds. Without them, 3000 token-less connections that got their 401 and
// then idled stayed open for good (14.7 KiB and one goroutine each, and one of the daemon's
// fds): any local user could take every fd the daemon has. A connection past apiMaxConns
// waits in the kernel's backlog for a free one.
const (
	apiMaxConns    = 64
	apiIdleTimeout = 30 * time.Second
)

// apiReadTimeout covers the largest body at 1 MiB/s, far below loopback speed.
var apiReadTimeout = 10*time.Second + time.Duration(apiMaxBody>>20)*time.Second

// serve runs an HTTP server on ln until Close, which then calls cleanup.
func (n *Node) serve(ln net.Listener, h http.Handler, cleanup func()) {
	ln = netutil.LimitListener(ln, apiMaxConns)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       apiReadTimeout,
		IdleTimeout:       apiIdleTimeout,
	}
	n.apiMu.Lock()
	n.api = append(n.api, func() {
		srv.Close()
		if cleanup != nil {
			cleanup()
		}
	})
	n.apiMu.Unlock()
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("submit API stopped", "addr", ln.Addr(), "err", err)
		}
	}()
}

// closeAPI stops the API servers; their requests' contexts end.
func (n *Node) closeAPI() {
	n.apiMu.Lock()
	defer n.apiMu.Unlock()
	for _, stop := range n.api {
		stop()
	}
	n.api = nil
}

// APIHandler serves the local submit API with its Host, Origin and Content-Type checks;
// ServeAPI adds the token on TCP.
func (n *Node) APIHandler() http.Handler {
	mux := http.NewServeMux()
	var last lastBinary // the binary the latest job_cid named, shared by a batch's submits
	mux.HandleFunc("POST /v1/submit", func(w http.ResponseWriter, r *http.Request) {
		var body APISubmit
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, apiMaxBody)).Decode(&body); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		req := body.Request
		if body.JobCID != "" {
			bin, status, err := n.storedBinary(r.Context(), body, &last)
			if err != nil {
				http.Error(w, err.Error(), status)
				return
			}
			req.Binary = bin
		}
		// The body is read; a job may run longer than apiReadTimeout, and the deadline
		// left on the connection would end r.Context() when it passes.
		http.NewResponseController(w).SetReadDeadline(time.Time{})
		// A submit that ran is answered 200 with its report, failed or not: the report
		// carries the error, its kind and every replica, as submit --json prints them.
		rep, err := n.Submit(r.Context(), req)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(jobs.JSON(rep, err))
	})
	mux.HandleFunc("POST /v1/binaries", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Binary []byte `json:"binary"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, apiMaxBody)).Decode(&body); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		// Only what a worker would run is kept: the store holds validated binaries.
		if _, err := jobs.CheckBinary(body.Binary, sandbox.Limits{}); err != nil {
			http.Error(w, "binary: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		c, err := n.jobs.store.Put(r.Context(), body.Binary)
		if err != nil {
			http.Error(w, "store binary: "+err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, APIBinary{JobCID: c.String(), Size: int64(len(body.Binary))})
	})
	n.batchRoute(mux, &last) // api_batch.go
	n.controlRoutes(mux)     // control.go
	n.creditRoutes(mux)      // credit.go
	return LocalOnly(mux)
}

// APISubmit is the body of POST /v1/submit: a jobs.Request, whose binary may instead be
// named by JobCID, a binary this daemon holds (POST /v1/binaries stored it), so that a
// batch sends a large binary once and not with every input.
type APISubmit struct {
	jobs.Request
	JobCID string `json:"job_cid,omitempty"`
}

// APIBinary is the answer to POST /v1/binaries.
type APIBinary struct {
	JobCID string `json:"job_cid"`
	Size   int64  `json:"size"`
}

// lastBinary keeps the binary of the latest job_cid in memory for lastBinaryIdle, so that
// the concurrent submits of a batch share one copy of it rather than read it from the
// store each (a 32 MiB binary: a 32 MiB read and allocation per input).
type lastBinary struct {
	mu    sync.Mutex
	c     cid.Cid
	bin   []byte
	timer *time.Timer // drops bin once idle
}

const lastBinaryIdle = 30 * time.Second

func (l *lastBinary) get(c cid.Cid) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bin == nil || !l.c.Equals(c) {
		return nil
	}
	l.timer.Reset(lastBinaryIdle)
	return l.bin
}

func (l *lastBinary) set(c cid.Cid, bin []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c, l.bin = c, bin
	if l.timer == nil {
		l.timer = time.AfterFunc(lastBinaryIdle, func() {
			l.mu.Lock()
			l.bin = nil
			l.mu.Unlock()
		})
	}
	l.timer.Reset(lastBinaryIdle)
}

// storedBinary is the binary body.JobCID names, from last or the store, with the HTTP
// status of its error: 400 for a malformed request, 404 when the store does not hold it
// (never stored, or evicted since: the client uploads it again). The bytes are shared:
// the submitter only reads them.
func (n *Node) storedBinary(ctx context.Context, body APISubmit, last *lastBinary) ([]byte, int, error) {
	if len(body.Binary) > 0 {
		return nil, http.StatusBadRequest, errors.New("bad request: give Binary or job_cid, not both")
	}
	c, err := cid.Decode(body.JobCID)
	if err == nil {
		err = cids.Check(c)
	}
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("bad request: job_cid %q: %w", body.JobCID, err)
	}
	if bin := last.get(c); bin != nil {
		return bin, 0, nil
	}
	bin, err := n.jobs.store.Get(ctx, c, sandbox.DefaultLimits().MaxBinary)
	if errors.Is(err, store.ErrNotFound) {
		return nil, http.StatusNotFound, fmt.Errorf("binary %s: not held by the daemon: upload it with POST /v1/binaries", c)
	}
	if err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("binary %s: %w", c, err)
	}
	last.set(c, bin)
	return bin, 0, nil
}

// LocalOnly refuses what a web page or a rebound DNS name could send: a non-loopback Host,
// an Origin header, a POST without a JSON body. The API and `gridnode dashboard` serve
// behind it.
func LocalOnly(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackRequest(w, r) {
			return
		}
		if _, ok := r.Header["Origin"]; ok {
			http.Error(w, "forbidden: requests from web pages are not accepted", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				http.Error(w, "unsupported media type: want application/json", http.StatusUnsupportedMediaType)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// loopbackRequest answers 403 and reports false unless r has a loopback Host.
func loopbackRequest(w http.ResponseWriter, r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if !loopbackHost(strings.Trim(host, "[]")) {
		http.Error(w, "forbidden: Host must be localhost or a loopback address", http.StatusForbidden)
		return false
	}
	return true
}

// requireToken refuses requests without "Authorization: Bearer tok".
func requireToken(tok string, h http.Handler) http.Handler {
	want := []byte("Bearer " + tok)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("Connection", "close") // one who lacks the token gets no idle connection
			http.Error(w, "unauthorized: send Authorization: Bearer <the daemon's "+APITokenFile+">", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// APIClient submits jobs through a daemon's local API.
type APIClient struct {
	// Addr is the path of the unix socket (anything with a '/'), or HOST:PORT on loopback.
	Addr string
	// Token is sent as a bearer token: the daemon's api.token. Empty, for a socket, means
	// the api.token beside the socket.
	Token string
}

// SubmitAPI submits req through the API at addr (a socket path, whose token is read from
// beside it).
func SubmitAPI(ctx context.Context, addr string, req jobs.Request) (*jobs.ReportJSON, error) {
	return (&APIClient{Addr: addr}).Submit(ctx, req)
}

// Submit submits req through the API and returns the daemon's report; the submit's own
// failure is in the report (its Err), the error is for reaching the daemon.
func (c *APIClient) Submit(ctx context.Context, req jobs.Request) (*jobs.ReportJSON, error) {
	return c.SubmitStored(ctx, APISubmit{Request: req})
}

// SubmitStored is Submit of an APISubmit, whose binary may be named by its CID: an
// *APIError with Status 404 then means the daemon does not hold it (Upload it again).
func (c *APIClient) SubmitStored(ctx context.Context, req APISubmit) (*jobs.ReportJSON, error) {
	var rep jobs.ReportJSON
	if err := c.Post(ctx, "/v1/submit", req, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Upload stores a job binary in the daemon, for SubmitStored, and returns its CID.
func (c *APIClient) Upload(ctx context.Context, bin []byte) (string, error) {
	var b APIBinary
	if err := c.Post(ctx, "/v1/binaries", struct {
		Binary []byte `json:"binary"`
	}{bin}, &b); err != nil {
		return "", err
	}
	return b.JobCID, nil
}

// JoinPeers lists the peers a one-shot client of data dir dir can join the grid through:
// those of its bootstrap file, then the peers its daemon remembered (PeersFile), as full
// /p2p/ multiaddrs, at most the files' bounds.
func JoinPeers(dir string) ([]string, error) {
	boot, remembered, _, err := loadPeerFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ai := range slices.Concat(boot, remembered) {
		mas, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil {
			continue
		}
		for _, a := range mas {
			out = append(out, a.String())
		}
	}
	return out, nil
}

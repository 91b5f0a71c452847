package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/gridnode/gridnode/jobs"
	"github.com/gridnode/gridnode/protocol"
	"github.com/gridnode/gridnode/sandbox"
)

// The local submit API lets `gridnode submit --api` go through a running daemon: POST
// /v1/submit with a JSON jobs.Request, answered with a JSON jobs.Report, or a non-2xx status
// and the error as text.

// apiMaxBody bounds a request: the largest binary and inline input, base64-encoded in the
// JSON (4 bytes for every 3), plus 1 MiB for the rest of it.
var apiMaxBody = (sandbox.DefaultLimits().MaxBinary+protocol.MaxInline)*4/3 + 1<<20

// ErrAPIAddr is returned for an API address that is not on the loopback interface.
var ErrAPIAddr = errors.New("the submit API listens on loopback only (127.0.0.1:PORT or [::1]:PORT)")

// ListenAPI listens on addr, which must be a loopback address.
func ListenAPI(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("api address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("api address %q: %w", addr, ErrAPIAddr)
	}
	return net.Listen("tcp", addr)
}

// APIHandler serves the local submit API.
func (n *Node) APIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/submit", func(w http.ResponseWriter, r *http.Request) {
		var req jobs.Request
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, apiMaxBody)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		rep, err := n.Submit(r.Context(), req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rep)
	})
	return mux
}

// SubmitAPI submits req through the API of a daemon at addr.
func SubmitAPI(ctx context.Context, addr string, req jobs.Request) (*jobs.Report, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/submit", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("submit through %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("submit through %s: %s", addr, strings.TrimSpace(string(msg)))
	}
	var rep jobs.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return nil, fmt.Errorf("submit through %s: decode report: %w", addr, err)
	}
	return &rep, nil
}

package node

import (
	"io"
	"log/slog"
	"net/http"
	"testing"
)

// TestReview9MetricsRebinding: /metrics on loopback answered any Host, so a web page the
// donor opened could read it through a DNS name rebound to 127.0.0.1 (whether gridnode
// runs, its jobs, CPU donated, peers, libp2p's resource use). On loopback it answers only
// a loopback Host, as the API does; a scraper on this machine sends one.
func TestReview9MetricsRebinding(t *testing.T) {
	n := &Node{log: slog.New(slog.DiscardHandler)}
	n.metrics = newMetrics(n)
	ln, err := ListenMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ServeMetrics(ln); err != nil {
		t.Fatal(err)
	}
	defer n.closeAPI()
	get := func(host string) int {
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/metrics", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(ln.Addr().String()); got != http.StatusOK {
		t.Errorf("a loopback Host: got %d, want 200", got)
	}
	if got := get("rebound.example:80"); got != http.StatusForbidden {
		t.Errorf("a rebound DNS name's Host: got %d, want 403", got)
	}
}

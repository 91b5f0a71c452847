package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gridnode/gridnode/node"
)

// TestDashboardAuth asks a dashboard in front of a fake daemon what a browser tab of
// another site, a rebound DNS name, a local user without the URL (or with it from the
// browser's history, spent) and a server on another loopback port could ask.
func TestDashboardAuth(t *testing.T) {
	daemon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") != "Bearer daemon-token":
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		case r.URL.Path == "/v1/status":
			w.Write([]byte(`{"api_version":1}`))
		case r.URL.Path == "/v1/jobs" && r.URL.RawQuery == "limit=0":
			http.Error(w, "bad request: limit", http.StatusBadRequest)
		default:
			http.NotFound(w, r)
		}
	}))
	defer daemon.Close()
	api := &node.APIClient{Addr: strings.TrimPrefix(daemon.URL, "http://"), Token: "daemon-token"}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8123}
	d := newDashboard(api, addr)
	pre := d.prefix
	if !strings.HasPrefix(pre, "/d/") || len(pre) != len("/d/")+32+1 || !strings.HasSuffix(pre, "/") {
		t.Fatalf("got prefix %q, want /d/ and 32 hex digits and /", pre)
	}
	if u := d.url(); u != "http://127.0.0.1:8123"+pre+"?token="+d.token {
		t.Fatalf("got URL %q", u)
	}

	// The URL's token, once: a cookie of another secret, only for the prefix, and a
	// redirect that drops the token.
	do := func(path string, c *http.Cookie) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8123"+path, nil)
		if c != nil {
			r.AddCookie(c)
		}
		w := httptest.NewRecorder()
		d.ServeHTTP(w, r)
		return w
	}
	if w := do(pre+"?token="+strings.Repeat("0", len(d.token)), nil); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "open the URL") {
		t.Errorf("a wrong token: got %d %s, want 401", w.Code, w.Body)
	}
	if w := do("/?token="+d.token, nil); w.Code != http.StatusNotFound || len(w.Result().Cookies()) != 0 {
		t.Errorf("the token without the prefix: got %d, cookies %v, want 404 and none", w.Code, w.Result().Cookies())
	}
	w := do(pre+"?token="+d.token, nil)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != pre {
		t.Fatalf("the URL: got %d to %q, want 303 to %s", w.Code, w.Header().Get("Location"), pre)
	}
	cs := w.Result().Cookies()
	if len(cs) != 1 || cs[0].Name != "gridnode-dashboard-8123" || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("got cookies %v, want gridnode-dashboard-8123, HttpOnly, SameSite=Strict", cs)
	}
	if cs[0].Path != pre {
		t.Errorf("got the cookie's Path %q, want the prefix %s", cs[0].Path, pre)
	}
	if cs[0].Value == d.token || len(cs[0].Value) < 32 {
		t.Errorf("got the cookie %q, want a secret other than the URL's token %q", cs[0].Value, d.token)
	}
	cookie := &http.Cookie{Name: cs[0].Name, Value: cs[0].Value}
	if w := do(pre+"?token="+d.token, nil); w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 {
		t.Errorf("the URL again: got %d, cookies %v, want 401 and none", w.Code, w.Result().Cookies())
	}
	if w := do(pre+"?token="+d.token, cookie); w.Code != http.StatusUnauthorized {
		t.Errorf("the URL again, with the cookie: got %d, want 401", w.Code)
	}
	// The secrets of the file a browser is opened on: only this user reads it.
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	dir, file, err := writeRedirect(d.url())
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {file, 0o600}} {
		if fi, err := os.Stat(c.path); err != nil || fi.Mode() != c.mode {
			t.Errorf("%s: got mode %v (%v), want %v", c.path, fi.Mode(), err, c.mode)
		}
	}
	if filepath.Dir(dir) != os.Getenv("XDG_RUNTIME_DIR") {
		t.Errorf("got the file in %s, want it in $XDG_RUNTIME_DIR", dir)
	}
	page, _ := os.ReadFile(file)
	if !strings.Contains(string(page), `http-equiv="refresh" content="0;url=`+d.url()+`"`) {
		t.Errorf("the file does not redirect to %s:\n%s", d.url(), page)
	}

	tests := []struct {
		name   string
		path   string
		cookie *http.Cookie
		header map[string]string
		want   int
		body   string // in the answer
	}{
		{"no cookie", pre, nil, nil, http.StatusUnauthorized, ""},
		{"no cookie for data", pre + "v1/status", nil, nil, http.StatusUnauthorized, ""},
		{"no cookie for assets", pre + "static/app.js", nil, nil, http.StatusUnauthorized, ""},
		{"the URL's token as the cookie", pre + "v1/status", &http.Cookie{Name: cookie.Name, Value: d.token}, nil, http.StatusUnauthorized, ""},
		{"the page", pre, cookie, nil, http.StatusOK, "<title>gridnode</title>"},
		{"an asset", pre + "static/app.js", cookie, nil, http.StatusOK, "REFRESH_MS"},
		{"no listing", pre + "static/", cookie, nil, http.StatusNotFound, ""},
		{"status", pre + "v1/status", cookie, nil, http.StatusOK, `"api_version":1`},
		{"not without the prefix", "/v1/status", cookie, nil, http.StatusNotFound, ""},
		{"not under another prefix", "/d/" + strings.Repeat("0", 32) + "/v1/status", cookie, nil, http.StatusNotFound, ""},
		{"no bearer token", pre + "v1/status", nil, map[string]string{"Authorization": "Bearer " + d.token}, http.StatusUnauthorized, ""},
		{"no bearer session", pre + "v1/status", nil, map[string]string{"Authorization": "Bearer " + cookie.Value}, http.StatusUnauthorized, ""},
		{"the daemon's error", pre + "v1/jobs?limit=0", cookie, nil, http.StatusBadRequest, "bad request: limit"},
		{"no credit", pre + "v1/credit", cookie, nil, http.StatusNoContent, ""},
		{"not a data path", pre + "v1/pause", cookie, nil, http.StatusNotFound, ""},
		{"a post", pre + "v1/status", cookie, map[string]string{"method": "POST", "Content-Type": "application/json"}, http.StatusMethodNotAllowed, ""},
		{"another site", pre + "v1/status", cookie, map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden, ""},
		{"a rebound name", pre + "v1/status", cookie, map[string]string{"Host": "evil.example:8123"}, http.StatusForbidden, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodGet
			if m := tt.header["method"]; m != "" {
				method = m
			}
			r := httptest.NewRequest(method, "http://127.0.0.1:8123"+tt.path, strings.NewReader("{}"))
			for k, v := range tt.header {
				if k == "Host" {
					r.Host = v
				} else if k != "method" {
					r.Header.Set(k, v)
				}
			}
			if tt.cookie != nil {
				r.AddCookie(tt.cookie)
			}
			w := httptest.NewRecorder()
			d.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("got %d, want %d: %s", w.Code, tt.want, w.Body)
			}
			if !strings.Contains(w.Body.String(), tt.body) {
				t.Errorf("got body %q, want it to contain %q", w.Body, tt.body)
			}
			if csp := w.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") {
				t.Errorf("got CSP %q, want default-src 'self'", csp)
			}
		})
	}
}

// TestDashboardChromium opens `gridnode dashboard` of a testnet node in headless
// Chromium: the page loads, shows the node's numbers, shows new ones after a job ran
// on the node, and logs no error (a CSP violation, a failed load, an exception). With
// GRIDNODE_DASHBOARD_PNG=FILE it writes its screenshot there (docs/dashboard.png).
func TestDashboardChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, starts a testnet and a browser")
	}
	chromium := findChromium(t)
	bin := gridnodeBinary(t)
	job := buildBehave(t, bin)
	dir, _, grid := startTestnetDir(t, bin, 3)
	data := filepath.Join(dir, "node-0")
	waitFor(t, 60*time.Second, "node 0 announced", func() bool {
		out, _, code := runBin(t, bin, "", "status", "--json", "--data", data)
		var st node.Status
		return code == 0 && json.Unmarshal([]byte(out), &st) == nil && st.Announced
	})
	url := startDashboard(t, bin, data)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := startBrowser(t, chromium)
	p, err := b.newPage(ctx, 1280, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.navigate(ctx, url); err != nil {
		t.Fatal(err)
	}
	type view struct {
		Conn, PeerID, JobsRun, CPU string
		Rows                       int
		Chart                      int // the chart's path elements
	}
	// Until the page has loaded (after the redirect that sets the cookie) the elements are
	// not there, or the document is being replaced: read then is an error.
	tryRead := func() (v view, err error) {
		err = p.eval(ctx, `(() => {
			const text = (id) => document.getElementById(id).textContent;
			return {Conn: text("conn"), PeerID: text("peer-id"), JobsRun: text("jobs-run"), CPU: text("cpu-donated"),
				Rows: document.querySelectorAll("#jobs tr").length, Chart: document.querySelectorAll("#chart path").length};
		})()`, &v)
		return v, err
	}
	read := func() view {
		v, err := tryRead()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var before view
	waitFor(t, 30*time.Second, "the page live", func() bool {
		v, err := tryRead()
		before = v
		return err == nil && v.Conn == "live"
	})
	// The address bar, and so the history, keeps no token: it is spent, and refused again.
	var href string
	if err := p.eval(ctx, "location.href", &href); err != nil || strings.Contains(href, "token") || !strings.HasPrefix(url, href+"?token=") {
		t.Errorf("got the page at %q (%v), want the printed URL %s without its token", href, err, url)
	}
	if r, err := http.Get(url); err != nil || r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the printed URL again: got %v (%v), want 401", r, err)
	} else {
		r.Body.Close()
	}
	st := statusOf(t, bin, data)
	if before.PeerID != st.PeerID || before.JobsRun != fmt.Sprint(st.JobsRun) || before.Chart != 2 {
		t.Errorf("got %+v, want peer %s, %d jobs run and a chart", before, st.PeerID, st.JobsRun)
	}
	// A job on all three nodes: node 0 runs a replica.
	if out, errOut, code := runBin(t, bin, "exit 0", slices.Concat([]string{"submit", "--timeout", "60s", "--replicas", "3", "--data", t.TempDir()}, grid, []string{job})...); code != 0 || out != "out" {
		t.Fatalf("submit: exit %d, stdout %q\n%s", code, out, errOut)
	}
	var after view
	want := fmt.Sprint(st.JobsRun + 1)
	waitFor(t, 30*time.Second, "the page showing the job", func() bool { after = read(); return after.JobsRun == want })
	if after.Rows != before.Rows+1 {
		t.Errorf("got %d rows of jobs, want %d", after.Rows, before.Rows+1)
	}
	if png := os.Getenv("GRIDNODE_DASHBOARD_PNG"); png != "" {
		// Jobs that take CPU, for a chart with something in it.
		for range 4 {
			runBin(t, bin, "spin", slices.Concat([]string{"submit", "--timeout", "60s", "--replicas", "3", "--wall", "1s", "--data", t.TempDir()}, grid, []string{job})...)
		}
		runBin(t, bin, "exit 0", "submit", "--timeout", "60s", "--api", "--data", data, job) // node 0's own
		want := fmt.Sprint(st.JobsRun + 5)
		waitFor(t, 30*time.Second, "the page showing the jobs", func() bool { return read().JobsRun == want && read().Rows >= 6 })
		defer writeScreenshot(t, ctx, p, png)
	} else {
		defer writeScreenshot(t, ctx, p, filepath.Join(t.TempDir(), "dashboard.png"))
	}
	if errs := b.errors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// writeScreenshot writes the page as PNG to path and checks it decodes.
func writeScreenshot(t *testing.T, ctx context.Context, p *page, path string) {
	t.Helper()
	b, err := p.screenshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil || cfg.Width != 1280 {
		t.Fatalf("screenshot: got %dx%d (%v), want a PNG 1280 pixels wide", cfg.Width, cfg.Height, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// startDashboard runs `gridnode dashboard --no-open` until the test ends and returns its URL.
func startDashboard(t *testing.T, bin, data string) string {
	t.Helper()
	cmd := exec.Command(bin, "dashboard", "--no-open", "--data", data)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "dashboard: "); ok {
				urlc <- u
			}
		}
		close(urlc)
	}()
	select {
	case u, ok := <-urlc:
		if !ok {
			t.Fatal("gridnode dashboard exited before it printed its URL")
		}
		return u
	case <-time.After(30 * time.Second):
		t.Fatal("gridnode dashboard printed no URL within 30s")
	}
	return ""
}

func statusOf(t *testing.T, bin, data string) node.Status {
	t.Helper()
	out, errOut, code := runBin(t, bin, "", "status", "--json", "--data", data)
	var st node.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	return st
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(100 * time.Millisecond) // a poll of other processes' state
	}
}

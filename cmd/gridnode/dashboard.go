package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"html"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/net/netutil"

	"github.com/gridnode/gridnode/node"
)

// DashboardCommand serves a web page of a running daemon's health, jobs, peers and credit.
type DashboardCommand struct{}

//go:embed dashboard
var dashboardAssets embed.FS

// Run executes the command.
func (c *DashboardCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gridnode dashboard", flag.ContinueOnError)
	data := fs.String("data", "", "the daemon's data `DIR`, with its socket and token (default $XDG_DATA_HOME/gridnode or ~/.local/share/gridnode)")
	apiAddr := fs.String("api", "", "the daemon's API at `ADDR`: a unix socket path, or the loopback HOST:PORT of 'gridnode run --api' (default DIR/api.sock)")
	listen := fs.String("listen", "127.0.0.1:0", "serve the page on loopback `HOST:PORT` (port 0: any free one)")
	noOpen := fs.Bool("no-open", false, "print the URL only; do not open a browser")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gridnode dashboard [flags]

Serves a web page of the running daemon ('gridnode run'): its health, the CPU it donated
over time, running and recent jobs, peers and credit, refreshed every 2 seconds. A browser
cannot open the daemon's unix socket, so this command serves the page on a loopback TCP
address and asks the daemon through its socket and token, read-only.

It prints a URL that carries a fresh random token, as Jupyter does, and on a desktop
(with $DISPLAY or $WAYLAND_DISPLAY and xdg-open) opens it unless --no-open, through a
private file that redirects to it (so no command line shows the token). The token works
once: the first load swaps it for a cookie of another secret, and every other request
needs that cookie. The page fetches nothing from elsewhere. Ctrl-C stops it.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseArgs(fs, args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() > 0 {
		return badUsage(fs, "no arguments expected, got %q", fs.Args())
	}
	api, err := apiClient(*apiAddr, *data)
	if err != nil {
		return err
	}
	var st node.Status
	if err := api.Get(ctx, "/v1/status", &st); err != nil {
		return err
	}
	ln, err := node.ListenAPI(*listen)
	if err != nil {
		return err
	}
	d := newDashboard(api, ln.Addr())
	srv := &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(netutil.LimitListener(ln, 64)) }()
	url := d.url()
	fmt.Println("dashboard:", url)
	if !*noOpen {
		dir, err := openBrowser(url)
		if dir != "" {
			defer os.RemoveAll(dir)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "gridnode: open the URL above in a browser:", err)
		}
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return nil
}

// openBrowser opens url with xdg-open on a desktop session, as Jupyter does: not url
// itself, which any local user could read on xdg-open's and the browser's command lines
// (/proc/PID/cmdline), but a file only this user can read that redirects to it. It
// returns the directory it made for the file ("" if none), to remove when done.
func openBrowser(url string) (dir string, err error) {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return "", errors.New("no desktop session ($DISPLAY, $WAYLAND_DISPLAY)")
	}
	xdgOpen, err := exec.LookPath("xdg-open")
	if err != nil {
		return "", err
	}
	dir, file, err := writeRedirect(url)
	if err != nil {
		return dir, err
	}
	cmd := exec.Command(xdgOpen, file)
	if err := cmd.Start(); err != nil {
		return dir, err
	}
	go cmd.Wait() // xdg-open returns once the browser has the file
	return dir, nil
}

// writeRedirect writes an HTML page that sends the browser on to url, in a new directory
// of mode 0700 ($XDG_RUNTIME_DIR's, else the temporary directory's) as a file of mode
// 0600, and returns both paths.
func writeRedirect(url string) (dir, file string, err error) {
	base := os.Getenv("XDG_RUNTIME_DIR")
	if base == "" {
		base = os.TempDir()
	}
	dir, err = os.MkdirTemp(base, "gridnode-dashboard-") // mode 0700
	if err != nil {
		return "", "", err
	}
	file = filepath.Join(dir, "open.html")
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return dir, "", err
	}
	u := html.EscapeString(url)
	_, err = fmt.Fprintf(f, `<!doctype html>
<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0;url=%s"><title>gridnode dashboard</title></head>
<body><p>Opening <a href="%s">the gridnode dashboard</a>…</p></body></html>
`, u, u)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return dir, file, err
}

// dashboard serves the page and its data, which it asks the daemon for, under a random
// path prefix (/d/RANDOM/).
//
// The token of its URL works once: the first load exchanges it for an HttpOnly,
// SameSite=Strict cookie holding another random secret (the session), and a redirect to
// the prefix without the token, so the browser's history keeps no secret that still
// works; a second use is refused. Every other request needs the cookie; there is no
// bearer token (a script asks the daemon's API, with the daemon's token). A browser's
// cookies are not kept apart by port, so the cookie's Path is the prefix, which a server
// on another loopback port does not know, and its name has the port in it, as Jupyter's
// does: two dashboards do not overwrite each other's. Behind it are the API's own checks
// (node.LocalOnly): a loopback Host, against DNS rebinding, and no Origin header, which a
// browser sends with every cross-origin request and none of the page's same-origin GETs.
type dashboard struct {
	api    *node.APIClient
	addr   net.Addr
	prefix string // "/d/RANDOM/"
	token  string // the URL's, one use
	cookie string
	h      http.Handler

	mu      sync.Mutex
	used    bool   // the token was exchanged
	session string // the cookie's value once it was
}

// dashboardData are the daemon's read-only paths the page may ask for.
var dashboardData = []string{"/v1/status", "/v1/peers", "/v1/jobs", "/v1/credit"}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newDashboard(api *node.APIClient, addr net.Addr) *dashboard {
	d := &dashboard{api: api, addr: addr, prefix: "/d/" + randomHex(16) + "/", token: randomHex(24), cookie: "gridnode-dashboard"}
	if _, port, err := net.SplitHostPort(addr.String()); err == nil {
		d.cookie += "-" + port
	}
	assets, _ := fs.Sub(dashboardAssets, "dashboard")
	static, _ := fs.Sub(assets, "static")
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+d.prefix+"{$}", d.index(assets))
	mux.Handle("GET "+d.prefix+"static/{name}", d.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, r.PathValue("name")) // one file: no directory listing
	})))
	for _, p := range dashboardData {
		mux.Handle("GET "+d.prefix+p[1:], d.auth(d.proxy(p)))
	}
	d.h = node.LocalOnly(mux)
	return d
}

// url is the address to open: it carries the token.
func (d *dashboard) url() string { return "http://" + d.addr.String() + d.prefix + "?token=" + d.token }

func (d *dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Nothing but this origin: no script, style, image or connection from elsewhere, and
	// no framing by another page.
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	d.h.ServeHTTP(w, r)
}

// authorized reports whether r carries the session's cookie.
func (d *dashboard) authorized(r *http.Request) bool {
	c, err := r.Cookie(d.cookie)
	if err != nil {
		return false
	}
	d.mu.Lock()
	session := d.session
	d.mu.Unlock()
	return session != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(session)) == 1
}

// exchange spends the URL's token: the session secret if tok is the token and was not
// spent before, else "".
func (d *dashboard) exchange(tok string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.used || subtle.ConstantTimeCompare([]byte(tok), []byte(d.token)) != 1 {
		return ""
	}
	d.used = true
	d.session = randomHex(24)
	return d.session
}

func (d *dashboard) auth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !d.authorized(r) {
			d.unauthorized(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (d *dashboard) unauthorized(w http.ResponseWriter) {
	http.Error(w, "unauthorized: open the URL 'gridnode dashboard' printed, in the browser that opened it first (its token works once); or restart 'gridnode dashboard' for a new one", http.StatusUnauthorized)
}

// index serves the page; a ?token= that is the unspent token sets the session's cookie
// and redirects to the prefix, without it.
func (d *dashboard) index(assets fs.FS) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := r.URL.Query().Get("token"); tok != "" {
			session := d.exchange(tok)
			if session == "" {
				d.unauthorized(w)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: d.cookie, Value: session, Path: d.prefix, HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, d.prefix, http.StatusSeeOther)
			return
		}
		if !d.authorized(r) {
			d.unauthorized(w)
			return
		}
		http.ServeFileFS(w, r, assets, "index.html")
	}
}

// proxy answers the data path p (served under the prefix) with the daemon's answer to it.
func (d *dashboard) proxy(p string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { d.proxyPath(w, r, p) }
}

func (d *dashboard) proxyPath(w http.ResponseWriter, r *http.Request, p string) {
	path := p
	if r.URL.RawQuery != "" {
		path += "?" + r.URL.RawQuery
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var body []byte
	err := d.api.Get(ctx, path, &body)
	var ae *node.APIError
	switch {
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound && p == "/v1/credit":
		// A daemon without credit: the page hides the panel, and the browser logs no
		// failed request.
		w.WriteHeader(http.StatusNoContent)
		return
	case errors.As(err, &ae):
		http.Error(w, ae.Msg, ae.Status)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

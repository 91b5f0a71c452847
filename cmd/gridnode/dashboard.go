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
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
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

It prints a URL that carries a fresh random token, as Jupyter does, and opens it on a
desktop (with $DISPLAY or $WAYLAND_DISPLAY and xdg-open) unless --no-open. Only that URL
opens the page: the browser swaps the token for a cookie, and every other request needs
it. The page fetches nothing from elsewhere. Ctrl-C stops it.

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
		if err := openBrowser(url); err != nil {
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

// openBrowser opens url with xdg-open on a desktop session.
func openBrowser(url string) error {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return errors.New("no desktop session ($DISPLAY, $WAYLAND_DISPLAY)")
	}
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		return err
	}
	cmd := exec.Command(path, url)
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait() // xdg-open returns once the browser has the URL
	return nil
}

// dashboard serves the page and its data, which it asks the daemon for.
//
// The token of its URL is exchanged on first load for an HttpOnly, SameSite=Strict cookie
// and a redirect that drops it from the address bar; every request needs the cookie (or
// the token as a bearer token, for scripts). A browser's cookies are not kept apart by
// port, so the cookie's name has the port in it, as Jupyter's does: two dashboards do not
// overwrite each other's. Behind it are the API's own checks (node.LocalOnly): a loopback
// Host, against DNS rebinding, and no Origin header, which a browser sends with every
// cross-origin request and none of the page's same-origin GETs.
type dashboard struct {
	api    *node.APIClient
	addr   net.Addr
	token  string
	cookie string
	h      http.Handler
}

// dashboardData are the daemon's read-only paths the page may ask for.
var dashboardData = []string{"/v1/status", "/v1/peers", "/v1/jobs", "/v1/credit"}

func newDashboard(api *node.APIClient, addr net.Addr) *dashboard {
	b := make([]byte, 24)
	rand.Read(b)
	d := &dashboard{api: api, addr: addr, token: hex.EncodeToString(b), cookie: "gridnode-dashboard"}
	if _, port, err := net.SplitHostPort(addr.String()); err == nil {
		d.cookie += "-" + port
	}
	assets, _ := fs.Sub(dashboardAssets, "dashboard")
	static, _ := fs.Sub(assets, "static")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.index(assets))
	mux.Handle("GET /static/{name}", d.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, r.PathValue("name")) // one file: no directory listing
	})))
	for _, p := range dashboardData {
		mux.Handle("GET "+p, d.auth(http.HandlerFunc(d.proxy)))
	}
	d.h = node.LocalOnly(mux)
	return d
}

// url is the address to open: it carries the token.
func (d *dashboard) url() string { return "http://" + d.addr.String() + "/?token=" + d.token }

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

// authorized reports whether r carries the token, in the cookie or as a bearer token.
func (d *dashboard) authorized(r *http.Request) bool {
	got := ""
	if c, err := r.Cookie(d.cookie); err == nil {
		got = c.Value
	} else if s, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = s
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(d.token)) == 1
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
	http.Error(w, "unauthorized: open the URL 'gridnode dashboard' printed (it carries the token)", http.StatusUnauthorized)
}

// index serves the page; a ?token= that matches sets the cookie and redirects to "/".
func (d *dashboard) index(assets fs.FS) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := r.URL.Query().Get("token"); tok != "" {
			if subtle.ConstantTimeCompare([]byte(tok), []byte(d.token)) != 1 {
				d.unauthorized(w)
				return
			}
			http.SetCookie(w, &http.Cookie{Name: d.cookie, Value: d.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		if !d.authorized(r) {
			d.unauthorized(w)
			return
		}
		http.ServeFileFS(w, r, assets, "index.html")
	}
}

// proxy answers a data path with the daemon's answer to it.
func (d *dashboard) proxy(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if r.URL.RawQuery != "" {
		path += "?" + r.URL.RawQuery
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var body []byte
	err := d.api.Get(ctx, path, &body)
	var ae *node.APIError
	switch {
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound && r.URL.Path == "/v1/credit":
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

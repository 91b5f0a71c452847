package node

// Issue 11 review, part two: attacks that need addresses that are not loopback (a LAN, a
// VPN, a relay), in network namespaces the tests create; the test binary runs itself again
// inside them in the role named by review11RoleEnv.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/zeroconf/v2"
	"github.com/miekg/dns"
	"github.com/multiformats/go-multiaddr"
)

const review11RoleEnv = "GRIDNODE_REVIEW11_ROLE"

// review11NS creates network namespaces for one test and removes them at its end.
type review11NS struct {
	t     *testing.T
	names []string
}

func newReview11NS(t *testing.T) *review11NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (ip netns add)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("needs ip from Debian's iproute2 (apt-get install -y iproute2): ", err)
	}
	return &review11NS{t: t}
}

func (n *review11NS) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// add creates a namespace with lo up and returns its name.
func (n *review11NS) add(short string) string {
	n.t.Helper()
	name := fmt.Sprintf("gn-r11-%s-%d", short, os.Getpid())
	n.ip("netns", "add", name)
	n.t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n.ip("-n", name, "link", "set", "lo", "up")
	return name
}

// link connects namespaces a and b with a veth pair with addresses (CIDR) aAddr and bAddr.
func (n *review11NS) link(a, aIf, aAddr, b, bIf, bAddr string) {
	n.t.Helper()
	n.ip("link", "add", aIf, "netns", a, "type", "veth", "peer", "name", bIf, "netns", b)
	n.ip("-n", a, "addr", "add", aAddr, "dev", aIf)
	n.ip("-n", b, "addr", "add", bAddr, "dev", bIf)
	n.ip("-n", a, "link", "set", aIf, "up")
	n.ip("-n", b, "link", "set", bIf, "up")
}

// child is the test binary run again in a namespace in a role; its stdout lines arrive on
// lines, and writing to in reaches its stdin.
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	mu    sync.Mutex
	all   []string
}

func startChild(t *testing.T, ns, test, role string, env ...string) *child {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), review11RoleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	c := &child{cmd: cmd, lines: make(chan string, 1024)}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if c.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.mu.Lock()
			c.all = append(c.all, sc.Text())
			c.mu.Unlock()
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		close(c.lines)
	}()
	t.Cleanup(func() { c.in.Close(); cmd.Process.Kill(); cmd.Wait() })
	return c
}

// waitLine waits up to d for a line starting with prefix and returns it ("" if none).
func (c *child) waitLine(d time.Duration, prefix string) string {
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return ""
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			return ""
		}
	}
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.all, "\n")
}

// review11Listen counts connections to addr and prints "ACCEPT addr" for each.
func review11Listen(t *testing.T, addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Printf("ACCEPT %s from %s\n", addr, c.RemoteAddr())
			c.Close()
		}
	}()
}

func waitStdin() { io.Copy(io.Discard, os.Stdin) }

// The mDNS lab: the donor's machine (ns "donor") is on a home LAN 192.168.77.0/24 with an
// attacker's device (ns "lan"), and has a second interface on 10.77.0.0/24, a VPN or a
// container bridge, with a host at 10.77.0.5 (ns "vpn") the LAN cannot reach.
const (
	r11DonorLAN = "192.168.77.2"
	r11Attacker = "192.168.77.3"
	r11DonorVPN = "10.77.0.1"
	r11VPNHost  = "10.77.0.5"
)

func mdnsLab(t *testing.T) (donor, lan, vpn string) {
	ns := newReview11NS(t)
	donor, lan, vpn = ns.add("donor"), ns.add("lan"), ns.add("vpn")
	ns.link(donor, "lan0", r11DonorLAN+"/24", lan, "eth0", r11Attacker+"/24")
	ns.link(donor, "vpn0", r11DonorVPN+"/24", vpn, "eth0", r11VPNHost+"/24")
	return donor, lan, vpn
}

// TestReview11MDNSOffLAN: a device on the donor's LAN answers mDNS with a made-up peer
// whose addresses are a host behind the donor's VPN (or a container on its docker bridge)
// and the donor's own addresses. lanPeers keeps every address "in a subnet of one of this
// machine's interfaces", not only the LAN the answer came from, and the machine's own
// addresses too, so the donor's node, whose reach is public, connects to them: a stranger on
// a café's Wi-Fi makes it dial into the donor's employer's network and into its own
// services bound to one interface (TCP SYN and the multistream header, QUIC Initials).
// Since the fix an answer counts only for the address it came from; the test checks that
// the donor dials that one (the answer was read) and no other.
func TestReview11MDNSOffLAN(t *testing.T) {
	switch os.Getenv(review11RoleEnv) {
	case "donor":
		review11Listen(t, r11DonorVPN+":6379")
		review11Listen(t, r11DonorLAN+":631")
		n, err := Open(context.Background(), Config{Ephemeral: true, MDNS: true, Listen: []string{"/ip4/0.0.0.0/tcp/0"}})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		fmt.Printf("READY reach=%s\n", n.cfg.Reach)
		waitStdin()
		return
	case "vpnhost":
		review11Listen(t, r11VPNHost+":6379")
		fmt.Println("READY")
		waitStdin()
		return
	case "attacker":
		k, _, _ := crypto.GenerateEd25519Key(nil)
		id, _ := peer.IDFromPrivateKey(k)
		review11Listen(t, r11Attacker+":4001") // the one address the answer may make the donor dial
		var txt []string
		for _, a := range []string{r11VPNHost + "/tcp/6379", r11DonorVPN + "/tcp/6379", r11DonorLAN + "/tcp/631", r11Attacker + "/tcp/4001"} {
			txt = append(txt, "dnsaddr=/ip4/"+a+"/p2p/"+id.String())
		}
		srv, err := zeroconf.RegisterProxy("review11", MDNSService, "local", 4001, "review11", []string{r11Attacker}, txt, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		fmt.Println("READY")
		waitStdin()
		return
	}
	donorNS, lanNS, vpnNS := mdnsLab(t)
	const name = "TestReview11MDNSOffLAN"
	vpnHost := startChild(t, vpnNS, name, "vpnhost")
	donor := startChild(t, donorNS, name, "donor")
	for _, c := range []*child{vpnHost, donor} {
		if c.waitLine(20*time.Second, "READY") == "" {
			t.Fatalf("a child did not start:\n%s", c.output())
		}
	}
	attacker := startChild(t, lanNS, name, "attacker")
	if attacker.waitLine(20*time.Second, "READY") == "" {
		t.Fatalf("the attacker did not start:\n%s", attacker.output())
	}
	got := make(chan string, 16)
	for _, c := range []*child{vpnHost, donor} {
		go func() {
			if l := c.waitLine(20*time.Second, "ACCEPT"); l != "" {
				got <- l
			}
		}()
	}
	select {
	case l := <-got:
		time.Sleep(500 * time.Millisecond) // let the other dials land, for the log
		t.Errorf("an mDNS answer from the LAN made the donor connect off the LAN: %s\nvpn host:\n%s\ndonor:\n%s", l, vpnHost.output(), donor.output())
	case <-time.After(20 * time.Second):
	}
	// The control: the answer was read, and its sender's own address dialled.
	if attacker.waitLine(10*time.Second, "ACCEPT") == "" {
		t.Errorf("the donor never dialled the answering device's own address: mDNS answers not read?\ndonor:\n%s", donor.output())
	}
}

// TestReview11MDNSMemory: zeroconf, under libp2p's mDNS, remembers every service instance
// it reported (sentEntries, with its TXT records) until the TTL the sender chose, and never
// bounds their number. A LAN device that sends answers for fresh instance names with a TTL
// of 68 years grows the donor's memory by the size of what it sends, for ever.
func TestReview11MDNSMemory(t *testing.T) {
	const packets, txtPer = 8000, 16 // 8000 x ~4 KiB
	switch os.Getenv(review11RoleEnv) {
	case "donor":
		n, err := Open(context.Background(), Config{Ephemeral: true, MDNS: true, Listen: []string{"/ip4/0.0.0.0/tcp/0"}})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		heap := func() uint64 {
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return m.HeapAlloc
		}
		before := heap()
		fmt.Println("READY")
		r := bufio.NewReader(os.Stdin)
		r.ReadString('\n') // the flood was sent
		time.Sleep(2 * time.Second)
		fmt.Printf("HEAP %d %d goroutines=%d\n", before, heap(), runtime.NumGoroutine())
		waitStdin()
		return
	case "attacker":
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(r11Attacker)}, &net.UDPAddr{IP: net.ParseIP("224.0.0.251"), Port: 5353})
		if err != nil {
			t.Fatal(err)
		}
		svc := MDNSService + ".local."
		pad := strings.Repeat("x", 240)
		for i := range packets {
			inst := fmt.Sprintf("r11-%06d.%s", i, svc)
			m := new(dns.Msg)
			m.Response, m.Authoritative = true, true
			hdr := func(name string, typ uint16) dns.RR_Header {
				return dns.RR_Header{Name: name, Rrtype: typ, Class: dns.ClassINET, Ttl: 1<<31 - 1}
			}
			var txt []string
			for j := range txtPer {
				txt = append(txt, fmt.Sprintf("junk%d=%s", j, pad))
			}
			m.Answer = []dns.RR{
				&dns.PTR{Hdr: hdr(svc, dns.TypePTR), Ptr: inst},
				&dns.SRV{Hdr: hdr(inst, dns.TypeSRV), Port: 4001, Target: "r11.local."},
				&dns.TXT{Hdr: hdr(inst, dns.TypeTXT), Txt: txt},
				&dns.A{Hdr: hdr("r11.local.", dns.TypeA), A: net.ParseIP(r11Attacker)},
			}
			b, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
			if i%5 == 0 {
				time.Sleep(time.Millisecond) // stay within the receiver's socket buffer
			}
		}
		fmt.Println("SENT")
		waitStdin()
		return
	}
	donorNS, lanNS, _ := mdnsLab(t)
	const name = "TestReview11MDNSMemory"
	donor := startChild(t, donorNS, name, "donor")
	if donor.waitLine(20*time.Second, "READY") == "" {
		t.Fatalf("the donor did not start:\n%s", donor.output())
	}
	attacker := startChild(t, lanNS, name, "attacker")
	if attacker.waitLine(60*time.Second, "SENT") == "" {
		t.Fatalf("the attacker did not finish:\n%s", attacker.output())
	}
	fmt.Fprintln(donor.in, "sent")
	l := donor.waitLine(30*time.Second, "HEAP")
	f := strings.Fields(l)
	if len(f) < 3 {
		t.Fatalf("no heap report:\n%s", donor.output())
	}
	before, _ := strconv.ParseUint(f[1], 10, 64)
	after, _ := strconv.ParseUint(f[2], 10, 64)
	grew := int64(after) - int64(before)
	t.Logf("donor heap %d -> %d bytes (+%.1f MiB) after %d mDNS answers of ~%d KiB; %s", before, after, float64(grew)/(1<<20), packets, txtPer*250/1024, f[3])
	if grew > 16<<20 {
		t.Errorf("a LAN device's mDNS answers grew the donor's heap by %.1f MiB, and it stays: want a bound", float64(grew)/(1<<20))
	}
}

// TestReview11RelayBudget: a relay node (--relay-service) lets any two peers that say they
// run gridnode relay any protocol (the ACL reads the forgeable agent version; the relay
// cannot see the protocol inside the circuit) and limits only each relayed connection (32
// MiB, 35 min): a circuit that hit the limit is reopened at once, so one pair of identities
// moves as much as it likes through a donor's uplink. And 16 IPv4 addresses (4
// reservations each) take all 64 reservations, after which honest home nodes cannot reserve.
// (Since the fix a peer's budget over time ends the reopening, and one /24 holds at most
// RelayReservationsPerPrefix reservations; the honest node is in another /24: one in the
// attacker's own /24 shares its bound.)
func TestReview11RelayBudget(t *testing.T) {
	const total = 3 * RelayData
	if os.Getenv(review11RoleEnv) == "relay" {
		relayBudget(t, total)
		return
	}
	ns := newReview11NS(t)
	relayNS := ns.add("relay")
	for i := 1; i <= 20; i++ {
		ns.ip("-n", relayNS, "addr", "add", fmt.Sprintf("10.5.0.%d/24", i), "dev", "lo")
	}
	ns.ip("-n", relayNS, "addr", "add", "10.6.0.1/24", "dev", "lo") // the relay's, and the honest node's /24
	ns.ip("-n", relayNS, "addr", "add", "10.6.0.20/24", "dev", "lo")
	c := startChild(t, relayNS, "TestReview11RelayBudget", "relay")
	c.cmd.Wait()
	out := c.output()
	if !strings.Contains(out, "--- PASS: TestReview11RelayBudget") {
		t.Errorf("in the relay's namespace:\n%s", out)
	} else {
		t.Logf("in the relay's namespace:\n%s", out)
	}
}

func relayBudget(t *testing.T, total int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	relay, err := Open(ctx, Config{Ephemeral: true, RelayService: true, Listen: []string{"/ip4/10.6.0.1/tcp/0"}, Reach: ReachLAN})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	relayAI := peer.AddrInfo{ID: relay.ID(), Addrs: relay.Host().Addrs()}
	stranger := func(ip string) host.Host {
		// Dial from ip itself: on lo the kernel would pick the relay's address for every
		// stranger (as it does for the honest node below, whose /24 that is).
		from := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/"+ip+"/tcp/0"), libp2p.UserAgent(userAgent),
			libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.NoTransports,
			libp2p.Transport(tcp.NewTCPTransport, tcp.WithDialerForAddr(func(multiaddr.Multiaddr) (tcp.ContextDialer, error) { return from, nil })))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		if err := h.Connect(ctx, relayAI); err != nil {
			t.Fatal(err)
		}
		return h
	}
	reserve := func(h host.Host) error {
		// The relay's ACL needs identify's agent version, which may lag.
		waitUntil(t, 10*time.Second, "the relay's identify of "+h.ID().String(), func() bool { return isGridPeer(relay.Host(), h.ID()) })
		_, err := client.Reserve(ctx, h, relayAI)
		return err
	}

	// Traffic that is not gridnode's, past the per-connection limit.
	a, b := stranger("10.5.0.2"), stranger("10.5.0.3")
	if err := reserve(b); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	b.SetStreamHandler("/not-gridnode/bulk/1.0.0", func(s network.Stream) {
		n, _ := io.Copy(io.Discard, s)
		got.Add(n)
		s.Close()
	})
	circuit := multiaddr.StringCast(fmt.Sprintf("%s/p2p/%s/p2p-circuit", relayAI.Addrs[0], relay.ID()))
	buf := make([]byte, 256<<10)
	start, circuits := time.Now(), 0
	for sent := int64(0); sent < total && ctx.Err() == nil; {
		a.Network().ClosePeer(b.ID())
		a.Peerstore().ClearAddrs(b.ID())
		if err := a.Connect(network.WithAllowLimitedConn(ctx, "r11"), peer.AddrInfo{ID: b.ID(), Addrs: []multiaddr.Multiaddr{circuit}}); err != nil {
			if circuits == 0 {
				t.Fatalf("circuit %d: %v", circuits+1, err)
			}
			fmt.Printf("CIRCUIT %d refused: %v\n", circuits+1, err)
			break
		}
		circuits++
		s, err := a.NewStream(network.WithAllowLimitedConn(ctx, "r11"), b.ID(), "/not-gridnode/bulk/1.0.0")
		if err != nil {
			if circuits == 1 {
				t.Fatalf("stream on circuit %d: %v", circuits, err)
			}
			fmt.Printf("STREAM on circuit %d refused: %v\n", circuits, err)
			break
		}
		for sent < total {
			n, err := s.Write(buf)
			sent += int64(n)
			if err != nil {
				break // the relay's per-connection limit
			}
		}
		s.Close()
	}
	for deadline := time.Now().Add(10 * time.Second); got.Load() <= 2*RelayData && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the last bytes in flight
	}
	fmt.Printf("RELAYED %d MiB of a non-gridnode protocol between one pair of strangers in %v over %d circuits\n", got.Load()>>20, time.Since(start).Round(time.Millisecond), circuits)
	if got.Load() > 2*RelayData {
		t.Errorf("one pair of strangers relayed %d MiB of a non-gridnode protocol, want at most a per-peer budget (2 x %d MiB)", got.Load()>>20, RelayData>>20)
	}

	// Reservations: 16 addresses x 4 identities.
	var held int
	for i := 4; i < 20 && held < 64; i++ {
		for range 4 {
			if reserve(stranger(fmt.Sprintf("10.5.0.%d", i))) == nil {
				held++
			}
		}
	}
	honest, err := Open(ctx, Config{Ephemeral: true, Listen: []string{"/ip4/10.6.0.20/tcp/0"}, Reach: ReachLAN, Bootstrap: []string{relay.AddrStrings()[0]}})
	if err != nil {
		t.Fatal(err)
	}
	defer honest.Close()
	err = reserve(honest.Host())
	var from []multiaddr.Multiaddr
	for _, c := range relay.Host().Network().ConnsToPeer(honest.ID()) {
		from = append(from, c.RemoteMultiaddr())
	}
	fmt.Printf("RESERVATIONS strangers hold %d (b holds 1); an honest node's reservation (from %v): %v\n", held, from, err)
	if err != nil {
		t.Errorf("strangers with 16 IPv4 addresses hold %d reservations and an honest home node is refused: %v", held+1, err)
	}
	if held+1 > RelayReservationsPerPrefix {
		t.Errorf("strangers in one /24 hold %d reservations, want at most %d", held+1, RelayReservationsPerPrefix)
	}
}

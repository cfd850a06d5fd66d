package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func TestReachableFrom(t *testing.T) {
	tests := []struct {
		address, spaces string
		lo4, lo6        bool
		own             string
	}{
		{"127.0.0.1:587", "127.0.0.0/8", true, false, ""},
		{"localhost:587", "127.0.0.0/8", true, false, ""},
		{"[::1]:587", "::1/128", false, true, ""},
		{"0.0.0.0:587", "0.0.0.0/0", true, false, ""},
		{":587", "0.0.0.0/0, ::/0", true, true, ""},
		{"[::]:587", "0.0.0.0/0, ::/0", true, true, ""},
		{"10.20.0.1:587", "0.0.0.0/0", false, false, "10.20.0.1"},
		{"[2001:db8::25]:587", "::/0", false, false, "2001:db8::25"},
		{"relay.example.com:587", "0.0.0.0/0, ::/0", false, false, ""},
	}
	for _, tc := range tests {
		r := reachableFrom(tc.address)
		own := ""
		if r.own.IsValid() {
			own = r.own.String()
		}
		if got := joinPrefixes(r.spaces); got != tc.spaces || r.loopback4 != tc.lo4 || r.loopback6 != tc.lo6 || own != tc.own {
			t.Errorf("reachableFrom(%s) = %s lo4=%v lo6=%v own=%q", tc.address, got, r.loopback4, r.loopback6, own)
		}
	}
}

func TestOutsideAddr(t *testing.T) {
	p := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	tests := []struct {
		nets  []netip.Prefix
		space netip.Prefix
		want  string // "" when none
	}{
		{nil, loopback4, "127.0.0.1"},
		{p("127.0.0.1/32"), loopback4, "127.0.0.2"}, // never 127.0.0.0, the network's own address
		{p("127.0.0.0/30"), loopback4, "127.0.0.4"},
		{p("127.0.0.0/8"), loopback4, ""},
		{p("127.0.0.0/9", "127.128.0.0/10", "127.192.0.0/11", "127.224.0.0/12", "127.240.0.0/13", "127.248.0.0/14", "127.252.0.0/15", "127.254.0.0/16",
			"127.255.0.0/17", "127.255.128.0/18", "127.255.192.0/19", "127.255.224.0/20", "127.255.240.0/21", "127.255.248.0/22", "127.255.252.0/23",
			"127.255.254.0/24", "127.255.255.0/25", "127.255.255.128/26", "127.255.255.192/27", "127.255.255.224/28", "127.255.255.240/29",
			"127.255.255.248/30", "127.255.255.252/31", "127.255.255.254/32"), loopback4, ""}, // only the broadcast address is left
		{p("10.0.0.0/8"), allIPv4, "203.0.113.1"},
		{p("203.0.113.0/24", "192.0.2.0/24"), allIPv4, "127.0.0.1"},
		{p("::1/128"), loopback6, ""},
		{nil, allIPv6, "2001:db8::1"},
	}
	for _, tc := range tests {
		got, ok := outsideAddr(tc.nets, tc.space)
		if tc.want == "" {
			if ok {
				t.Errorf("outsideAddr(%v, %v) = %v, want none", tc.nets, tc.space, got)
			}
			continue
		}
		if !ok || got.String() != tc.want {
			t.Errorf("outsideAddr(%v, %v) = %v, %v; want %s", tc.nets, tc.space, got, ok, tc.want)
		}
	}
}

// permissive is an SMTP server that takes MAIL and RCPT from anyone: the
// open relay the self-test must recognise.
type permissive struct{}

func (permissive) NewSession(*smtp.Conn) (smtp.Session, error) { return permissiveSession{}, nil }

type permissiveSession struct{}

func (permissiveSession) Mail(string, *smtp.MailOptions) error { return nil }
func (permissiveSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (permissiveSession) Data(io.Reader) error                 { return nil }
func (permissiveSession) Reset()                               {}
func (permissiveSession) Logout() error                        { return nil }

// refusing answers MAIL without AUTH as the relay does.
type refusing struct{ permissive }

func (refusing) NewSession(*smtp.Conn) (smtp.Session, error) { return refusingSession{}, nil }

type refusingSession struct{ permissiveSession }

func (refusingSession) Mail(string, *smtp.MailOptions) error {
	return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
}

func serveSMTP(t *testing.T, be smtp.Backend) string {
	t.Helper()
	srv := smtp.NewServer(be)
	srv.Domain = "probe.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// The self-test's verdict: a server that takes MAIL and RCPT without AUTH
// from an address in no client network fails it; one that answers 530
// passes.
func TestOpenRelayVerdict(t *testing.T) {
	src := netip.MustParseAddr("127.0.0.5")
	outside := netip.MustParseAddr("203.0.113.1")
	reply, err := probeConversation(context.Background(), serveSMTP(t, permissive{}), src, false, "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	ok, detail := verdict(outside, src, reply)
	if ok || !strings.Contains(detail, `a connection from 127.0.0.5, which is in no client network, was not refused at MAIL without AUTH: MAIL answered "250 2.0.0 Roger, accepting mail from <a@example.com>", then RCPT "250 2.0.0 I'll make sure <open-relay-check@oauthrelay.invalid> gets this"`) {
		t.Errorf("open relay judged %v: %s", ok, detail)
	}
	reply, err = probeConversation(context.Background(), serveSMTP(t, refusing{}), src, false, "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	ok, detail = verdict(outside, src, reply)
	if !ok || detail != `203.0.113.1 is in no client network, so a client there must AUTH; a connection from 127.0.0.5 (in no client network either) without AUTH got "530 5.7.0 Authentication required" at MAIL` {
		t.Errorf("refusing server judged %v: %s", ok, detail)
	}
}

// probeRuntime builds (without serving) a relay whose listener is at
// address and whose client "scanner" is 127.0.0.2.
func probeRuntime(t *testing.T, address string) *Runtime {
	t.Helper()
	path := testutil.WriteFile(t, t.TempDir(), "relay.hcl", fmt.Sprintf(`listener "devices" {
  address  = %q
  tls_mode = "none"
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider      = "gw"
  client_id     = "id"
  client_secret = "literal-secret"
  account "scans@example.com" { refresh_token = "literal-rt" }
  client "scanner" {
    networks = ["127.0.0.2"]
    send_as  = "scans@example.com"
  }
}
`, address))
	loaded := config.Load(path, config.Overrides{})
	if loaded.Diagnostics.HasErrors() {
		t.Fatal(loaded.Diagnostics)
	}
	logs := &testutil.LogBuffer{}
	r, err := New(context.Background(), loaded.Config, Options{Logger: logs.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	return r
}

// greeting connects to addr from src and returns what the server says
// first ("" when it closes the connection without a word).
func greeting(t *testing.T, addr string, src string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}

// The self-test serves the real listener on its configured address; for
// as long as it does, only the probe's own source address may talk to it:
// a device of a client network (127.0.0.2) connecting then is closed
// before the greeting, or it could really send mail.
func TestProbeListenerAcceptsOnlyTheProbe(t *testing.T) {
	r := probeRuntime(t, "127.0.0.1:0")
	b := r.current.Load()
	addr, stop, err := r.serveProbe(b, b.cfg.Listeners[0], netip.MustParseAddr("127.0.0.4"))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		if got := greeting(t, addr, src); got != "" {
			t.Errorf("a connection from %s was served during the probe: %q", src, got)
		}
	}
	if got := greeting(t, addr, "127.0.0.4"); !strings.HasPrefix(got, "220 ") {
		t.Errorf("the probe's own connection got %q, want the greeting", got)
	}
}

// A listener the probe cannot serve (its address is taken) is reported as
// not tested by connection, not as a plain pass.
func TestOpenRelayUntested(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	r := probeRuntime(t, taken.Addr().String())
	res := r.OpenRelayTest(context.Background())
	if len(res) != 1 || !res[0].OK || !res[0].Untested || !strings.Contains(res[0].Detail, "the probe failed") {
		t.Errorf("results %+v, want one untested pass", res)
	}
	r = probeRuntime(t, "127.0.0.1:0")
	if res := r.OpenRelayTest(context.Background()); len(res) != 1 || !res[0].OK || res[0].Untested {
		t.Errorf("results %+v, want one pass tested by connection", res)
	}
}

// A listener on a zoned link-local address: the relay matches clients
// without the zone, so fe80::1%eth0 is in a client network fe80::/64 and
// must not be taken as a source outside every network (whose connection,
// let in as the client, would read as an open relay).
func TestLocalSourceIgnoresZones(t *testing.T) {
	rc := reachableFrom("[fe80::1%eth0]:25")
	if src, ok := rc.localSource([]netip.Prefix{netip.MustParsePrefix("fe80::/64")}); ok {
		t.Errorf("fe80::1%%eth0 in fe80::/64 chosen as an outside source %v", src)
	}
	if src, ok := rc.localSource([]netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}); !ok || src.String() != "fe80::1%eth0" {
		t.Errorf("source %v %v, want fe80::1%%eth0", src, ok)
	}
	if !containsAddr([]netip.Prefix{netip.MustParsePrefix("fe80::/64")}, netip.MustParseAddr("fe80::7%eth0")) {
		t.Error("a zoned address is not in its network")
	}
}

package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/netset"
)

// OpenRelayResult is what the open-relay self-test of `oauthrelay check`
// found for one listener (README "Devices").
type OpenRelayResult struct {
	Listener string
	Address  string
	// At is where the listener's address was written.
	At hcl.Range
	// OK is false when a client outside every client network could send
	// without AUTH.
	OK bool
	// Untested: OK rests on the configuration alone, no connection could
	// test it (no local address outside every client network to connect
	// from, or the probe could not connect); check prints it as "not
	// tested by connection", not as a pass.
	Untested bool
	// Detail says what was proved and how, in one sentence.
	Detail string
}

// probeTimeout bounds one self-test conversation.
const probeTimeout = 10 * time.Second

// probeRecipient is where the self-test would send, in a reserved domain
// (RFC 2606) that no provider delivers to; it never gets as far as DATA.
const probeRecipient = "open-relay-check@oauthrelay.invalid"

// OpenRelayTest proves, for each listener, that a client outside every
// client network cannot send without AUTH. From the configuration it finds
// an address that can reach the listener and is in no client network; when
// that address is local (a loopback address, or the listener's own
// address), it serves the listener as run would, connects from that
// address and tries MAIL and RCPT without AUTH, expecting 530. The
// runtime must not be serving: the test binds every listener's address.
func (r *Runtime) OpenRelayTest(ctx context.Context) []OpenRelayResult {
	b := r.current.Load()
	var nets []netip.Prefix
	for _, c := range b.cfg.Clients() {
		for _, n := range c.Networks {
			nets = append(nets, n.Prefix)
		}
	}
	sender := ""
	if accts := b.cfg.Accounts(); len(accts) > 0 {
		sender = accts[0].Address
		if accts[0].IsDomain() {
			sender = "postmaster@" + accts[0].Domain
		}
	}
	var out []OpenRelayResult
	for _, lc := range b.cfg.Listeners {
		res := OpenRelayResult{Listener: lc.Name, Address: lc.Address, At: lc.AddressRange}
		res.OK, res.Untested, res.Detail = r.openRelayTest(ctx, b, lc, nets, sender)
		out = append(out, res)
	}
	return out
}

func (r *Runtime) openRelayTest(ctx context.Context, b *built, lc *config.Listener, nets []netip.Prefix, sender string) (ok, untested bool, detail string) {
	reach := reachableFrom(lc.Address)
	var outside []netip.Addr
	for _, space := range reach.spaces {
		if a, ok := outsideAddr(nets, space); ok {
			outside = append(outside, a)
		}
	}
	if len(outside) == 0 {
		return true, false, fmt.Sprintf("every address that can reach it (%s) is in a client network: only processes on this host can connect, and each is a client", joinPrefixes(reach.spaces))
	}
	src, ok := reach.localSource(nets)
	if !ok {
		return true, true, fmt.Sprintf("%s is in no client network, so the configuration says a client there must AUTH; there is no local address outside every client network to connect from", outside[0])
	}
	reply, err := r.probeListener(ctx, b, lc, src, sender)
	if err != nil {
		return true, true, fmt.Sprintf("%s is in no client network, so the configuration says a client there must AUTH; the probe failed: %v", outside[0], err)
	}
	ok, detail = verdict(outside[0], src, reply)
	return ok, false, detail
}

// verdict judges the relay's answer to a connection from src, an address
// in no client network, that tried MAIL without AUTH: only 530 at MAIL
// proves that such a client cannot send.
func verdict(outside, src netip.Addr, reply probeReply) (bool, string) {
	if reply.code != 530 {
		return false, fmt.Sprintf("a connection from %s, which is in no client network, was not refused at MAIL without AUTH: %s", src, reply.describe())
	}
	if outside == src {
		return true, fmt.Sprintf("%s is in no client network; a connection from it without AUTH got %q at MAIL", src, reply.text)
	}
	return true, fmt.Sprintf("%s is in no client network, so a client there must AUTH; a connection from %s (in no client network either) without AUTH got %q at MAIL", outside, src, reply.text)
}

// reach is the address space that can connect to a listener, and where a
// local connection to it can come from.
type reach struct {
	spaces []netip.Prefix
	// dial is the address to connect to locally; loopback4/6 say which
	// loopback sources can reach it; own is a listener bound to one
	// non-loopback address, which the host can connect from itself.
	dial      string
	loopback4 bool
	loopback6 bool
	own       netip.Addr
}

var (
	allIPv4   = netip.MustParsePrefix("0.0.0.0/0")
	allIPv6   = netip.MustParsePrefix("::/0")
	loopback4 = netip.MustParsePrefix("127.0.0.0/8")
	loopback6 = netip.MustParsePrefix("::1/128")
)

// reachableFrom works out who can connect to a listen address.
func reachableFrom(address string) reach {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return reach{spaces: []netip.Prefix{allIPv4, allIPv6}}
	}
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1" // what net.Listen binds for it
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "":
		return reach{spaces: []netip.Prefix{allIPv4, allIPv6}, loopback4: true, loopback6: true}
	case err != nil:
		return reach{spaces: []netip.Prefix{allIPv4, allIPv6}} // a host name: not resolved here
	case ip.Is4() && ip.IsUnspecified():
		return reach{spaces: []netip.Prefix{allIPv4}, loopback4: true}
	case ip.IsUnspecified():
		return reach{spaces: []netip.Prefix{allIPv4, allIPv6}, loopback4: true, loopback6: true}
	case ip.Is4() && ip.IsLoopback():
		return reach{spaces: []netip.Prefix{loopback4}, loopback4: true, dial: ip.String()}
	case ip.IsLoopback():
		return reach{spaces: []netip.Prefix{loopback6}, loopback6: true}
	case ip.Is4():
		return reach{spaces: []netip.Prefix{allIPv4}, own: ip}
	}
	return reach{spaces: []netip.Prefix{allIPv6}, own: ip}
}

// localSource returns a local address outside every client network that
// can connect to the listener, and false when there is none.
func (rc reach) localSource(nets []netip.Prefix) (netip.Addr, bool) {
	if rc.loopback4 {
		if a, ok := outsideAddr(nets, loopback4); ok {
			return a, true
		}
	}
	if rc.loopback6 {
		if a, ok := outsideAddr(nets, loopback6); ok {
			return a, true
		}
	}
	// The relay matches a client's address without its zone (package
	// relay, remoteAddr): so must this, or fe80::1%eth0 in fe80::/64
	// would look outside every network and then be let in, a false open
	// relay.
	if rc.own.IsValid() && !containsAddr(nets, rc.own) {
		return rc.own, true
	}
	return netip.Addr{}, false
}

// outsideAddr returns an address of space in no client network, preferring
// a documentation address (RFC 5737, RFC 3849) or 127.0.0.1, and never a
// network's first or last address, which cannot be a connection's source.
func outsideAddr(nets []netip.Prefix, space netip.Prefix) (netip.Addr, bool) {
	for _, s := range []string{"203.0.113.1", "192.0.2.1", "2001:db8::1", "127.0.0.1", "::1"} {
		a := netip.MustParseAddr(s)
		if space.Contains(a) && !containsAddr(nets, a) {
			return a, true
		}
	}
	avoid := append([]netip.Prefix{}, nets...)
	if space.Bits() < space.Addr().BitLen() {
		avoid = append(avoid, netip.PrefixFrom(space.Addr(), space.Addr().BitLen()), netip.PrefixFrom(netset.Last(space), space.Addr().BitLen()))
	}
	return netset.FirstOutside(avoid, space)
}

// containsAddr reports whether a network holds a, compared without its
// zone, as the relay compares a client's address.
func containsAddr(nets []netip.Prefix, a netip.Addr) bool {
	a = a.WithZone("")
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// probeReply is the relay's answer to the probe.
type probeReply struct {
	stage string // the command answered
	code  int
	text  string
	rcpt  string // the RCPT reply, when MAIL was accepted
}

func (p probeReply) describe() string {
	s := fmt.Sprintf("%s answered %q", p.stage, p.text)
	if p.rcpt != "" {
		s += fmt.Sprintf(", then RCPT %q", p.rcpt)
	}
	return s
}

// probeListener serves lc on its configured address, as Start would,
// and has one conversation with it from src without AUTH.
func (r *Runtime) probeListener(ctx context.Context, b *built, lc *config.Listener, src netip.Addr, sender string) (probeReply, error) {
	addr, stop, err := r.serveProbe(b, lc, src)
	if err != nil {
		return probeReply{}, err
	}
	defer stop()
	return probeConversation(ctx, addr, src, lc.TLSMode == config.TLSImplicit, sender)
}

// serveProbe serves lc on its configured address, as Start would, for
// connections from src alone, and returns the address to connect to.
//
// The probe binds the configured address itself (0.0.0.0:25, say), not a
// loopback port of its own, so that it tests the socket and the client
// identification run will have. For as long as it runs, that is a real
// relay reachable by everyone who can reach the address; a device of a
// client network connecting then would really send mail. So the probe
// listener accepts connections from src only (an address in no client
// network, which must get 530) and closes any other at once, before the
// greeting.
func (r *Runtime) serveProbe(b *built, lc *config.Listener, src netip.Addr) (addr string, stop func(), err error) {
	ln, err := openSocket(lc.Address)
	if err != nil {
		return "", nil, err
	}
	ln = onlyFrom{Listener: ln, src: src.WithZone("")}
	l := r.newListener(lc.Address, ln)
	g, err := r.newGeneration(b, lc, l.perIP)
	if err != nil {
		ln.Close()
		return "", nil, err
	}
	l.install(g)
	l.start()
	stop = func() {
		if g := l.stopAccepting(); g != nil {
			g.closeConns()
			<-g.drained()
		}
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	host := src.String() // an own address or loopback: connect to it
	if src.Is4() && src.IsLoopback() {
		host = "127.0.0.1"
		if d := reachableFrom(lc.Address).dial; d != "" {
			host = d
		}
	}
	return net.JoinHostPort(host, port), stop, nil
}

// onlyFrom is a listener that accepts connections from src alone and
// closes any other as soon as it is accepted.
type onlyFrom struct {
	net.Listener
	src netip.Addr // without zone
}

func (o onlyFrom) Accept() (net.Conn, error) {
	for {
		c, err := o.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil && ap.Addr().Unmap().WithZone("") == o.src {
			return c, nil
		}
		c.Close()
	}
}

// probeConversation connects from src and tries MAIL (and, should MAIL be
// accepted, RCPT) without AUTH; it never sends DATA.
func probeConversation(ctx context.Context, addr string, src netip.Addr, implicitTLS bool, sender string) (probeReply, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice(), Zone: src.Zone()}, Timeout: probeTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return probeReply{}, fmt.Errorf("connecting from %s: %w", src, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(probeTimeout))
	if implicitTLS {
		// Only the relay's answer without AUTH matters here, not its
		// certificate (which check verified separately).
		nc = tls.Client(nc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10}) //nolint:gosec // talking to itself
	}
	c := textproto.NewConn(nc)
	step := func(cmd string) (int, string, error) {
		if cmd != "" {
			if err := c.PrintfLine("%s", cmd); err != nil {
				return 0, "", err
			}
		}
		code, msg, err := c.ReadResponse(0)
		if _, ok := err.(*textproto.Error); ok {
			err = nil // a reply, just not the expected one
		}
		return code, fmt.Sprintf("%d %s", code, msg), err
	}
	if code, text, err := step(""); err != nil || code != 220 {
		return probeReply{}, fmt.Errorf("greeting: %s %v", text, err)
	}
	if code, text, err := step("EHLO open-relay-check.invalid"); err != nil || code != 250 {
		return probeReply{}, fmt.Errorf("EHLO: %s %v", text, err)
	}
	code, text, err := step("MAIL FROM:<" + sender + ">")
	if err != nil {
		return probeReply{}, fmt.Errorf("MAIL: %w", err)
	}
	reply := probeReply{stage: "MAIL", code: code, text: text}
	if code == 250 {
		_, reply.rcpt, _ = step("RCPT TO:<" + probeRecipient + ">")
		_, _, _ = step("RSET")
	}
	_, _, _ = step("QUIT")
	return reply, nil
}

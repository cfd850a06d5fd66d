package config

import (
	"net/netip"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/oauthrelay/oauthrelay/internal/netset"
)

// Widest public networks accepted without a warning: a network of
// addresses reachable from the Internet wider than a /24 (IPv4) or a /48
// (an IPv6 site) lets a great many hosts send without a password. Wider
// than a /8 (IPv4) or a /32 (IPv6, a provider's whole allocation) it is
// an error: no site's devices are spread over that much of the Internet,
// and "0.0.0.0/1" is an open relay for half of it.
const (
	publicWarnBits4  = 24
	publicWarnBits6  = 48
	publicErrorBits4 = 8
	publicErrorBits6 = 32
)

// forwardedHazards are address ranges from which connections often come
// on behalf of someone else: a reverse proxy, stunnel, "ssh -L" or
// docker-proxy on the relay's host connects from loopback (or from the
// Docker bridge gateway), whoever is behind it, and link-local addresses
// are a host's own interface addresses, not a device network. A client
// network that holds one of them makes all such connections that client.
var forwardedHazards = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback addresses, from which a local reverse proxy, stunnel, \"ssh -L\" or docker-proxy connects on behalf of whoever is behind it"},
	{netip.MustParsePrefix("::1/128"), "the loopback address, from which a local reverse proxy, stunnel, \"ssh -L\" or docker-proxy connects on behalf of whoever is behind it"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local addresses, which any host on the link can take for itself"},
	{netip.MustParsePrefix("fe80::/10"), "link-local addresses, which any host on the link can take for itself"},
	{netip.MustParsePrefix("172.17.0.0/16"), "Docker's default bridge network, whose gateway (172.17.0.1) is where docker-proxy connects from when a published port forwards a connection from anywhere"},
}

// checkNetworks checks the networks of every client together (README
// "Devices"): the same network in two clients is ambiguous (an error);
// one client's network inside another's is legal but easy to get wrong
// (a warning: the most specific network wins); networks that together
// hold every IPv4 or every IPv6 address would make the relay an open
// relay for anyone who reaches a listener (an error, with no opt-in).
func (d *decoder) checkNetworks(clients []*Client) {
	type owned struct {
		ClientNetwork
		client  string
		refused bool // already an error as a public network too wide
	}
	var all []owned
	for _, c := range clients {
		for _, n := range c.Networks {
			for _, prev := range all {
				d.compareNetworks(prev.client, prev.ClientNetwork, c.Name, n)
			}
			refused := d.publicNetwork(c.Name, n)
			all = append(all, owned{n, c.Name, refused})
			if !refused && n.Prefix.Bits() > 0 { // else an error says more
				d.forwardedNetwork(c.Name, n)
			}
		}
	}
	for _, space := range []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")} {
		var nets []netip.Prefix
		var widest *owned
		names := map[string]bool{}
		var order []string
		for i, o := range all {
			if o.Prefix.Addr().Is4() != space.Addr().Is4() {
				continue
			}
			nets = append(nets, o.Prefix)
			if widest == nil || o.Prefix.Bits() < widest.Prefix.Bits() {
				widest = &all[i]
			}
			if !names[o.client] {
				names[o.client] = true
				order = append(order, `"`+o.client+`"`)
			}
		}
		// One error per entry: when the widest network is refused already,
		// narrowing it is the fix either way.
		if widest != nil && !widest.refused && netset.Covers(nets, space) {
			family := "IPv4"
			if space.Addr().Is6() {
				family = "IPv6"
			}
			d.errorf(widest.Range, "Networks allow everyone", "Together the networks of client %s hold every %s address: any host that can reach a listener could send without a password, an open relay. List only the networks your devices are in.", strings.Join(order, ", "), family)
		}
	}
}

// compareNetworks reports a network b of client cb that is also, or
// within, or around, network a of client ca.
func (d *decoder) compareNetworks(ca string, a ClientNetwork, cb string, b ClientNetwork) {
	switch {
	case !a.Prefix.Overlaps(b.Prefix):
	case a.Prefix == b.Prefix && ca == cb:
		// Reported as a duplicate when the client's list was read.
	case a.Prefix == b.Prefix:
		d.errorf(b.Range, "Network of two clients", "Client %q and client %q (at %s) both list %s: a host in it could be either. Give the network to one client.", cb, ca, a.Range, b.Prefix)
	case ca == cb:
		wide, narrow := a.Prefix, b.Prefix
		if narrow.Bits() < wide.Bits() {
			wide, narrow = narrow, wide
		}
		d.warnf(b.Range, "Redundant network", "Client %q lists %s, which is within its own %s.", cb, narrow, wide)
	default:
		wideC, wide, narrowC, narrow := ca, a.Prefix, cb, b.Prefix
		if narrow.Bits() < wide.Bits() {
			wideC, wide, narrowC, narrow = narrowC, narrow, wideC, wide
		}
		d.warnf(b.Range, "Overlapping networks", "Client %q's network %s lies within client %q's %s (at %s): hosts in %s are client %q, the most specific network wins.", narrowC, narrow, wideC, wide, a.Range, narrow, narrowC)
	}
}

// publicNetwork warns about a wide network of public addresses, and
// refuses a very wide one (refused reports that). A network of every
// address is refused as "Networks allow everyone".
func (d *decoder) publicNetwork(client string, n ClientNetwork) (refused bool) {
	p := n.Prefix
	warn, refuse := publicWarnBits4, publicErrorBits4
	if p.Addr().Is6() {
		warn, refuse = publicWarnBits6, publicErrorBits6
	}
	switch {
	case p.Bits() == 0 || p.Bits() >= warn || !netset.Public(p):
		return false
	case p.Bits() < refuse:
		d.errorf(n.Range, "Public network too wide", "Client %q's network %s holds %s, public ones among them: every host there could send without a password, an open relay for that part of the Internet. A network with public addresses may be at most a /%d; list the devices' own addresses.", client, p, netset.Size(p), refuse)
		return true
	}
	d.warnf(n.Range, "Wide public network", "Client %q's network %s holds %s, public ones among them: every host there can send without a password. Narrow it to the devices' own addresses.", client, p, netset.Size(p))
	return false
}

// forwardedNetwork warns, once, about a network that holds addresses
// connections are forwarded from (forwardedHazards).
func (d *decoder) forwardedNetwork(client string, n ClientNetwork) {
	var held []string
	for _, h := range forwardedHazards {
		if h.prefix.Addr().Is4() == n.Prefix.Addr().Is4() && h.prefix.Overlaps(n.Prefix) {
			held = append(held, h.what)
		}
	}
	if len(held) == 0 {
		return
	}
	d.warnf(n.Range, "Network of forwarded connections", "Client %q's network %s holds %s: every connection from there is this client without a password, whoever started it. List the devices' own addresses; if a proxy on this host must reach the relay, give it its own client with a password.", client, n.Prefix, strings.Join(held, "; and "))
}

// itemRanges are the ranges of a list attribute and of each of its items.
type itemRanges struct {
	whole hcl.Range
	items []hcl.Range
}

// listItemRanges returns where each of n items of a list attribute was
// written; the whole attribute's range stands in for items it cannot place
// (a list built by an expression).
func listItemRanges(body hcl.Body, name string, fallback hcl.Range, n int) itemRanges {
	r := itemRanges{whole: attrRange(body, name, fallback), items: make([]hcl.Range, n)}
	for i := range r.items {
		r.items[i] = r.whole
	}
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return r
	}
	a, ok := sb.Attributes[name]
	if !ok {
		return r
	}
	if tuple, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && len(tuple.Exprs) == n {
		for i, e := range tuple.Exprs {
			r.items[i] = e.Range()
		}
	}
	return r
}

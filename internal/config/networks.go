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
// (an IPv6 site) lets a great many hosts send without a password.
const (
	publicWarnBits4 = 24
	publicWarnBits6 = 48
)

// checkNetworks checks the networks of every client together (README
// "Devices"): the same network in two clients is ambiguous (an error);
// one client's network inside another's is legal but easy to get wrong
// (a warning: the most specific network wins); networks that together
// hold every IPv4 or every IPv6 address would make the relay an open
// relay for anyone who reaches a listener (an error, with no opt-in).
func (d *decoder) checkNetworks(clients []*Client) {
	type owned struct {
		ClientNetwork
		client string
	}
	var all []owned
	for _, c := range clients {
		for _, n := range c.Networks {
			for _, prev := range all {
				d.compareNetworks(prev.client, prev.ClientNetwork, c.Name, n)
			}
			all = append(all, owned{n, c.Name})
			d.publicNetwork(c.Name, n)
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
		if widest != nil && netset.Covers(nets, space) {
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

// publicNetwork warns about a wide network of public addresses.
func (d *decoder) publicNetwork(client string, n ClientNetwork) {
	p := n.Prefix
	limit := publicWarnBits4
	if p.Addr().Is6() {
		limit = publicWarnBits6
	}
	if p.Bits() == 0 || p.Bits() >= limit || !netset.Public(p) {
		return
	}
	d.warnf(n.Range, "Wide public network", "Client %q's network %s holds %s, public ones among them: every host there can send without a password. Narrow it to the devices' own addresses.", client, p, netset.Size(p))
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

// Package netset is the address arithmetic behind client networks (README
// "Devices"): parsing a network as an operator writes it, finding an
// address outside a set of networks, and telling public address space from
// private.
package netset

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Parse reads a network as written in a client's networks: a CIDR prefix
// ("10.20.0.0/24", "2001:db8::/48") or a single address ("10.20.0.7",
// "::1"), which stands for a network of that address alone. A prefix with
// host bits set ("10.20.0.7/24") is refused with the network it probably
// means: it is ambiguous between the host and its network. IPv4-mapped
// IPv6 prefixes and zones are refused too: the relay compares clients'
// addresses in their plain IPv4 or IPv6 form.
func Parse(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("%q has an IPv6 zone; networks are matched without zones", s)
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network such as \"10.20.0.0/24\" or an address such as \"10.20.0.7\"", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network such as \"10.20.0.0/24\" or an address such as \"10.20.0.7\"", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 network; write the IPv4 network instead", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: did you mean %q (the network) or %q (the one address)?", s, m.String(), netip.PrefixFrom(p.Addr(), p.Addr().BitLen()).String())
	}
	return p, nil
}

// Last returns the highest address of p.
func Last(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return last
}

// FirstOutside returns the lowest address of space that none of nets
// contains, and false when nets cover all of space.
func FirstOutside(nets []netip.Prefix, space netip.Prefix) (netip.Addr, bool) {
	space = space.Masked()
	type span struct{ first, last netip.Addr }
	var spans []span
	for _, n := range nets {
		if n.Addr().Is4() != space.Addr().Is4() || !n.Overlaps(space) {
			continue
		}
		// Overlapping prefixes nest: the narrower one lies within the wider.
		if n.Bits() < space.Bits() {
			return netip.Addr{}, false
		}
		spans = append(spans, span{n.Masked().Addr(), Last(n)})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.first.Compare(b.first) })
	cursor, end := space.Addr(), Last(space)
	for _, s := range spans {
		if s.first.Compare(cursor) > 0 {
			return cursor, true
		}
		if s.last.Compare(cursor) >= 0 {
			if s.last == end {
				return netip.Addr{}, false
			}
			cursor = s.last.Next()
		}
	}
	return cursor, true
}

// Covers reports whether nets together contain every address of space.
func Covers(nets []netip.Prefix, space netip.Prefix) bool {
	_, outside := FirstOutside(nets, space)
	return !outside
}

// private is address space that is not reachable from the Internet:
// RFC 1918, shared address space (RFC 6598), loopback, link-local, unique
// local IPv6 (RFC 4193).
var private = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
}

// Public reports whether p contains addresses outside private address
// space, so that hosts on the Internet may connect from inside it.
func Public(p netip.Prefix) bool {
	for _, q := range private {
		if q.Addr().Is4() == p.Addr().Is4() && q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return false
		}
	}
	return true
}

// Size describes how many addresses p holds, for diagnostics: "256
// addresses", "2^96 addresses".
func Size(p netip.Prefix) string {
	host := p.Addr().BitLen() - p.Bits()
	if host < 31 {
		n := 1 << host
		if n == 1 {
			return "1 address"
		}
		return fmt.Sprintf("%d addresses", n)
	}
	return fmt.Sprintf("2^%d addresses", host)
}

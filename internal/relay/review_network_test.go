package relay

import (
	"net"
	"net/netip"
	"testing"
)

// Verification (passes): a dual-stack socket reports an IPv4 client as
// ::ffff:a.b.c.d; it must match an IPv4 network and no IPv6 one, and an
// IPv6 client must never match an IPv4 network through its low 32 bits.
func TestReviewMappedAddressesAndNetworks(t *testing.T) {
	v4 := &Client{Name: "v4", Networks: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}}
	v6 := &Client{Name: "v6", Networks: []netip.Prefix{netip.MustParsePrefix("::/64")}}
	st := &State{Clients: map[string]*Client{"v4": v4, "v6": v6}}
	for _, tc := range []struct {
		remote net.Addr
		want   string
	}{
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.20.0.5"), Port: 1}, "v4"},
		{&net.TCPAddr{IP: net.ParseIP("10.20.0.5").To4(), Port: 1}, "v4"},
		{&net.TCPAddr{IP: net.ParseIP("::10.20.0.5"), Port: 1}, "v6"}, // IPv4-compatible: an IPv6 address
		{&net.TCPAddr{IP: net.ParseIP("64:ff9b::a14:5"), Port: 1}, ""},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.20.1.5"), Port: 1}, ""},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, ""},
		{&net.TCPAddr{IP: nil, Port: 1}, ""},
	} {
		got := ""
		if c := st.clientByNetwork(remoteAddr(tc.remote)); c != nil {
			got = c.Name
		}
		if got != tc.want {
			t.Errorf("%v: client %q, want %q", tc.remote, got, tc.want)
		}
	}
}

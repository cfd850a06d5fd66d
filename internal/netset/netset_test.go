package netset

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "10.20.0.0/24", want: "10.20.0.0/24"},
		{in: " 10.20.0.7 ", want: "10.20.0.7/32"},
		{in: "::1", want: "::1/128"},
		{in: "2001:db8::/48", want: "2001:db8::/48"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "10.20.0.7/24", err: `did you mean "10.20.0.0/24" (the network) or "10.20.0.7/32" (the one address)?`},
		{in: "::ffff:10.0.0.0/104", err: "IPv4-mapped"},
		{in: "fe80::1%eth0", err: "zone"},
		{in: "10.20.0.0/33", err: "is not a network"},
		{in: "printer.lan", err: "is not a network"},
		{in: "", err: "is not a network"},
	}
	for _, tc := range tests {
		p, err := Parse(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %v, %v; want an error containing %q", tc.in, p, err, tc.err)
			}
		case err != nil || p.String() != tc.want:
			t.Errorf("Parse(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, x := range s {
		out[i] = netip.MustParsePrefix(x)
	}
	return out
}

func TestFirstOutside(t *testing.T) {
	all4, all6 := netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")
	loop := netip.MustParsePrefix("127.0.0.0/8")
	tests := []struct {
		name  string
		nets  []netip.Prefix
		space netip.Prefix
		want  string // "" when covered
	}{
		{"no networks", nil, loop, "127.0.0.0"},
		{"a gap after the first", prefixes("127.0.0.0/31"), loop, "127.0.0.2"},
		{"adjacent networks", prefixes("127.0.0.2/31", "127.0.0.0/31"), loop, "127.0.0.4"},
		{"nested networks", prefixes("127.0.0.0/30", "127.0.0.1/32"), loop, "127.0.0.4"},
		{"the whole space", prefixes("127.0.0.0/8"), loop, ""},
		{"a wider network", prefixes("64.0.0.0/2"), loop, ""},
		{"two halves of IPv4", prefixes("128.0.0.0/1", "0.0.0.0/1"), all4, ""},
		{"the other family does not count", prefixes("::/0"), all4, "0.0.0.0"},
		{"IPv6 everything", prefixes("::/0"), all6, ""},
		{"IPv6 gap", prefixes("::/1"), all6, "8000::"},
		{"all but the last address", prefixes("0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4", "240.0.0.0/5", "248.0.0.0/6", "252.0.0.0/7",
			"254.0.0.0/8", "255.0.0.0/9", "255.128.0.0/10", "255.192.0.0/11", "255.224.0.0/12", "255.240.0.0/13", "255.248.0.0/14", "255.252.0.0/15",
			"255.254.0.0/16", "255.255.0.0/17", "255.255.128.0/18", "255.255.192.0/19", "255.255.224.0/20", "255.255.240.0/21", "255.255.248.0/22",
			"255.255.252.0/23", "255.255.254.0/24", "255.255.255.0/25", "255.255.255.128/26", "255.255.255.192/27", "255.255.255.224/28",
			"255.255.255.240/29", "255.255.255.248/30", "255.255.255.252/31", "255.255.255.254/32"), all4, "255.255.255.255"},
	}
	for _, tc := range tests {
		got, ok := FirstOutside(tc.nets, tc.space)
		if tc.want == "" {
			if ok || !Covers(tc.nets, tc.space) {
				t.Errorf("%s: %v outside, want the space covered", tc.name, got)
			}
			continue
		}
		if !ok || got.String() != tc.want {
			t.Errorf("%s: FirstOutside = %v, %v; want %s", tc.name, got, ok, tc.want)
		}
		for _, n := range tc.nets {
			if n.Contains(got) {
				t.Errorf("%s: %v is inside %v", tc.name, got, n)
			}
		}
	}
}

func TestPublicAndSize(t *testing.T) {
	tests := []struct {
		p      string
		public bool
		size   string
	}{
		{"10.20.0.0/24", false, "256 addresses"},
		{"10.0.0.0/8", false, "16777216 addresses"},
		{"8.0.0.0/5", true, "134217728 addresses"}, // holds 10.0.0.0/8 and public space
		{"203.0.113.7/32", true, "1 address"},
		{"0.0.0.0/0", true, "2^32 addresses"},
		{"fd12:3456::/32", false, "2^96 addresses"},
		{"::1/128", false, "1 address"},
		{"2001:db8::/32", true, "2^96 addresses"},
	}
	for _, tc := range tests {
		p := netip.MustParsePrefix(tc.p)
		if got := Public(p); got != tc.public {
			t.Errorf("Public(%s) = %v", tc.p, got)
		}
		if got := Size(p); got != tc.size {
			t.Errorf("Size(%s) = %q, want %q", tc.p, got, tc.size)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"10.20.0.0/24", "::1", "10.20.0.7/24", "::ffff:1.2.3.4/128", "fe80::1%lo/64", "1.2.3.4/-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("Parse(%q) = %v: not a plain masked prefix", s, p)
		}
		if !p.Contains(p.Addr()) || !p.Contains(Last(p)) {
			t.Fatalf("%v does not contain its first and last address", p)
		}
	})
}

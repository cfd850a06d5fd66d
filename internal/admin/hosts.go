package admin

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// checkHost refuses requests whose Host is not one the console answers
// to (README "Operator console"), against DNS rebinding: a page of
// another site can point its own name at the console's address
// (127.0.0.1, say); the browser then sends the page's requests, with
// that name as Host, to the console as same-origin ones, and lets the
// page read the answers. A name the console does not know is refused
// before anything else, with 421 (RFC 9110 section 15.5.20): the request
// reached a server that does not serve that name.
//
// Over plain HTTP the check always applies. Over TLS it applies when
// host names are configured (Options.Hosts): a rebound name fails the
// browser's certificate check only if the certificate does not cover
// it, and a wildcard or shared certificate may cover a name an attacker
// controls. Without configured names it is skipped over TLS: the names
// of the console's certificate are not known here, and checking against
// IP addresses and localhost alone would refuse every name the
// certificate was made for.
//
// A refusal is logged once per client (clientKey) a minute, so that a
// stranger cannot flood the log with them.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		extra := s.extraHosts()
		if (r.TLS != nil && len(extra) == 0) || hostAllowed(r.Host, extra) {
			next.ServeHTTP(w, r)
			return
		}
		client := clientKey(r)
		if n, _ := s.misdirected.fail(client, s.now()); n == 1 {
			s.log.Warn("refused a request for another host name (admin { hostnames } lists the names the console answers to; "+
				"further refusals from this client within a minute are not logged)",
				"host", Clip(r.Host, maxHostLog), "remote", r.RemoteAddr, "client", client)
		}
		http.Error(w, "421 Misdirected Request: this console answers only to IP addresses, localhost "+
			"and the names in its configuration (admin { hostnames }), not to this host name.", http.StatusMisdirectedRequest)
	})
}

// maxHostLog bounds a refused Host in the log (a host name has at most
// 253 characters; anything longer is noise).
const maxHostLog = 260

func (s *Server) extraHosts() []string {
	if s.opts.Hosts == nil {
		return nil
	}
	return s.opts.Hosts()
}

// hostAllowed reports whether host (a Host header: a name or an IP
// address, with or without a port) is one the console answers to: an IP
// address (the origin is then the address itself, which no
// other site can claim), localhost and *.localhost (browsers resolve
// them to the loopback address themselves, RFC 6761 section 6.3), or one
// of extra. Names compare case-insensitively and without one trailing
// dot ("localhost." is the same name, fully qualified).
func hostAllowed(host string, extra []string) bool {
	name, ok := hostName(host)
	if !ok {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return true
	}
	name = canonicalName(name)
	if name == "" {
		return false
	}
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	for _, e := range extra {
		if e = canonicalName(e); e != "" && e == name {
			return true
		}
	}
	return false
}

// hostName is host without its port and an IPv6 address's brackets.
func hostName(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		if strings.HasPrefix(host, "[") {
			_, err := netip.ParseAddr(h)
			return h, err == nil // brackets hold an IPv6 address, never a name
		}
		return h, true
	}
	if strings.HasPrefix(host, "[") || strings.HasSuffix(host, "]") {
		inner, ok := strings.CutPrefix(host, "[")
		inner, ok2 := strings.CutSuffix(inner, "]")
		if _, err := netip.ParseAddr(inner); !ok || !ok2 || err != nil {
			return "", false
		}
		return inner, true
	}
	return host, host != ""
}

// canonicalName is a host name in lower case without one trailing dot;
// "" for a name with an empty label ("a..b", "localhost..", ".x").
func canonicalName(name string) string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return ""
	}
	return name
}

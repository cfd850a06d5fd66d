package relay

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"testing"
)

// dialFrom opens a raw session from a given loopback source address (all
// of 127.0.0.0/8 is local on Linux) and reads the greeting.
func (e *contractEnv) dialFrom(src string) *textproto.Conn {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatalf("dial from %s: %v", src, err)
	}
	c := textproto.NewConn(nc)
	e.t.Cleanup(func() { c.Close() })
	e.expect(c, "", 220)
	return c
}

// withNetworkClients replaces the configuration: two accounts, "app"
// (AUTH) may send as both, "floor" (127.0.0.0/29, no password) as a@,
// "printer" (127.0.0.2/32, no password) as b@.
func (e *contractEnv) withNetworkClients() {
	e.t.Helper()
	old := e.state.Load()
	a := &Account{Address: "a@example.com", Group: "g", Provider: "p", Transport: e.ft}
	b := &Account{Address: "b@example.com", Group: "g", Provider: "p", Transport: e.ft}
	st := &State{Hostname: "relay.test", Accounts: map[string]*Account{a.Address: a, b.Address: b}, Clients: map[string]*Client{
		"app":     {Name: "app", Group: "g", PasswordHash: old.Clients["app"].PasswordHash, Allowed: map[string]*Account{a.Address: a, b.Address: b}},
		"floor":   {Name: "floor", Group: "g", Allowed: map[string]*Account{a.Address: a}, Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/29")}},
		"printer": {Name: "printer", Group: "g", Allowed: map[string]*Account{b.Address: b}, Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}},
	}}
	st.SetAuthCache(old)
	e.state.Store(st)
}

func (e *contractEnv) lastEnvelopeClient() string {
	e.ft.mu.Lock()
	defer e.ft.mu.Unlock()
	if len(e.ft.envs) == 0 {
		return ""
	}
	return e.ft.envs[len(e.ft.envs)-1].Client
}

// A host in a client's network sends without AUTH, as that client and
// within its allowed senders; the most specific network wins; AUTH wins
// over the network; a host outside every network gets 530 at MAIL.
func TestNetworkClients(t *testing.T) {
	tests := []struct {
		name   string
		src    string
		auth   string // AUTH PLAIN argument, "" for none
		from   string
		code   int
		client string // the client the message was sent for
	}{
		{name: "in the wider network", src: "127.0.0.4", from: "a@example.com", code: 250, client: "floor"},
		{name: "wider network, sender not allowed", src: "127.0.0.4", from: "b@example.com", code: 550},
		{name: "most specific network wins", src: "127.0.0.2", from: "b@example.com", code: 250, client: "printer"},
		{name: "most specific network's senders only", src: "127.0.0.2", from: "a@example.com", code: 550},
		{name: "outside every network", src: "127.0.0.9", from: "a@example.com", code: 530},
		{name: "AUTH wins over the network", src: "127.0.0.2", auth: "AGFwcABzZWNyZXQtcHc=", from: "a@example.com", code: 250, client: "app"},
		{name: "AUTH from outside every network", src: "127.0.0.9", auth: "AGFwcABzZWNyZXQtcHc=", from: "b@example.com", code: 250, client: "app"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newContractEnv(t, false, false)
			e.withNetworkClients()
			c := e.dialFrom(tc.src)
			e.expect(c, "EHLO printer.lan", 250)
			if tc.auth != "" {
				e.expect(c, "AUTH PLAIN "+tc.auth, 235)
			}
			msg := e.expect(c, "MAIL FROM:<"+tc.from+">", tc.code)
			if tc.code == 530 && msg != "5.7.0 Authentication required" {
				t.Errorf("530 text %q", msg)
			}
			if tc.code != 250 {
				return
			}
			e.expect(c, "RCPT TO:<r@x.test>", 250)
			e.data(c, "Subject: scan\r\n\r\nscan\r\n", 250)
			if got := e.lastEnvelopeClient(); got != tc.client {
				t.Errorf("sent for client %q, want %q", got, tc.client)
			}
			e.hist.mu.Lock()
			defer e.hist.mu.Unlock()
			if len(e.hist.recs) != 1 || e.hist.recs[0].Client != tc.client {
				t.Errorf("history names client %+v, want %q", e.hist.recs, tc.client)
			}
		})
	}
}

// A client recognised by its network has no password: AUTH as it fails
// whatever the password, like an unknown username.
func TestNetworkClientCannotAuthenticate(t *testing.T) {
	e := newContractEnv(t, false, false)
	e.withNetworkClients()
	for _, pw := range []string{"", "secret-pw"} {
		c := e.dialFrom("127.0.0.2")
		e.expect(c, "EHLO printer.lan", 250)
		e.expect(c, "AUTH PLAIN "+plainResponse("printer", pw), 535)
	}
}

// Each MAIL identifies the client against the configuration in force:
// a network removed by a reload no longer lets its hosts send.
func TestNetworkIdentityFollowsTheCurrentConfiguration(t *testing.T) {
	e := newContractEnv(t, false, false)
	e.withNetworkClients()
	c := e.dialFrom("127.0.0.2")
	e.expect(c, "EHLO printer.lan", 250)
	e.expect(c, "MAIL FROM:<b@example.com>", 250)
	e.expect(c, "RSET", 250)
	st := e.state.Load()
	next := &State{Hostname: st.Hostname, Accounts: st.Accounts, Clients: map[string]*Client{"app": st.Clients["app"]}}
	next.SetAuthCache(st)
	e.state.Store(next)
	e.expect(c, "MAIL FROM:<b@example.com>", 530)
}

func plainResponse(user, pw string) string {
	return b64(fmt.Sprintf("\x00%s\x00%s", user, pw))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

package admin

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Over plain HTTP the console answers only to IP literals, localhost
// names and the configured host names, so that a page whose name was
// rebound to the console's address cannot use it (DNS rebinding).
func TestHostAllowed(t *testing.T) {
	configured := []string{"Relay.Example.com", "ops.example.", ""}
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.1:8080", true},
		{"192.0.2.10:80", true},
		{"[::1]:8080", true},
		{"[::1]", true},
		{"::1", true},
		{"[2001:DB8::1]:443", true},
		{"localhost", true},
		{"localhost:8080", true},
		{"LOCALHOST", true},
		{"LocalHost:8080", true},
		{"localhost.", true},
		{"localhost.:8080", true},
		{"console.localhost", true},
		{"A.Console.LOCALHOST.:9", true},
		{"relay.example.com", true},
		{"RELAY.EXAMPLE.COM:8080", true},
		{"relay.example.com.", true},
		{"ops.example", true},
		{"OPS.example.:443", true},

		{"", false},
		{"attacker.example", false},
		{"attacker.example:8080", false},
		{"localhost.attacker.example", false},
		{"127.0.0.1.nip.io", false},
		{"7f000001.c0a80001.rbndr.us:8080", false},
		{"evillocalhost", false},
		{".localhost", false},
		{"localhost..", false},
		{"relay.example.com.evil", false},
		{"www.relay.example.com", false},
		{"[::1", false},
		{"[relay.example.com]:80", false},
		{"127.0.0.1:8080:9", false},
		{"0x7f.1", false},
	}
	for _, tc := range tests {
		if got := hostAllowed(tc.host, configured); got != tc.want {
			t.Errorf("hostAllowed(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

// A request with a foreign Host gets 421 as plain text, before anything
// else: no page, no sign-in, no count against the throttle; the first
// refusal of a client within a minute is logged (a stranger cannot flood
// the log with them).
func TestHostCheck(t *testing.T) {
	h := newHarness(t, harnessOptions{hosts: []string{"relay.example.com"}})
	const rebound = "rebind-7f000001.attacker.example:8080"
	b := h.browser()
	b.login(adminToken)
	send := func(method, path, host string, form url.Values) (*http.Response, string) {
		t.Helper()
		var req *http.Request
		if form != nil {
			req = h.newRequest(method, path, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		} else {
			req = h.newRequest(method, path, nil)
		}
		b.withSession(req)
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+adminToken)
		return h.request(nil, req)
	}
	refused := []struct{ method, path string }{
		{"GET", "/"}, {"GET", "/login"}, {"GET", "/api/v1/accounts"}, {"GET", "/static/console.css"},
		{"POST", "/login"}, {"POST", "/system/reload"},
	}
	lines := strings.Count(h.logs.String(), "\n")
	for _, rq := range refused {
		t.Run(rq.method+" "+rq.path, func(t *testing.T) {
			resp, body := send(rq.method, rq.path, rebound, url.Values{"token": {adminToken}})
			if resp.StatusCode != http.StatusMisdirectedRequest || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
				strings.Contains(body, "<") || !strings.Contains(body, "hostnames") {
				t.Errorf("%d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || len(resp.Cookies()) != 0 {
				t.Errorf("headers %v", resp.Header)
			}
		})
	}
	if added := strings.Count(h.logs.String(), "\n") - lines; added != 1 {
		t.Errorf("%d log lines for %d refusals from one client within a minute, want 1", added, len(refused))
	}
	if calls := h.b.reloadCount(); calls != 0 {
		t.Errorf("%d reloads through a foreign host", calls)
	}
	if n, _ := h.s.throttle.fail("127.0.0.1", h.clock.Now()); n != 1 {
		t.Errorf("refused requests counted %d failures", n-1)
	}
	for _, host := range []string{"relay.example.com:8080", "LOCALHOST.", "[::1]:8080", "console.localhost"} {
		if resp, body := send("GET", "/accounts", host, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("Host %s: %d\n%s", host, resp.StatusCode, body)
		}
	}
	if !strings.Contains(h.logs.String(), "refused a request for another host name") {
		t.Error("no log line says why")
	}
}

// Over TLS without configured host names the Host is not checked: the
// console's certificate names are not known here, and a rebound name
// fails the browser's certificate check unless the certificate covers
// it (a wildcard, a shared one: TestHostCheckOverTLS).
func TestHostCheckSkippedOverTLS(t *testing.T) {
	h := newHarness(t, harnessOptions{tls: true})
	req := h.newRequest("GET", "/login", nil)
	req.Host = "rebind.attacker.example"
	if resp, _ := h.request(nil, req); resp.StatusCode != http.StatusOK {
		t.Errorf("over TLS: %d", resp.StatusCode)
	}
}

// With configured host names the check applies over TLS too: a wildcard
// or shared certificate may cover a name an attacker controls, so TLS
// alone does not stop DNS rebinding.
func TestHostCheckOverTLS(t *testing.T) {
	h := newHarness(t, harnessOptions{tls: true, hosts: []string{"relay.example.com"}})
	b := h.browser()
	b.login(readToken)
	for host, want := range map[string]int{
		"rebind.attacker.example": http.StatusMisdirectedRequest,
		"other.example.com:443":   http.StatusMisdirectedRequest,
		"relay.example.com":       http.StatusOK,
		"RELAY.example.com.:8443": http.StatusOK,
		"127.0.0.1:8443":          http.StatusOK,
		"[::1]:8443":              http.StatusOK,
		"localhost":               http.StatusOK,
		"console.localhost.:8443": http.StatusOK,
	} {
		t.Run(host, func(t *testing.T) {
			req := b.withSession(b.newRequest("GET", "/accounts", nil))
			req.Host = host
			if resp, body := h.request(nil, req); resp.StatusCode != want {
				t.Errorf("%d, want %d\n%s", resp.StatusCode, want, body)
			}
		})
	}
}

// from is a client of the harness's server whose connections come from
// the loopback address local (127.0.0.2, say): another client key.
func (h *harness) from(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	tr := h.srv.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	return &http.Client{Transport: tr}
}

// Refusals of foreign host names are logged at most once per client a
// minute: each client's first, then its first after the minute.
func TestHostCheckLogBounded(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	refusalLines := func() int { return strings.Count(h.logs.String(), "refused a request for another host name") }
	refuse := func(client *http.Client) {
		t.Helper()
		req := h.newRequest("GET", "/login", nil)
		req.Host = "rebind.attacker.example"
		if resp, _ := h.request(client, req); resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("%d, want 421", resp.StatusCode)
		}
	}
	first, second := h.from("127.0.0.1"), h.from("127.0.0.2")
	for range 50 {
		refuse(first)
	}
	if n := refusalLines(); n != 1 {
		t.Errorf("%d log lines for 50 refusals of one client, want 1", n)
	}
	refuse(second)
	if n := refusalLines(); n != 2 || !strings.Contains(h.logs.String(), "client=127.0.0.2") {
		t.Errorf("%d log lines after another client's refusal, want 2:\n%s", n, h.logs.String())
	}
	h.clock.Advance(failWindow)
	refuse(first)
	refuse(first)
	if n := refusalLines(); n != 3 {
		t.Errorf("%d log lines after the minute, want 3", n)
	}
}

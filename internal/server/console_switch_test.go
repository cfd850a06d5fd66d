package server_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConsoleSwitchesTLSOnItsSocket: a reload that turns the console's
// TLS on or off keeps its address (no "address in use"), serves new
// connections by the new setting and closes the ones made in clear, so
// that no cookie keeps crossing the network unencrypted.
func TestConsoleSwitchesTLSOnItsSocket(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	base := strings.Replace(h.cfgText, literalAdminBlock, "", 1)
	addr := h.rt.ConsoleAddr().String()
	// Reloads keep the bound port only when the address is written the
	// same: write the one bound.
	plain := strings.Replace(literalAdminBlock, "127.0.0.1:0", addr, 1)
	h.rewrite(base + plain)
	if err := h.rt.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}

	kept := keptAliveConn(t, addr)
	cert, key := filepath.Join(h.dir, "console.crt"), filepath.Join(h.dir, "console.key")
	if err := h.sb.CA.WriteFiles(cert, key, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	withTLS := strings.Replace(plain, "admin {", fmt.Sprintf("admin {\n  tls_cert_file = %q\n  tls_key_file = %q", cert, key), 1)
	h.rewrite(base + withTLS)
	// Through the console itself: its own answer is not cut off.
	var reloaded struct{ Result, Error string }
	if code := api(t, h, "POST", "/api/v1/reload", consoleAdminToken, &reloaded); code != http.StatusOK || reloaded.Result != "success" {
		t.Fatalf("reload turning TLS on at %s through the console: %d %+v", addr, code, reloaded)
	}
	if got := h.rt.ConsoleAddr().String(); got != addr {
		t.Fatalf("console at %s after turning TLS on, want %s", got, addr)
	}
	if _, err := kept.ReadString('\n'); err == nil {
		t.Error("a connection made in clear stayed open after TLS was turned on")
	}
	secure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.sb.CA.Pool}}}
	if code := overviewStatus(t, secure, "https://"+addr); code != http.StatusOK {
		t.Errorf("HTTPS after turning TLS on: %d", code)
	}
	if code := overviewStatus(t, http.DefaultClient, "http://"+addr); code == http.StatusOK {
		t.Error("plain HTTP still served after turning TLS on")
	}

	h.rewrite(base + plain)
	if err := h.rt.Reload(t.Context()); err != nil {
		t.Fatalf("reload turning TLS off: %v", err)
	}
	if code := overviewStatus(t, http.DefaultClient, "http://"+addr); code != http.StatusOK {
		t.Errorf("plain HTTP after turning TLS off: %d", code)
	}
}

// TestConsoleMoveOnOnePortIsRefusedClearly: another host on the port the
// console listens on cannot be bound beside it; the reload fails with a
// message that says what to do, and the console keeps serving.
func TestConsoleMoveOnOnePortIsRefusedClearly(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	base := strings.Replace(h.cfgText, literalAdminBlock, "", 1)
	addr := h.rt.ConsoleAddr().String()
	_, port, _ := net.SplitHostPort(addr)
	elsewhere := strings.Replace(literalAdminBlock, "127.0.0.1:0", "0.0.0.0:"+port, 1)
	h.rewrite(base + strings.Replace(elsewhere, "admin {", "admin {\n  allow_plaintext = true", 1))
	err := h.rt.Reload(t.Context())
	if err == nil || !strings.Contains(err.Error(), "the same port: a reload cannot move it to another host on one port; choose another port, or restart the relay") {
		t.Fatalf("reload to 0.0.0.0 on the console's port: %v", err)
	}
	if got := h.rt.ConsoleAddr().String(); got != addr {
		t.Errorf("console at %s after the failed reload, want %s", got, addr)
	}
	if code := api(t, h, "GET", "/api/v1/overview", consoleReadToken, nil); code != http.StatusOK {
		t.Errorf("console after the failed reload: %d", code)
	}
}

// TestConsoleSessionsSurviveAMove: a reload that moves the console keeps
// its sessions (one console handler per runtime).
func TestConsoleSessionsSurviveAMove(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	base := strings.Replace(h.cfgText, literalAdminBlock, "", 1)
	cookie := consoleLogin(t, "http://"+h.rt.ConsoleAddr().String())

	h.rewrite(base + strings.Replace(literalAdminBlock, "127.0.0.1:0", "127.0.0.3:0", 1))
	if err := h.rt.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("GET", "http://"+h.rt.ConsoleAddr().String()+"/queue", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(cookie)
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("signed-in page after the move: %d (%s), want 200", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestConsoleIdleConnectionsGiveWay: connections without a request in
// progress give their slot to newcomers, oldest first, so a client that
// opens many and sends nothing cannot keep the operators out.
func TestConsoleIdleConnectionsGiveWay(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	addr := h.rt.ConsoleAddr().String()
	held := dialMany(t, addr, "127.0.0.1", 80)
	if code := overviewStatus(t, http.DefaultClient, "http://"+addr); code != http.StatusOK {
		t.Fatalf("request after 80 idle connections: %d", code)
	}
	_ = held[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := held[0].Read(make([]byte, 1)); !closedByPeer(err) {
		t.Errorf("oldest idle connection: read %v, want it closed for a newcomer", err)
	}
	_ = held[79].SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := held[79].Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("newest idle connection: read %v, want it still open", err)
	}
}

// TestConsoleBusyConnectionsAreCappedPerClient: a client with 16
// requests in progress gets no more connections, and other clients are
// still served.
func TestConsoleBusyConnectionsAreCappedPerClient(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	addr := h.rt.ConsoleAddr().String()
	for _, c := range dialMany(t, addr, "127.0.0.1", 16) {
		// A sign-in whose form never arrives: the connection is busy (its
		// handler reads the body) until the read timeout. The server's
		// "100 Continue" says the handler is reading.
		fmt.Fprintf(c, "POST /login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", addr)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.Contains(line, "100 Continue") {
			t.Fatalf("busy connection: %q, %v", line, err)
		}
	}
	probe := dialMany(t, addr, "127.0.0.1", 1)[0]
	fmt.Fprintf(probe, "GET /api/v1/overview HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	_ = probe.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := probe.Read(make([]byte, 1)); !closedByPeer(err) {
		t.Errorf("a 17th connection of the client: read %v, want it closed without an answer", err)
	}
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}).DialContext}}
	if code := overviewStatus(t, other, "http://"+addr); code != http.StatusOK {
		t.Errorf("another client while the first is at its cap: %d", code)
	}
}

// dialMany opens n connections to addr from the local IP from.
func dialMany(t *testing.T, addr, from string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// closedByPeer: the read ended because the other side closed (EOF, or a
// reset when it closed with our bytes unread).
func closedByPeer(err error) bool {
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// keptAliveConn opens a connection to addr, makes one request on it and
// returns its reader, positioned after the answer: the connection stays
// open for the next request.
func keptAliveConn(t *testing.T, addr string) *bufio.Reader {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /api/v1/overview HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", addr, consoleReadToken)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("kept-alive request: %d, close %v", resp.StatusCode, resp.Close)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return br
}

func overviewStatus(t *testing.T, c *http.Client, base string) int {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/api/v1/overview", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+consoleReadToken)
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// consoleLogin signs in at the console with the read token and returns
// the session cookie.
func consoleLogin(t *testing.T, base string) *http.Cookie {
	t.Helper()
	resp, err := noRedirects.PostForm(base+"/login", url.Values{"token": {consoleReadToken}, "next": {"/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Value != "" {
			return c
		}
	}
	t.Fatalf("sign-in: %d without a session cookie", resp.StatusCode)
	return nil
}

// TestConsoleHostnamesFollowReloads: over plain HTTP the console answers
// a name only when admin { hostnames } lists it (DNS rebinding), and a
// reload that adds it applies at once.
func TestConsoleHostnamesFollowReloads(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	base := strings.Replace(h.cfgText, literalAdminBlock, "", 1)
	addr := h.rt.ConsoleAddr().String()
	named := func() int {
		req, err := http.NewRequest("GET", "http://"+addr+"/api/v1/overview", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "Relay.Internal:8080"
		req.Header.Set("Authorization", "Bearer "+consoleReadToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := named(); code != http.StatusMisdirectedRequest {
		t.Errorf("unlisted name: %d, want 421", code)
	}
	h.rewrite(base + strings.Replace(literalAdminBlock, "admin {", "admin {\n  hostnames = [\"relay.internal\"]", 1))
	if err := h.rt.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if code := named(); code != http.StatusOK {
		t.Errorf("name listed in hostnames: %d, want 200", code)
	}
}

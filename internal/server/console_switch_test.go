package server_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
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
	if err := h.rt.Reload(t.Context()); err != nil {
		t.Fatalf("reload turning TLS on at %s: %v", addr, err)
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

// TestConsoleConnectionsAreCapped: a client holding many idle connections
// cannot take more than the cap; the console serves again once they go.
func TestConsoleConnectionsAreCapped(t *testing.T) {
	h := consoleHarness(t, harnessOptions{}, literalAdminBlock)
	addr := h.rt.ConsoleAddr().String()
	var held []net.Conn
	for range 64 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	// The cap is reached once the console has accepted them all; a request
	// beyond it waits in the backlog and is not answered.
	quick := &http.Client{Timeout: 300 * time.Millisecond}
	testutil.WaitFor(t, 10*time.Second, "the held connections accepted", func() bool {
		_, err := quick.Get("http://" + addr + "/api/v1/overview")
		return err != nil
	})
	held[0].Close()
	held = held[1:]
	if code := overviewStatus(t, http.DefaultClient, "http://"+addr); code != http.StatusOK {
		t.Errorf("request after a held connection closed: %d", code)
	}
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

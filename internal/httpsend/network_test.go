package httpsend_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// rawServer accepts connections on 127.0.0.1 and hands each to serve.
func rawServer(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// bigBody is larger than the socket buffers, so that a server that stops
// reading makes the write fail.
const bigBody = 16 << 20

func TestDoClassifiesNetworkFailures(t *testing.T) {
	answering := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(answering.Close)
	untrusted := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(untrusted.Close)
	silent := rawServer(t, func(c net.Conn) { // reads the whole request, answers nothing
		if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			_, _ = io.Copy(io.Discard, req.Body)
		}
	})
	hangsUp := rawServer(t, func(c net.Conn) { // reads the header, then hangs up
		_, _ = http.ReadRequest(bufio.NewReader(c))
	})
	tests := []struct {
		name    string
		url     string
		size    int
		kind    transport.Kind
		advice  bool
		success bool
	}{
		{name: "answered", url: answering.URL, size: 10, success: true},
		{name: "connection refused", url: closedPort(t), size: 10, kind: transport.KindConnect},
		{name: "untrusted certificate", url: untrusted.URL, size: 10, kind: transport.KindConnect, advice: true},
		{name: "closed after the whole request", url: silent, size: 10, kind: transport.KindAmbiguous},
		{name: "closed while the body was written", url: hangsUp, size: bigBody, kind: transport.KindLost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(client.CloseIdleConnections)
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, tt.url+"/send", strings.NewReader(strings.Repeat("x", tt.size)))
			if err != nil {
				t.Fatal(err)
			}
			resp, f := httpsend.Do(client, req, "Test API")
			if tt.success {
				if f != nil {
					t.Fatalf("failure %v", f)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					t.Errorf("status %d", resp.StatusCode)
				}
				return
			}
			if f == nil {
				resp.Body.Close()
				t.Fatalf("answer %d, want a failure", resp.StatusCode)
			}
			if f.Err.Kind != tt.kind || !f.Err.Temporary() || f.Account != limits.Failure || f.Provider != limits.Failure {
				t.Errorf("failure kind %d (%s) outcomes %d/%d: %v", f.Err.Kind, transport.ReplyText(f.Err.Reply), f.Account, f.Provider, f)
			}
			if (f.Advice != "") != tt.advice {
				t.Errorf("advice %q", f.Advice)
			}
			if !strings.Contains(f.Err.Reply.Message, "Test API") || strings.Contains(f.Err.Error(), tt.url) {
				t.Errorf("reply %q, error %q: want the provider named and no URL", f.Err.Reply.Message, f.Err.Error())
			}
		})
	}
}

// TestDoAfterTheCallerGaveUp: a request our side cancelled counts for no
// circuit.
func TestDoAfterTheCallerGaveUp(t *testing.T) {
	arrived := make(chan struct{})
	held := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		close(arrived)
		<-r.Context().Done()
	}))
	t.Cleanup(held.Close)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, held.URL, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	_, f := httpsend.Do(held.Client(), req, "Test API")
	if f == nil || f.Err.Kind != transport.KindAmbiguous || f.Account != 0 || f.Provider != 0 {
		t.Fatalf("cancelled after the request was written: %+v", f)
	}
}

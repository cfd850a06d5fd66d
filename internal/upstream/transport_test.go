package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// scriptedProvider accepts every command over plain TCP on loopback and
// counts its connections.
type scriptedProvider struct {
	ln    net.Listener
	conns atomic.Int64
}

func startScriptedProvider(t *testing.T) *scriptedProvider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &scriptedProvider{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			go p.serve(c)
		}
	}()
	return p
}

func (p *scriptedProvider) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	inData := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch {
		case inData && line == ".\r\n":
			inData = false
			io.WriteString(c, "250 2.0.0 OK\r\n")
		case inData:
		case strings.HasPrefix(line, "DATA"):
			inData = true
			io.WriteString(c, "354 go ahead\r\n")
		default:
			io.WriteString(c, "250 OK\r\n")
		}
	}
}

// dialPool hands out fresh connections to the provider (no greeting or
// AUTH: the transport's steps start at MAIL).
type dialPool struct {
	addr      string
	mu        sync.Mutex
	discarded int
}

func (p *dialPool) Get(context.Context) (*Conn, bool, error) {
	raw, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, false, err
	}
	return &Conn{c: newSMTPClient(raw, time.Minute), provider: "p", m: NewMetrics(nil), state: "in_use"}, false, nil
}
func (p *dialPool) TryGet(ctx context.Context) (*Conn, bool, error) { return p.Get(ctx) }
func (p *dialPool) Put(c *Conn)                                     { c.c.close() }
func (p *dialPool) Discard(c *Conn) {
	p.mu.Lock()
	p.discarded++
	p.mu.Unlock()
	c.c.close()
}

// brokenMessage fails partway through, like a stored body whose key
// cannot be unwrapped.
type brokenMessage struct{}

func (brokenMessage) Reader() (io.Reader, error) {
	return io.MultiReader(strings.NewReader("Subject: x\r\n\r\nfirst chunk\r\n"), errReader{}), nil
}
func (brokenMessage) Size() int64 { return 100 }

type errReader struct{}

func (errReader) Read([]byte) (int, error) {
	return 0, errors.New("store: unavailable: unwrapping a data key")
}

// A failure to read the relay's own copy of the message is the relay's:
// not retried on fresh connections, not held against the account or the
// provider, and the cut-off connection is not reused.
func TestUnreadableMessageIsNotTheProvidersFault(t *testing.T) {
	prov := startScriptedProvider(t)
	pool := &dialPool{addr: prov.ln.Addr().String()}
	acct := limits.NewCircuit(limits.CircuitSettings{Name: "account", ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	provCircuit := limits.NewCircuit(limits.CircuitSettings{Name: "provider", MinRequests: 1, FailureRatio: 0.5, OpenTimeout: time.Hour})
	tr := &Transport{Account: "a@example.com", Provider: "p", Pool: pool, Circuit: acct, ProviderCircuit: provCircuit}
	ctx := context.Background()
	// Declared 7-bit: the scripted provider offers no 8BITMIME, and an
	// undeclared message would be read (and fail) before DATA, on a
	// connection still whole; this test is about a read failing during DATA.
	env := transport.Envelope{ID: "X", Account: "a@example.com", From: "a@example.com", Mail: transport.MailOptions{Body: smtp.Body7Bit}}
	d, err := tr.Begin(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.AddRcpt(ctx, "r@example.net", transport.RcptOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = d.Body(ctx, brokenMessage{})
	te := transport.As(err)
	if err == nil || te.Kind != transport.KindLocal || te.Reply.Code != 451 {
		t.Fatalf("Body = %v (kind %d), want a local 451", err, te.Kind)
	}
	if a, p := acct.State(), provCircuit.State(); a != limits.StateClosed || p != limits.StateClosed {
		t.Errorf("circuits account %s, provider %s: the relay's own failure was held against them", a, p)
	}
	if n := prov.conns.Load(); n != 1 {
		t.Errorf("the provider saw %d connections, want 1 (no retry of a local failure)", n)
	}
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if pool.discarded != 1 {
		t.Errorf("%d connections discarded, want the cut-off one", pool.discarded)
	}
}

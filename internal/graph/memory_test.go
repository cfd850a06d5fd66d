package graph_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/graph"
	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// The memory test runs the sandbox in a child process (this test binary,
// started again), so that what the test process allocates is the
// transport's doing, not the sandbox's, which keeps what it receives.

const sandboxChildEnv = "OAUTHRELAY_GRAPH_SANDBOX_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(sandboxChildEnv) != "" {
		os.Exit(runSandboxChild())
	}
	os.Exit(m.Run())
}

// childHello is what the child prints first.
type childHello struct {
	GraphURL, TokenURL string
	CA                 []byte
}

// childFile is a delivered file as the child reports it.
type childFile struct {
	Name, MediaType, SHA256 string
	Size                    int
}

type childMessage struct {
	To    []string
	Files []childFile
	Texts []string
}

// runSandboxChild serves a sandbox until its stdin closes; each line read
// is answered with the messages sent so far.
func runSandboxChild() int {
	sb, err := devsandbox.Start(devsandbox.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer sb.Close()
	sb.Tokens.AddClient(appID, appSecret)
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(childHello{GraphURL: sb.Graph.URL, TokenURL: sb.Tokens.URL, CA: sb.CA.PEM})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var report []childMessage
		for _, m := range sb.Graph.Messages() {
			cm := childMessage{To: m.To}
			for _, l := range deliveredLeaves(childTB{}, m.Data) {
				if l.filename == "" {
					cm.Texts = append(cm.Texts, l.mediaType+": "+string(l.content))
					continue
				}
				sum := sha256.Sum256(l.content)
				cm.Files = append(cm.Files, childFile{Name: l.filename, MediaType: l.mediaType, SHA256: hex.EncodeToString(sum[:]), Size: len(l.content)})
			}
			report = append(report, cm)
		}
		_ = out.Encode(report)
	}
	return 0
}

// childTB lets the child use the test helpers; a failure ends it.
type childTB struct{ testing.TB }

func (childTB) Helper() {}
func (childTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	os.Exit(2)
}
func (childTB) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

// sandboxChild is a sandbox in a child process.
type sandboxChild struct {
	hello childHello
	in    io.WriteCloser
	out   *json.Decoder
}

func startSandboxChild(t *testing.T) *sandboxChild {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sandboxChildEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	c := &sandboxChild{in: in, out: json.NewDecoder(out)}
	if err := c.out.Decode(&c.hello); err != nil {
		t.Fatalf("sandbox child: %v", err)
	}
	return c
}

func (c *sandboxChild) messages(t *testing.T) []childMessage {
	t.Helper()
	if _, err := io.WriteString(c.in, "report\n"); err != nil {
		t.Fatal(err)
	}
	var report []childMessage
	if err := c.out.Decode(&report); err != nil {
		t.Fatal(err)
	}
	return report
}

func (c *sandboxChild) transport(t *testing.T) *graph.Transport {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.hello.CA) {
		t.Fatal("the child's CA does not parse")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(client.CloseIdleConnections)
	src := oauth.NewSource(oauth.Settings{
		Name: mailbox, Flow: config.FlowClientCredentials, TokenURL: c.hello.TokenURL,
		ClientID: appID, ClientSecret: func() (string, error) { return appSecret, nil },
		Scopes:     []string{devsandbox.GraphScope},
		HTTPClient: oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: pool}),
	})
	return &graph.Transport{Mailbox: httpsend.Mailbox{Account: mailbox, BaseURL: c.hello.GraphURL, Tokens: src, HTTP: client}}
}

// generated is a message with one attachment of n pseudo-random bytes,
// produced as it is read: the test holds no copy of it.
type generated struct {
	head, tail string
	n          int
	seed       byte
}

func newGenerated(n int, seed byte) generated {
	head := largeHeader + "Content-Type: multipart/mixed; boundary=\"gen\"\r\n\r\n--gen\r\n" + textPart("plain", "the archive") +
		"\r\n--gen\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"archive.bin\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n"
	return generated{head: head, tail: "\r\n--gen--\r\n", n: n, seed: seed}
}

func (g generated) Size() int64 {
	lines, rest := g.n/57, g.n%57 // 57 bytes make a line of 76 characters
	size := lines*78 - 2
	if rest > 0 {
		size += 2 + base64.StdEncoding.EncodedLen(rest)
	}
	return int64(len(g.head) + size + len(g.tail))
}

func (g generated) Reader() (io.Reader, error) {
	return io.MultiReader(strings.NewReader(g.head), &base64Lines76{src: rand.NewChaCha8([32]byte{g.seed}), left: g.n}, strings.NewReader(g.tail)), nil
}

// digest is the SHA-256 of the attachment's content.
func (g generated) digest() string {
	h := sha256.New()
	_, _ = io.CopyN(h, rand.NewChaCha8([32]byte{g.seed}), int64(g.n))
	return hex.EncodeToString(h.Sum(nil))
}

// base64Lines76 encodes left bytes of src in lines of 76 characters,
// CRLF between lines.
type base64Lines76 struct {
	src  io.Reader
	left int
	line []byte
	raw  [57]byte
	buf  [80]byte
}

func (b *base64Lines76) Read(p []byte) (int, error) {
	if len(b.line) == 0 {
		if b.left == 0 {
			return 0, io.EOF
		}
		n := min(57, b.left)
		if _, err := io.ReadFull(b.src, b.raw[:n]); err != nil {
			return 0, err
		}
		b.left -= n
		enc := base64.StdEncoding.EncodedLen(n)
		base64.StdEncoding.Encode(b.buf[:enc], b.raw[:n])
		b.line = b.buf[:enc]
		if b.left > 0 {
			b.line = append(b.line, '\r', '\n')
		}
	}
	n := copy(p, b.line)
	b.line = b.line[n:]
	return n, nil
}

func countBytes(r io.Reader) int64 {
	n, _ := io.Copy(io.Discard, r)
	return n
}

// heapSampler records the most heap in use while it runs.
type heapSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

func sampleHeap() *heapSampler {
	s := &heapSampler{stop: make(chan struct{})}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	s.done.Go(func() {
		for {
			metrics.Read(sample)
			s.peak = max(s.peak, sample[0].Value.Uint64())
			select {
			case <-s.stop:
				return
			default:
				runtime.Gosched()
			}
		}
	})
	return s
}

func (s *heapSampler) Stop() uint64 {
	close(s.stop)
	s.done.Wait()
	return s.peak
}

// TestLargeMessageMemoryBounded sends a 40 MB message with a 30 MB
// attachment and measures what the relay's side allocates: the message
// is streamed, never held.
func TestLargeMessageMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 40 MB")
	}
	child := startSandboxChild(t)
	tr := child.transport(t)
	msg := newGenerated(30_000_000, 42)
	if r, _ := msg.Reader(); countBytes(r) != msg.Size() {
		t.Fatalf("the generated message is not Size() = %d bytes long", msg.Size())
	}
	ctx := context.Background()
	d, err := tr.Begin(ctx, transport.Envelope{ID: "m40", Account: mailbox, From: mailbox, Mail: transport.MailOptions{Size: msg.Size()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range largeRcpts {
		if err := d.AddRcpt(ctx, r, transport.RcptOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	sampler := sampleHeap()
	_, err = d.Body(ctx, msg)
	peak := sampler.Stop()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("%v (%s)", err, transport.ReplyText(transport.As(err).Reply))
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	peakAbove := int64(peak) - int64(before.HeapAlloc)
	t.Logf("message %d bytes: allocated %.1f MiB in %d allocations; heap peak %.1f MiB above the start",
		msg.Size(), float64(allocated)/(1<<20), after.Mallocs-before.Mallocs, float64(peakAbove)/(1<<20))
	// Holding the message (or its attachment) would allocate 30 MB or
	// more; the transport needs a chunk buffer (3.1 MiB), the draft, and
	// HTTP and TLS buffers.
	if allocated > 16<<20 {
		t.Errorf("allocated %d bytes for a %d-byte message", allocated, msg.Size())
	}
	if peakAbove > 16<<20 {
		t.Errorf("heap peak %d bytes above the start", peakAbove)
	}
	report := child.messages(t)
	if len(report) != 1 {
		t.Fatalf("%d messages sent, want 1", len(report))
	}
	to := slices.Clone(report[0].To)
	slices.Sort(to)
	if !slices.Equal(to, []string{"a@example.com", "blind@example.com", "c@example.com"}) {
		t.Errorf("recipients %v", to)
	}
	want := []childFile{{Name: "archive.bin", MediaType: "application/octet-stream", SHA256: msg.digest(), Size: msg.n}}
	if !slices.Equal(report[0].Files, want) || !slices.Equal(report[0].Texts, []string{"text/plain: the archive"}) {
		t.Errorf("delivered files %+v and texts %q; want %+v", report[0].Files, report[0].Texts, want)
	}
}

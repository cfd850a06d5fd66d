package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/oauthrelay/oauthrelay/internal/store"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

func TestTransportStoresBeforeSuccess(t *testing.T) {
	h := newHarness(t, testConfig())
	data := "Received: from client\r\nMessage-ID:\r\n <abc.123@client.test> (comment)\r\nSubject: hi\r\n\r\nbody \xc3\xa9\r\n.\r\n"
	d, err := h.q.Transport().Begin(context.Background(), transport.Envelope{
		ID: "ID1", Account: acct, From: "<sender@example.com>", Listener: "printers", Client: "scanner",
		Mail: transport.MailOptions{Size: int64(len(data)), Body: smtp.Body8BitMIME},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"a@example.net", "b@example.net", "a@example.net"} {
		if err := d.AddRcpt(context.Background(), r, transport.RcptOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := d.Body(context.Background(), stringMessage(data))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Queued || res.Reply != "queued as ID1" {
		t.Errorf("result = %+v, want Queued and \"queued as ID1\"", res)
	}
	env, hasBody, _ := h.st.msg("ID1")
	want := store.Envelope{
		ID: "ID1", Account: acct, Listener: "printers", Client: "scanner", From: "<sender@example.com>",
		MailParams: []string{"BODY=8BITMIME"},
		Rcpts: []store.Recipient{
			{Addr: "a@example.net", State: store.RcptPending},
			{Addr: "b@example.net", State: store.RcptPending},
		},
		Size: int64(len(data)), HeaderID: "<abc.123@client.test>",
		Received: t0, Expires: t0.Add(24 * time.Hour), NextAttempt: t0, State: store.StateQueued,
	}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("stored envelope (-want +got):\n%s", diff)
	}
	if !hasBody || string(h.st.body("ID1")) != data {
		t.Errorf("stored body differs from the message")
	}
	select {
	case <-h.q.kick:
	default:
		t.Error("a stored message did not kick the scheduler")
	}
	if got := h.metric("oauthrelay_queue_enqueued_total", "account", acct); got != 1 {
		t.Errorf("enqueued_total = %v, want 1", got)
	}
	// The delivery is over: nothing more is accepted.
	if err := d.AddRcpt(context.Background(), "c@example.net", transport.RcptOptions{}); err == nil {
		t.Error("AddRcpt after Body succeeded")
	}
}

func TestTransportRefusesWhenTheStoreFails(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"unavailable", fmt.Errorf("sqlite: disk I/O error: %w", store.ErrUnavailable)},
		{"any error", errors.New("commit failed after fsync error")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig())
			h.st.enqueueErr = func(*store.NewMessage) error { return tt.err }
			d, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: "ID2", Account: acct, From: "<s@example.com>"})
			_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
			res, err := d.Body(context.Background(), stringMessage("Subject: x\r\n\r\nsecret body text\r\n"))
			var te *transport.Error
			if !errors.As(err, &te) {
				t.Fatalf("Body = %+v, %v; want a *transport.Error", res, err)
			}
			if te.Kind != transport.KindStorage || testutil.Code(te.Reply) != "452 4.3.1" || te.Attempted() || !te.Temporary() {
				t.Errorf("error = kind %v reply %q; want KindStorage 452 4.3.1", te.Kind, testutil.Code(te.Reply))
			}
			if !strings.Contains(te.Reply.Message, "Insufficient system storage") {
				t.Errorf("reply text = %q", te.Reply.Message)
			}
			if res.Queued {
				t.Error("result says queued")
			}
			if _, _, ok := h.st.msg("ID2"); ok {
				t.Error("a refused message is in the store")
			}
			if got := h.metric("oauthrelay_queue_store_errors_total", "op", "enqueue"); got != 1 {
				t.Errorf("store_errors_total{op=enqueue} = %v, want 1", got)
			}
			if strings.Contains(h.logs.String(), "secret body text") {
				t.Error("the log contains the message body")
			}
		})
	}
}

// brokenMessage fails while it is read, as a spool file might.
type brokenMessage struct{}

func (brokenMessage) Reader() (io.Reader, error) {
	return io.MultiReader(strings.NewReader("Subject: x\r\n\r\nsome"), errReader{}), nil
}
func (brokenMessage) Size() int64 { return 100 }

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("spool: read failed") }

func TestTransportReadErrorIsNotAStorageError(t *testing.T) {
	h := newHarness(t, testConfig())
	d, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: "ID3", Account: acct, From: "<s@example.com>"})
	_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
	_, err := d.Body(context.Background(), brokenMessage{})
	var te *transport.Error
	if !errors.As(err, &te) || te.Kind != transport.KindLocal || testutil.Code(te.Reply) != "451 4.3.0" {
		t.Fatalf("Body error = %v; want KindLocal 451 4.3.0", err)
	}
	if _, _, ok := h.st.msg("ID3"); ok {
		t.Error("a message that could not be read is in the store")
	}
}

func TestTransportResetAndAbortStoreNothing(t *testing.T) {
	h := newHarness(t, testConfig())
	d, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: "R1", Account: acct, From: "<s@example.com>"})
	_ = d.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
	if err := d.Reset(context.Background()); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	d2, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: "R2", Account: acct, From: "<s@example.com>"})
	_ = d2.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
	d2.Abort()
	if _, err := d2.Body(context.Background(), stringMessage("Subject: x\r\n\r\n")); err == nil {
		t.Error("Body after Abort succeeded")
	}
	for _, id := range []string{"R1", "R2"} {
		if _, _, ok := h.st.msg(id); ok {
			t.Errorf("%s was stored", id)
		}
	}
	// A dry run tells the truth about the store.
	h.st.mu.Lock()
	h.st.pingErr = store.ErrUnavailable
	h.st.mu.Unlock()
	d3, _ := h.q.Transport().Begin(context.Background(), transport.Envelope{ID: "R3", Account: acct, From: "<s@example.com>"})
	_ = d3.AddRcpt(context.Background(), "r@example.net", transport.RcptOptions{})
	if err := d3.Reset(context.Background()); testutil.Code(transport.As(err).Reply) != "452 4.3.1" {
		t.Errorf("Reset with the store down = %v; want 452 4.3.1", err)
	}
}

func TestTransportLargeHeaderIsStoredWhole(t *testing.T) {
	h := newHarness(t, testConfig())
	var b strings.Builder
	for b.Len() < 2*transport.MaxHeader {
		b.WriteString("X-Filler: " + strings.Repeat("x", 70) + "\r\n")
	}
	b.WriteString("Message-ID: <late@client.test>\r\n\r\nbody\r\n")
	data := b.String()
	id := h.submitMessage("<s@example.com>", data, "r@example.net")
	env := h.env(id)
	if env.HeaderID != "" {
		t.Errorf("HeaderID = %q; a Message-ID beyond %d bytes is not looked for", env.HeaderID, transport.MaxHeader)
	}
	if string(h.st.body(id)) != data {
		t.Error("the stored body differs from the message")
	}
}

// The store may run a batch twice (after another request of the batch
// failed): the received message then has to be read again from its
// start, headers included.
func TestSourceReaderStartsOver(t *testing.T) {
	data := "Subject: again\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"
	src := &sourceReader{r: strings.NewReader(data), msg: stringMessage(data)}
	head := make([]byte, 10)
	if _, err := io.ReadFull(src, head); err != nil {
		t.Fatal(err)
	}
	if at, err := src.Seek(0, io.SeekCurrent); err != nil || at != 10 {
		t.Fatalf("Seek(0, SeekCurrent) = %d, %v; want 10", at, err)
	}
	if at, err := src.Seek(0, io.SeekStart); err != nil || at != 0 {
		t.Fatalf("Seek(0, SeekStart) = %d, %v", at, err)
	}
	got, err := io.ReadAll(src)
	if err != nil || string(got) != data {
		t.Fatalf("after starting over read %q, %v; want the whole message", got, err)
	}
	if _, err := src.Seek(5, io.SeekStart); err == nil {
		t.Error("Seek to the middle succeeded")
	}
}

// The history record keeps the decoded Subject only with
// history_subjects on, which a reload (SetConfig) turns on and off; the
// queue entry never keeps it.
func TestTransportKeepsTheSubjectWhenAsked(t *testing.T) {
	h := newHarness(t, testConfig())
	data := "Message-ID: <s@client.test>\r\nSubject: =?ISO-8859-1?Q?Gr=FC=DFe?= vom\r\n Drucker\r\n\r\nbody\r\n"
	off := h.submitMessage("<s@example.com>", data, "r@example.net")
	cfg := testConfig()
	cfg.HistorySubjects = true
	h.q.SetConfig(cfg)
	on := h.submitMessage("<s@example.com>", data, "r@example.net")
	cfg.HistorySubjects = false
	h.q.SetConfig(cfg)
	offAgain := h.submitMessage("<s@example.com>", data, "r@example.net")
	for id, want := range map[string]string{off: "", on: "Grüße vom Drucker", offAgain: ""} {
		rec, _, err := h.st.History(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Subject != want || rec.HeaderID != "<s@client.test>" {
			t.Errorf("record of %s: subject %q, Message-ID %q; want the subject %q", id, rec.Subject, rec.HeaderID, want)
		}
	}
	if string(h.st.body(on)) != data {
		t.Error("the stored body differs from the message")
	}
}

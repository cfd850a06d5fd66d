package httpsend_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/httpsend"
	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

const mailbox = "sender@example.test"

// admitted runs Admit and AddRcpt for n recipients, failing the test on
// an error.
func admitted(t *testing.T, a *httpsend.Admission, n int) {
	t.Helper()
	release, f := a.Admit(time.Now())
	if f != nil {
		t.Fatalf("Admit: %v", f)
	}
	release()
	for range n {
		if f := a.AddRcpt(time.Now()); f != nil {
			t.Fatalf("AddRcpt: %v", f)
		}
	}
}

// TestAdmissionReservation: a cancelled delivery gives its share of the
// daily quota back, a committed one keeps it.
func TestAdmissionReservation(t *testing.T) {
	lim := limits.NewAccountLimits(0, 0, 1, 0, 0)
	first := &httpsend.Admission{Account: mailbox, Provider: "Test API", Limits: lim}
	admitted(t, first, 1)
	first.Cancel()
	first.Cancel() // twice is harmless

	second := &httpsend.Admission{Account: mailbox, Provider: "Test API", Limits: lim}
	admitted(t, second, 1)
	second.Commit()
	second.Cancel() // after Commit: the share stays taken

	third := &httpsend.Admission{Account: mailbox, Provider: "Test API", Limits: lim}
	_, f := third.Admit(time.Now())
	if f == nil || f.Err.Kind != transport.KindLimit || f.Err.Reply.Code != 451 || f.Err.Limit != limits.KindDailyMessages || f.Err.RetryAt.IsZero() {
		t.Fatalf("over the daily quota: %+v", f)
	}
}

func TestAdmissionRecipientLimit(t *testing.T) {
	a := &httpsend.Admission{Account: mailbox, Provider: "Test API", Limits: limits.NewAccountLimits(0, 0, 0, 0, 1)}
	admitted(t, a, 1)
	f := a.AddRcpt(time.Now())
	if f == nil || f.Err.Kind != transport.KindLimit || f.Err.Reply.Code != 452 || f.Err.Reply.EnhancedCode != (smtp.EnhancedCode{4, 5, 3}) {
		t.Fatalf("second recipient: %+v", f)
	}
	a.Cancel()
}

func TestAdmissionWithoutLimits(t *testing.T) {
	a := &httpsend.Admission{Account: mailbox, Provider: "Test API"}
	if f := a.AddRcpt(time.Now()); f == nil || f.Err.Kind != transport.KindLocal {
		t.Fatalf("AddRcpt before Admit: %+v", f)
	}
	admitted(t, a, 500)
	a.Commit()
}

// TestAdmissionCircuits: an attempt's outcomes reach the circuits; an
// open circuit refuses at once and names its scope.
func TestAdmissionCircuits(t *testing.T) {
	tests := []struct {
		name      string
		failure   *httpsend.Failure
		wantScope string // "" when no circuit opens
	}{
		{"success", nil, ""},
		{"the relay's own refusal", httpsend.Local(httpsend.ReplyLocal, nil), ""},
		{"the account's failure", &httpsend.Failure{Err: &transport.Error{Kind: transport.KindAuth}, Account: limits.Failure}, "account"},
		{"the provider's failure", &httpsend.Failure{Err: &transport.Error{Kind: transport.KindConnect}, Provider: limits.Failure}, "provider"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &httpsend.Admission{Account: mailbox, Provider: "Test API",
				Circuit:         limits.NewCircuit(limits.CircuitSettings{Name: mailbox, ConsecutiveFailures: 1, OpenTimeout: time.Hour}),
				ProviderCircuit: limits.NewCircuit(limits.CircuitSettings{Name: "provider", MinRequests: 1, FailureRatio: 0.5, OpenTimeout: time.Hour})}
			admitted(t, a, 1)
			a.Record(tt.failure)
			a.Cancel()
			next := httpsend.Admission{Account: a.Account, Provider: a.Provider, Circuit: a.Circuit, ProviderCircuit: a.ProviderCircuit}
			release, f := next.Admit(time.Now())
			if tt.wantScope == "" {
				if f != nil {
					t.Fatalf("refused: %+v", f)
				}
				release()
				return
			}
			if f == nil {
				t.Fatal("admitted with the circuit open")
			}
			if f.Err.Kind != transport.KindCircuit || f.Err.Limit != tt.wantScope || f.Err.Reply.Code != 451 || f.Err.RetryAt.IsZero() || f.Err.Attempted() {
				t.Errorf("refusal %+v (limit %q)", f.Err, f.Err.Limit)
			}
			if !strings.Contains(f.Advice, "Test API") {
				t.Errorf("advice %q does not name the provider", f.Advice)
			}
		})
	}
}

func TestFailLogs(t *testing.T) {
	var buf testutil.LogBuffer
	a := &httpsend.Admission{Account: mailbox, Provider: "Test API", Log: buf.Logger(t)}
	provider := &httpsend.Failure{Err: &transport.Error{Kind: transport.KindProvider, Err: errors.New("answered 403"), RetryAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "denied"}}, Advice: "grant it"}
	err := a.Fail(provider)
	if err != provider.Err {
		t.Fatalf("Fail returned %v, want the failure's *transport.Error", err)
	}
	_ = a.Fail(httpsend.Local(httpsend.ReplyLocal, errors.New("spool unreadable")))
	out := buf.String()
	for _, want := range []string{
		"[WARN]  test: Test API delivery failed: kind=0 reply=\"550 5.7.1 denied\" error=\"answered 403\" advice=\"grant it\" retry_at=2030-01-02T03:04:05Z",
		"[INFO]  test: refused by the relay: kind=1 reply=\"451 4.3.0 Local error in processing\" error=\"spool unreadable\"",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestLimitFailure(t *testing.T) {
	tests := []struct {
		err  error
		code int
		kind transport.Kind
	}{
		{&limits.LimitError{Kind: limits.KindRate, Limit: 30}, 451, transport.KindLimit},
		{&limits.LimitError{Kind: limits.KindDailyRcpts, Limit: 10}, 452, transport.KindLimit},
		{errors.New("store unavailable"), 451, transport.KindLocal},
	}
	for _, tt := range tests {
		f := httpsend.LimitFailure(tt.err)
		if f.Err.Reply.Code != tt.code || f.Err.Kind != tt.kind || !f.Err.Temporary() || f.Account != 0 || f.Provider != 0 {
			t.Errorf("%v: %+v", tt.err, f.Err)
		}
	}
}

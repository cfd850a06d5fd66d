package httpsend

import (
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/oauthrelay/oauthrelay/internal/limits"
	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Admission is one delivery's passage through its account's protection:
// the circuits (the provider's, then the account's) and its share of the
// account's limits, taken as a reservation at the first Admit and kept
// only by Commit. It is used by the delivery's goroutine only.
type Admission struct {
	// Account is the sending mailbox (the circuits' member).
	Account string
	// Member names the mailbox in the provider circuit's count of failing
	// mailboxes (default: Account); the mailboxes of a domain-wide
	// account share one name, so that senders a client makes up cannot
	// open the provider's circuit for every mailbox.
	Member string
	// Provider names the service in log lines ("Microsoft Graph").
	Provider string
	// Limits are the account's sending limits (nil: none).
	Limits limits.Limiter
	// Circuit guards the account, ProviderCircuit the provider; nil
	// disables one.
	Circuit, ProviderCircuit *limits.Circuit
	// Log receives one line per failure (nil: none).
	Log hclog.Logger

	res  limits.Reservation
	done bool
}

// Admit checks the circuits and, on the first call, reserves the
// message's share of the account's limits. release gives the circuits'
// probe slots back: call it once the provider was contacted.
func (a *Admission) Admit(now time.Time) (release func(), f *Failure) {
	release, refused, err := limits.AllowAll(now, a.ProviderCircuit, a.Circuit)
	if err != nil {
		scope := "account"
		if refused == a.ProviderCircuit {
			scope = "provider"
		}
		return nil, &Failure{Err: &transport.Error{Kind: transport.KindCircuit, Limit: scope, RetryAt: refused.RetryAt(now), Reply: ReplyCircuitOpen, Err: err},
			Advice: scope + " circuit open: not contacting " + a.Provider}
	}
	if a.res != nil {
		return release, nil
	}
	if a.Limits == nil {
		a.res = NoReservation{}
		return release, nil
	}
	res, err := a.Limits.Reserve(now)
	if err != nil {
		release()
		return nil, LimitFailure(err)
	}
	a.res = res
	return release, nil
}

// AddRcpt takes one recipient's share of the limits; Admit must have
// succeeded before.
func (a *Admission) AddRcpt(now time.Time) *Failure {
	if a.res == nil {
		return Local(ReplyLocal, errNotAdmitted)
	}
	if err := a.res.AddRcpt(now); err != nil {
		return LimitFailure(err)
	}
	return nil
}

// Record tells the circuits what an attempt (nil: a success) says about
// the account and the provider; outcomes of 0 count for neither.
func (a *Admission) Record(f *Failure) {
	acct, prov := limits.Success, limits.Success
	if f != nil {
		acct, prov = f.Account, f.Provider
	}
	now := time.Now()
	if acct != 0 && a.Circuit != nil {
		a.Circuit.Record(now, a.Account, acct)
	}
	if prov != 0 && a.ProviderCircuit != nil {
		a.ProviderCircuit.Record(now, limits.MemberName(a.Member, a.Account), prov)
	}
}

// Commit keeps the reservation: the provider accepted the message.
func (a *Admission) Commit() {
	if a.done {
		return
	}
	a.done = true
	if a.res != nil {
		a.res.Commit()
	}
}

// Cancel gives the reservation back unless Commit kept it; it may be
// called more than once.
func (a *Admission) Cancel() {
	if a.done {
		return
	}
	a.done = true
	if a.res != nil {
		a.res.Cancel(time.Now())
	}
}

// Fail logs a failure for the operator and returns the contract's error.
// The relay's own refusals are logged at Info, the provider's at Warn.
func (a *Admission) Fail(f *Failure) error {
	args := []any{"kind", f.Err.Kind, "reply", transport.ReplyText(f.Err.Reply), "error", f.Err.Error()}
	if f.Advice != "" {
		args = append(args, "advice", f.Advice)
	}
	if !f.Err.RetryAt.IsZero() {
		args = append(args, "retry_at", f.Err.RetryAt.UTC().Format(time.RFC3339))
	}
	log := a.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if f.Err.Kind == transport.KindLocal || f.Err.Kind == transport.KindLimit {
		log.Info("refused by the relay", args...)
	} else {
		log.Warn(a.Provider+" delivery failed", args...)
	}
	return f.Err
}

// NoReservation stands for an account without limits.
type NoReservation struct{}

func (NoReservation) AddRcpt(time.Time) error { return nil }
func (NoReservation) DropRcpt()               {}
func (NoReservation) Commit()                 {}
func (NoReservation) Cancel(time.Time)        {}

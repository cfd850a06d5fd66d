// Package relay is the SMTP submission side: a go-smtp Backend whose
// sessions authenticate local clients, enforce who may send as whom, and
// relay each transaction synchronously through the upstream provider, so
// that a client hears 250 only once the provider accepted its message.
// Listeners and reloads belong to the runtime package.
package relay

import (
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Account is an upstream mailbox the relay can send as.
type Account struct {
	Address  string
	Group    string
	Provider string
	// Transport delivers the account's messages directly.
	Transport transport.Transport
	// MaxRecipients caps the recipients of one message (0: none); checked
	// by the session so that a queued message never exceeds it.
	MaxRecipients int
}

// Client is a local identity: recognised by SMTP AUTH (PasswordHash), or
// without AUTH by the network its host is in (Networks), or both.
type Client struct {
	Name  string
	Group string
	// PasswordHash is empty for a client that cannot AUTH.
	PasswordHash string
	// Allowed maps each lower-cased sender address the client may use to
	// the account that sends it.
	Allowed map[string]*Account
	// Mailboxes maps lower-cased sender addresses the client may use to
	// the domain-wide account that sends them; Domains maps domains the
	// client may send any address of (allowed_senders "*@domain") to it.
	Mailboxes map[string]*Domain
	Domains   map[string]*Domain
	// Networks are the networks whose hosts are this client without AUTH
	// (masked prefixes).
	Networks []netip.Prefix
	// SendAs, when set, is the account every message of the client is
	// sent as, whatever sender the client gives (README "Devices").
	SendAs *Account
	// SendAsMailbox, when set instead, is that address, served by the
	// domain-wide account SendAsDomain.
	SendAsMailbox string
	SendAsDomain  *Domain
}

// sendsAs reports whether the client has send_as.
func (c *Client) sendsAs() bool { return c.SendAs != nil || c.SendAsDomain != nil }

// Domain is a domain-wide account (README "Domain-wide accounts"): it
// sends as any mailbox of its domain, each an Account of its own (limits,
// circuit, pool, history) made on first use.
type Domain struct {
	// Name is the account's "*@domain".
	Name string
	// Open returns the Account of a mailbox of the domain (lower case).
	// Its error is the reply to MAIL.
	Open func(mailbox string) (*Account, error)
}

// domainFor returns the domain-wide account that sends addr (lower case)
// for the client, or nil.
func (c *Client) domainFor(addr string) *Domain {
	if d := c.Mailboxes[addr]; d != nil {
		return d
	}
	if at := strings.LastIndexByte(addr, '@'); at > 0 {
		return c.Domains[addr[at+1:]]
	}
	return nil
}

// State is the immutable view of the configuration a session works with.
// The runtime builds a new State on reload and swaps it in; sessions keep
// the State they started with.
type State struct {
	Hostname string
	DryRun   bool
	// HideClientAddress leaves the client's IP address out of the
	// Received header the relay adds (server { received_hide_client }).
	HideClientAddress bool
	Clients           map[string]*Client
	Accounts          map[string]*Account

	active atomic.Int64 // sessions using this State
	auth   *authCache
}

// SetAuthCache shares the cache of recent logins with a previous State, so
// a reload does not make every client pay a hash computation again; nil
// starts a new one.
func (st *State) SetAuthCache(prev *State) {
	if prev != nil && prev.auth != nil {
		st.auth = prev.auth
		return
	}
	st.auth = newAuthCache()
}

func (st *State) acquire() { st.active.Add(1) }
func (st *State) release() { st.active.Add(-1) }

// Acquire counts a user of the State besides sessions (a queue delivery):
// its pools stay open until the matching Release.
func (st *State) Acquire() { st.acquire() }

// Release ends a use counted by Acquire.
func (st *State) Release() { st.release() }

// ActiveSessions returns how many sessions still use this State; a retired
// State's resources are released when it reaches zero.
func (st *State) ActiveSessions() int64 { return st.active.Load() }

// authenticate checks a local client's credentials. For an unknown
// username, or a client without a password (recognised by its network
// only), it still verifies the password against some client's hash, so the
// answer takes as long as for a known one and does not reveal which
// usernames exist.
func (st *State) authenticate(username, password string) (*Client, error) {
	c, ok := st.Clients[username]
	known := ok && c.PasswordHash != ""
	hash := ""
	if known {
		hash = c.PasswordHash
	} else {
		for _, other := range st.Clients {
			if other.PasswordHash != "" {
				hash = other.PasswordHash
				break
			}
		}
	}
	if hash == "" {
		return nil, errBadCredentials
	}
	now := time.Now()
	if known && st.auth.check(username, password, hash, now) {
		return c, nil
	}
	if err := st.auth.verify(username, password, hash); err != nil || !known {
		return nil, errBadCredentials
	}
	st.auth.remember(username, password, hash, now)
	return c, nil
}

// clientByNetwork returns the client whose networks hold addr, the one
// with the most specific network when several do (the configuration
// refuses the same network in two clients, so there is one), or nil.
func (st *State) clientByNetwork(addr netip.Addr) *Client {
	if !addr.IsValid() {
		return nil
	}
	var best *Client
	bits := -1
	for _, c := range st.Clients {
		for _, n := range c.Networks {
			if n.Bits() > bits && n.Contains(addr) {
				best, bits = c, n.Bits()
			}
		}
	}
	return best
}

// SMTP replies of the relay (README "Replies"; enhanced codes of RFC 3463).
var (
	errAuthRequired       = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errBadCredentials     = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errEncryptionRequired = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism; use STARTTLS"}
	// ErrSenderNotAllowed refuses a sender the client may not use;
	// ErrDomainBusy a new mailbox of a domain-wide account that serves
	// max_mailboxes others in use (a later try finds room).
	ErrSenderNotAllowed   = errSenderNotAllowed
	ErrDomainBusy         = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Too many mailboxes of this domain in use, try again later"}
	errSenderNotAllowed   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address not allowed for this client"}
	errMalformedPlain     = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Malformed AUTH PLAIN response: authzid NUL authcid NUL password (RFC 4616)"}
	errUnknownMechanism   = &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Unsupported authentication mechanism"}
	errNoTransaction      = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Bad sequence of commands"}
	errNestedMail         = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Nested MAIL command: a transaction is in progress; send RSET first"}
	errNoRecipients       = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	errCredentialsChanged = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Your client's credentials or permissions changed; reconnect and authenticate again"}
	errReconnect          = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "The relay's configuration changed; reconnect"}
	errStorageFull        = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage for the message now; try again later"}
	errLineTooLong        = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message has a line longer than this relay accepts; wrap long lines or use quoted-printable or base64"}
	errAuthThrottled      = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentications from your address; try again later"}
	errHeaderTooLarge     = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Header section too large to rewrite the sender (send_as); keep it under 64 KiB"}
	errHeaderMalformed    = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Header section with a bare CR or NUL: the sender cannot be rewritten (send_as); end every line with CRLF"}
	errShuttingDown       = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
)

package devsandbox

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"
)

// Style selects how the SMTP server rejects a bad token.
type Style int

const (
	// StyleGoogle answers a bad token with a 334 base64 JSON challenge, waits
	// for the client's empty line, then 535 5.7.8, as smtp.gmail.com does.
	StyleGoogle Style = iota
	// StyleMicrosoft answers 535 5.7.3 at once, as smtp.office365.com does.
	StyleMicrosoft
)

// Message is a message the sandbox accepted.
type Message struct {
	ID       string    `json:"id"`
	User     string    `json:"authenticated_as"`
	From     string    `json:"from"`
	To       []string  `json:"to"`
	Size     int       `json:"size"`
	Subject  string    `json:"subject"`
	Received time.Time `json:"received"`
	Data     []byte    `json:"-"`
	// MailParams are the MAIL parameters the client gave, decoded
	// ("BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=id", "SIZE=n").
	MailParams []string `json:"mail_params,omitempty"`
	// RcptParams are each recipient's RCPT parameters, decoded
	// ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;addr").
	RcptParams map[string][]string `json:"rcpt_params,omitempty"`
}

// SMTPServer is a submission server that demands TLS and accepts only
// XOAUTH2/OAUTHBEARER with access tokens its TokenServer issued, then
// keeps every accepted message. Replies can be scripted per recipient and
// per DATA to test how failures reach clients.
type SMTPServer struct {
	// Addr is host:port of the server.
	Addr string

	tokens *TokenServer
	srv    *smtp.Server
	log    hclog.Logger

	mu             sync.Mutex
	style          Style
	messages       []Message
	rcptReplies    map[string]*smtp.SMTPError
	mailReplies    []*smtp.SMTPError
	dataReplies    []*smtp.SMTPError
	dataEvery      int // fail every n-th DATA with dataEveryReply (0: off)
	dataEveryRply  *smtp.SMTPError
	datas          int
	transcript     bytes.Buffer
	discardBodies  bool
	dataDelay      time.Duration
	dropAfterData  int
	disabled       map[string]bool // users with SMTP AUTH disabled (5.7.139)
	requiredScope  string
	maxPerUser     int
	sessions       map[string]int
	peakPerUser    map[string]int
	refusedPerUser map[string]int
	authFailures   int
	authSuccesses  int
	connections    int
	mails          int
	live           map[*sinkSession]struct{}
	tlsByListener  bool // TLS is the listener's, not go-smtp's (no 8BITMIME or PIPELINING)
}

func newSMTPServer(ca *CA, tokens *TokenServer, opts Options, log hclog.Logger) (*SMTPServer, error) {
	implicit := opts.ImplicitTLS
	cert, err := ca.Issue("127.0.0.1", "localhost")
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	drop := map[string]bool{
		"250-8BITMIME\r\n": without(opts.Without, Ext8BitMIME),
		pipeliningLine:     without(opts.Without, ExtPipelining),
	}
	takeover := drop["250-8BITMIME\r\n"] || drop[pipeliningLine]
	var ln net.Listener
	switch {
	case takeover:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			ln = unofferedListener{Listener: ln, tls: tlsCfg, implicit: implicit, drop: drop}
		}
	case implicit:
		ln, err = tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	default:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, err
	}
	s := &SMTPServer{
		Addr:        ln.Addr().String(),
		tokens:      tokens,
		log:         log,
		rcptReplies: map[string]*smtp.SMTPError{},
		disabled:    map[string]bool{},
		sessions:    map[string]int{},
		peakPerUser: map[string]int{}, refusedPerUser: map[string]int{},
		live: map[*sinkSession]struct{}{},
	}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "sandbox.oauthrelay.test"
	s.srv.TLSConfig = tlsCfg
	s.srv.AllowInsecureAuth = false
	s.srv.EnableSMTPUTF8 = !without(opts.Without, ExtSMTPUTF8)
	s.srv.EnableDSN = !without(opts.Without, ExtDSN)
	if takeover {
		// The listener's connections do TLS themselves (see
		// unofferedListener); go-smtp sees plaintext.
		s.srv.TLSConfig, s.srv.AllowInsecureAuth, s.tlsByListener = nil, true, true
	}
	s.srv.MaxMessageBytes = 50 << 20
	// Google and Microsoft accept message lines far longer than RFC 5322's
	// 998 characters (HTML mail without line breaks).
	s.srv.MaxLineLength = 4 << 20
	s.srv.Debug = transcriptWriter{s}
	s.srv.ReadTimeout = 10 * time.Minute // RFC 5321 §4.5.3.2: a large DATA may take long
	s.srv.WriteTimeout = time.Minute
	s.srv.ErrorLog = nullLog()
	go s.srv.Serve(ln)
	return s, nil
}

func (s *SMTPServer) close() { s.srv.Close() }

// SetStyle selects Google or Microsoft failure behaviour.
func (s *SMTPServer) SetStyle(st Style) { s.mu.Lock(); s.style = st; s.mu.Unlock() }

// SetRcptReply makes RCPT TO:<addr> fail with the reply (nil clears it).
func (s *SMTPServer) SetRcptReply(addr string, r *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r == nil {
		delete(s.rcptReplies, strings.ToLower(addr))
		return
	}
	s.rcptReplies[strings.ToLower(addr)] = r
}

// FailNextMail makes the next MAIL commands fail with the replies, in order.
func (s *SMTPServer) FailNextMail(r ...*smtp.SMTPError) {
	s.mu.Lock()
	s.mailReplies = append(s.mailReplies, r...)
	s.mu.Unlock()
}

// FailNextData makes the next DATA commands fail with the replies, in order.
func (s *SMTPServer) FailNextData(r ...*smtp.SMTPError) {
	s.mu.Lock()
	s.dataReplies = append(s.dataReplies, r...)
	s.mu.Unlock()
}

// SetDataDelay makes the server wait d after each message's final dot
// before it answers, as real providers take tens to hundreds of
// milliseconds to accept a message (0: answer at once).
func (s *SMTPServer) SetDataDelay(d time.Duration) { s.mu.Lock(); s.dataDelay = d; s.mu.Unlock() }

// DiscardBodies makes the server keep only the size and subject of the
// messages it accepts (load tests with large messages).
func (s *SMTPServer) DiscardBodies() { s.mu.Lock(); s.discardBodies = true; s.mu.Unlock() }

// FailEveryNthData makes every n-th DATA command fail with the reply (n = 0
// turns it off), like a provider with a passing fault rate.
func (s *SMTPServer) FailEveryNthData(n int, r *smtp.SMTPError) {
	s.mu.Lock()
	s.dataEvery, s.dataEveryRply, s.datas = n, r, 0
	s.mu.Unlock()
}

// Commands returns the command lines clients sent whose verb is one of
// verbs (such as "EHLO", "RCPT"), in order, across all sessions; message
// content and AUTH exchanges are not recorded.
func (s *SMTPServer) Commands(verbs ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, line := range strings.Split(s.transcript.String(), "\n") {
		for _, v := range verbs {
			if len(line) >= len(v) && strings.EqualFold(line[:len(v)], v) {
				out = append(out, strings.TrimRight(line, "\r"))
			}
		}
	}
	return out
}

// transcriptWriter keeps the command lines of the sessions (go-smtp's
// debug output: both directions, TLS already removed).
type transcriptWriter struct{ s *SMTPServer }

func (w transcriptWriter) Write(p []byte) (int, error) {
	// Only short protocol lines are kept: message bodies and base64 AUTH
	// responses pass through here too.
	if len(p) > 4096 {
		return len(p), nil
	}
	for _, v := range []string{"EHLO", "HELO", "MAIL", "RCPT", "RSET", "DATA", "BDAT", "QUIT", "STARTTLS"} {
		if len(p) >= len(v) && strings.EqualFold(string(p[:len(v)]), v) {
			w.s.mu.Lock()
			if w.s.transcript.Len() < 1<<20 { // bounded: benchmarks send a lot
				w.s.transcript.Write(p)
			}
			w.s.mu.Unlock()
			break
		}
	}
	return len(p), nil
}

// DropAfterNextData makes the server read the next n messages completely
// and then close the connection without a reply (the ambiguous case).
func (s *SMTPServer) DropAfterNextData(n int) { s.mu.Lock(); s.dropAfterData += n; s.mu.Unlock() }

// DisableSMTPAuth makes AUTH for user fail with 535 5.7.139 (Microsoft's
// "SMTP AUTH is disabled for the mailbox").
func (s *SMTPServer) DisableSMTPAuth(user string) {
	s.mu.Lock()
	s.disabled[strings.ToLower(user)] = true
	s.mu.Unlock()
}

// RequireScope rejects tokens whose scope does not contain scope.
func (s *SMTPServer) RequireScope(scope string) { s.mu.Lock(); s.requiredScope = scope; s.mu.Unlock() }

// SetMaxSessionsPerUser refuses authentication beyond n concurrent sessions
// of one mailbox with 432 4.3.2, like Microsoft's limit of 3 (0: no limit).
func (s *SMTPServer) SetMaxSessionsPerUser(n int) { s.mu.Lock(); s.maxPerUser = n; s.mu.Unlock() }

// PeakSessions returns the largest number of concurrent sessions of user.
func (s *SMTPServer) PeakSessions(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakPerUser[strings.ToLower(user)]
}

// ConcurrencyRefusals counts the authentications of user refused with
// 432 4.3.2 for the concurrent sessions limit.
func (s *SMTPServer) ConcurrencyRefusals(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusedPerUser[strings.ToLower(user)]
}

// Messages returns a copy of the accepted messages.
func (s *SMTPServer) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Counts returns authentication successes and failures, and connections
// that completed TLS.
func (s *SMTPServer) Counts() (authOK, authFailed, connections int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authSuccesses, s.authFailures, s.connections
}

// MailCommands returns how many MAIL commands reached the server.
func (s *SMTPServer) MailCommands() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mails
}

// CloseAllConnections drops every open session without a word, as a
// provider does with idle connections it times out.
func (s *SMTPServer) CloseAllConnections() {
	s.mu.Lock()
	live := make([]*sinkSession, 0, len(s.live))
	for ss := range s.live {
		live = append(live, ss)
	}
	s.mu.Unlock()
	for _, ss := range live {
		ss.conn.Conn().Close()
	}
}

// MessagesJSON renders the accepted messages (without bodies) as JSON.
func (s *SMTPServer) MessagesJSON() []byte {
	b, _ := json.MarshalIndent(s.Messages(), "", "  ")
	return b
}

// NewSession implements smtp.Backend.
func (s *SMTPServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ss := &sinkSession{srv: s, conn: c}
	s.mu.Lock()
	// go-smtp starts a new session after STARTTLS; count connections once,
	// when TLS is up.
	if _, tls := c.TLSConnectionState(); tls || s.tlsByListener {
		s.connections++
	}
	s.live[ss] = struct{}{}
	s.mu.Unlock()
	return ss, nil
}

type sinkSession struct {
	srv        *SMTPServer
	conn       *smtp.Conn
	user       string
	from       string
	to         []string
	mailParams []string
	rcptParams map[string][]string
}

var _ smtp.AuthSession = (*sinkSession)(nil)

func (ss *sinkSession) AuthMechanisms() []string { return []string{"XOAUTH2", "OAUTHBEARER"} }

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	switch mech {
	case "XOAUTH2", "OAUTHBEARER":
		return &bearerServer{ss: ss, mech: mech}, nil
	}
	return nil, &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 7, 4}, Message: "Unrecognized authentication type"}
}

// authenticate checks a bearer token for user and returns nil, or the
// JSON challenge to send (Google style) and the final error.
func (ss *sinkSession) authenticate(user, token string) ([]byte, *smtp.SMTPError) {
	s := ss.srv
	user = strings.ToLower(user)
	s.mu.Lock()
	style, disabled, scope, maxPer := s.style, s.disabled[user], s.requiredScope, s.maxPerUser
	s.mu.Unlock()
	reject := func(status string) ([]byte, *smtp.SMTPError) {
		s.mu.Lock()
		s.authFailures++
		s.mu.Unlock()
		if style == StyleMicrosoft {
			return nil, &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 3}, Message: "Authentication unsuccessful"}
		}
		ch, _ := json.Marshal(map[string]string{"status": status, "schemes": "Bearer", "scope": "https://mail.google.com/"})
		return ch, &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted. Learn more at https://support.google.com/mail/?p=BadCredentials"}
	}
	if disabled {
		s.mu.Lock()
		s.authFailures++
		s.mu.Unlock()
		return nil, &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 139}, Message: "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox."}
	}
	g, ok := s.tokens.Lookup(token)
	if !ok {
		return reject("401")
	}
	if g.User != AppOnly && g.User != user {
		return reject("400")
	}
	if scope != "" && !strings.Contains(" "+g.Scope+" ", " "+scope+" ") {
		return reject("400")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if maxPer > 0 && s.sessions[user] >= maxPer {
		s.refusedPerUser[user]++
		return nil, &smtp.SMTPError{Code: 432, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information."}
	}
	s.sessions[user]++
	if s.sessions[user] > s.peakPerUser[user] {
		s.peakPerUser[user] = s.sessions[user]
	}
	s.authSuccesses++
	ss.user = user
	return nil, nil
}

func (ss *sinkSession) Mail(from string, opts *smtp.MailOptions) error {
	if ss.user == "" {
		return smtp.ErrAuthRequired
	}
	s := ss.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mails++
	if len(s.mailReplies) > 0 {
		r := s.mailReplies[0]
		s.mailReplies = s.mailReplies[1:]
		return r
	}
	ss.from = from
	ss.mailParams = mailParams(opts)
	return nil
}

// mailParams lists MAIL parameters as go-smtp decoded them.
func mailParams(o *smtp.MailOptions) []string {
	if o == nil {
		return nil
	}
	var p []string
	if o.Body != "" {
		p = append(p, "BODY="+string(o.Body))
	}
	if o.Size > 0 {
		p = append(p, fmt.Sprintf("SIZE=%d", o.Size))
	}
	if o.UTF8 {
		p = append(p, "SMTPUTF8")
	}
	if o.Return != "" {
		p = append(p, "RET="+string(o.Return))
	}
	if o.EnvelopeID != "" {
		p = append(p, "ENVID="+o.EnvelopeID)
	}
	return p
}

func (ss *sinkSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s := ss.srv
	s.mu.Lock()
	r := s.rcptReplies[strings.ToLower(to)]
	s.mu.Unlock()
	if r != nil {
		return r
	}
	ss.to = append(ss.to, to)
	if p := rcptParams(opts); len(p) > 0 {
		if ss.rcptParams == nil {
			ss.rcptParams = map[string][]string{}
		}
		ss.rcptParams[to] = p
	}
	return nil
}

// rcptParams lists RCPT parameters as go-smtp decoded them.
func rcptParams(o *smtp.RcptOptions) []string {
	if o == nil {
		return nil
	}
	var p []string
	if len(o.Notify) > 0 {
		n := make([]string, len(o.Notify))
		for i, v := range o.Notify {
			n[i] = string(v)
		}
		p = append(p, "NOTIFY="+strings.Join(n, ","))
	}
	if o.OriginalRecipient != "" {
		p = append(p, "ORCPT="+strings.ToLower(string(o.OriginalRecipientType))+";"+o.OriginalRecipient)
	}
	return p
}

func (ss *sinkSession) Data(r io.Reader) error {
	ss.srv.mu.Lock()
	discard, delay := ss.srv.discardBodies, ss.srv.dataDelay
	ss.srv.mu.Unlock()
	var data []byte
	var err error
	size := 0
	if discard {
		data, size, err = readHead(r)
	} else {
		data, err = io.ReadAll(r)
		size = len(data)
	}
	if err != nil {
		return err
	}
	time.Sleep(delay)
	s := ss.srv
	s.mu.Lock()
	if s.dropAfterData > 0 {
		s.dropAfterData--
		s.mu.Unlock()
		// Simulate a crash between reading the dot and answering it.
		ss.conn.Conn().Close()
		return errDropConnection
	}
	s.datas++
	if s.dataEvery > 0 && s.datas%s.dataEvery == 0 {
		r := s.dataEveryRply
		s.mu.Unlock()
		return r
	}
	if len(s.dataReplies) > 0 {
		r := s.dataReplies[0]
		s.dataReplies = s.dataReplies[1:]
		s.mu.Unlock()
		return r
	}
	m := Message{ID: randomHex(6), User: ss.user, From: ss.from, To: append([]string(nil), ss.to...), Size: size, Subject: subjectOf(data), Received: time.Now(), Data: data,
		MailParams: ss.mailParams, RcptParams: ss.rcptParams}
	if discard {
		m.Data = nil
	}
	s.messages = append(s.messages, m)
	s.mu.Unlock()
	s.log.Info("sandbox mailbox received a message", "sandbox_id", m.ID, "as", m.User, "from", m.From, "to", strings.Join(m.To, ","), "size", m.Size, "subject", m.Subject)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK " + m.ID + " - sandbox"}
}

var errDropConnection = fmt.Errorf("sandbox: dropping connection after DATA")

func (ss *sinkSession) Reset() { ss.from, ss.to, ss.mailParams, ss.rcptParams = "", nil, nil, nil }

func (ss *sinkSession) Logout() error {
	s := ss.srv
	s.mu.Lock()
	delete(s.live, ss)
	if ss.user != "" {
		s.sessions[ss.user]--
		ss.user = ""
	}
	s.mu.Unlock()
	return nil
}

// readHead keeps the first 64 KiB of a message and counts the rest.
func readHead(r io.Reader) (head []byte, size int, err error) {
	head = make([]byte, 64<<10)
	n, err := io.ReadFull(r, head)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return head[:n], n, nil
	}
	if err != nil {
		return nil, 0, err
	}
	rest, err := io.Copy(io.Discard, r)
	return head, n + int(rest), err
}

func subjectOf(data []byte) string {
	headerEnd := bytes.Index(data, []byte("\r\n\r\n"))
	if headerEnd < 0 {
		headerEnd = len(data)
	}
	for _, line := range strings.Split(string(data[:headerEnd]), "\r\n") {
		if len(line) > 8 && strings.EqualFold(line[:8], "subject:") {
			return strings.TrimSpace(line[8:])
		}
	}
	return ""
}

// bearerServer is the server side of XOAUTH2 and OAUTHBEARER.
type bearerServer struct {
	ss      *sinkSession
	mech    string
	pending *smtp.SMTPError // failure to report after the challenge
}

func (b *bearerServer) Next(response []byte) ([]byte, bool, error) {
	if b.pending != nil {
		// The client acknowledged the error challenge.
		return nil, true, b.pending
	}
	if response == nil {
		return []byte{}, false, nil // ask for the initial response
	}
	user, token, ok := parseBearer(b.mech, response)
	if !ok {
		return nil, true, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Malformed " + b.mech + " response"}
	}
	challenge, err := b.ss.authenticate(user, token)
	if err == nil {
		return nil, true, nil
	}
	if challenge != nil {
		b.pending = err
		return challenge, false, nil
	}
	return nil, true, err
}

// parseBearer decodes an XOAUTH2 or OAUTHBEARER (RFC 7628 §3.1) initial
// response.
func parseBearer(mech string, resp []byte) (user, token string, ok bool) {
	s := string(resp)
	if mech == "OAUTHBEARER" {
		gs2, rest, found := strings.Cut(s, "\x01")
		if !found {
			return "", "", false
		}
		for _, f := range strings.Split(gs2, ",") {
			if strings.HasPrefix(f, "a=") {
				user = strings.NewReplacer("=2C", ",", "=3D", "=").Replace(f[2:])
			}
		}
		s = rest
	}
	for _, kv := range strings.Split(s, "\x01") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "user":
			user = v
		case "auth":
			if t, found := strings.CutPrefix(v, "Bearer "); found {
				token = t
			}
		}
	}
	return user, token, user != "" && token != ""
}

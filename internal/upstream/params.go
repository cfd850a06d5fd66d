package upstream

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/oauthrelay/oauthrelay/internal/transport"
)

// Refusals of a message the provider cannot carry as the client sent it
// (README "Replies"). They are the relay's own, permanent, and say
// nothing about the provider's health: no retry, no circuit.
var (
	// RFC 6152 §3: an 8-bit message to a server without 8BITMIME must be
	// converted or returned; the relay does not convert (RFC 3463 5.6.3:
	// conversion required but not supported).
	errNeeds8BitMIME = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 3},
		Message: "The mail provider does not offer 8BITMIME and the relay does not convert 8-bit messages; send it as 7-bit MIME (quoted-printable or base64)"}
	// RFC 6531 §3.4: an SMTPUTF8 message must not be passed to a server
	// without SMTPUTF8; X.6.7 for an address, X.6.9 for a header.
	errUTF8Address = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7},
		Message: "The mail provider does not offer SMTPUTF8: non-ASCII addresses cannot be relayed through it"}
	errUTF8Header = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 9},
		Message: "The mail provider does not offer SMTPUTF8: a message with a UTF-8 header cannot be relayed through it"}
	// A header section too long to check for UTF-8 (RFC 3463 5.6.0).
	errHeaderUncheckable = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "The mail provider does not offer SMTPUTF8 and the header section exceeds 64 KiB, more than the relay checks for UTF-8; keep it under 64 KiB"}
	// RFC 3461 §5.2.2: a relay to a server without DSN owes the sender a
	// "relayed" notification for NOTIFY=SUCCESS and cannot stop the
	// server's own failure notices. A direct delivery has no way to
	// notify, so it refuses what it cannot honour (RFC 3463 5.3.3:
	// selected features not supported by the destination).
	errNotifyUnsupported = &smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 3, 3},
		Message: "The mail provider does not offer DSN: this NOTIFY cannot be honoured; omit it or submit through a queue listener"}
)

// refusal is the relay's refusal of a step the provider cannot carry.
func refusal(stage Stage, reply *smtp.SMTPError) *Error {
	return &Error{Stage: stage, Local: true, Refusal: reply, Err: fmt.Errorf("%w: %s", errLocal, reply.Message)}
}

// mailParams returns the MAIL parameters of opts for a provider with the
// extensions has reports, and whether the DSN parameters went with them.
func mailParams(from string, opts transport.MailOptions, has func(string) bool) (params []string, dsn bool, err *Error) {
	switch opts.Body {
	case smtp.Body8BitMIME:
		// Without 8BITMIME the message goes out only when it is 7-bit
		// after all (many clients declare 8BITMIME for every message):
		// checked before DATA (check7Bit).
		if has("8BITMIME") {
			params = append(params, "BODY=8BITMIME")
		}
	case smtp.Body7Bit:
		if has("8BITMIME") {
			params = append(params, "BODY=7BIT")
		}
	}
	if opts.Size > 0 && has("SIZE") {
		params = append(params, "SIZE="+strconv.FormatInt(opts.Size, 10))
	}
	if opts.UTF8 {
		switch {
		case has("SMTPUTF8"):
			params = append(params, "SMTPUTF8")
		case !isASCII(from):
			return nil, false, refusal(StageMail, errUTF8Address)
		}
		// Without SMTPUTF8 the message goes out only when nothing in it
		// needs the extension: recipients and header are checked later.
	}
	if has("DSN") {
		if opts.Return != "" {
			params = append(params, "RET="+opts.Return)
		}
		if opts.EnvelopeID != "" {
			params = append(params, "ENVID="+transport.XText(opts.EnvelopeID))
		}
		return params, true, nil
	}
	// RET and ENVID only shape notifications: a relay to a server without
	// DSN passes the message on without them (RFC 3461 §5.2.2).
	return params, false, nil
}

// rcptParams returns the RCPT parameters of opts for a provider with the
// extensions has reports.
func rcptParams(to string, mail transport.MailOptions, opts transport.RcptOptions, has func(string) bool) ([]string, *Error) {
	if mail.UTF8 && !has("SMTPUTF8") && !isASCII(to) {
		return nil, refusal(StageRcpt, errUTF8Address)
	}
	if !has("DSN") {
		if !mail.OwnNotices && !transport.NotifyMetWithoutDSN(opts.Notify) {
			return nil, refusal(StageRcpt, errNotifyUnsupported)
		}
		return nil, nil
	}
	var params []string
	if len(opts.Notify) > 0 {
		params = append(params, "NOTIFY="+strings.Join(opts.Notify, ","))
	}
	if typ, addr, ok := strings.Cut(opts.ORcpt, ";"); ok && addr != "" {
		if strings.EqualFold(typ, "utf-8") {
			params = append(params, "ORCPT=utf-8;"+transport.UTF8AddrXText(addr))
		} else {
			params = append(params, "ORCPT=rfc822;"+transport.XText(addr))
		}
	}
	return params, nil
}

// check7Bit refuses a message with 8-bit octets for a provider without
// 8BITMIME: the relay does not convert it (RFC 6152 §3).
func check7Bit(body func() (io.Reader, error)) error {
	r, err := body()
	if err != nil {
		return &Error{Stage: StageData, Local: true, Err: err}
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if slices.ContainsFunc(buf[:n], func(b byte) bool { return b >= 0x80 }) {
			return refusal(StageData, errNeeds8BitMIME)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &Error{Stage: StageData, Local: true, Err: err}
		}
	}
}

// checkUTF8Header refuses a message whose header section holds 8-bit
// text for a provider without SMTPUTF8 (RFC 6532 headers need it).
func checkUTF8Header(body func() (io.Reader, error)) error {
	r, err := body()
	if err != nil {
		return &Error{Stage: StageData, Local: true, Err: err}
	}
	consumed, _, err := transport.ReadHeader(bufio.NewReader(r), transport.MaxHeader)
	if err != nil {
		return &Error{Stage: StageData, Local: true, Err: err}
	}
	// A header beyond the relay's bound cannot be checked: refused rather
	// than passed on unchecked.
	switch {
	case !isASCII(string(consumed)):
		return refusal(StageData, errUTF8Header)
	case len(consumed) >= transport.MaxHeader:
		return refusal(StageData, errHeaderUncheckable)
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

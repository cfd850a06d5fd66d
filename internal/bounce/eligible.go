package bounce

import (
	"mime"
	"regexp"
	"strings"
)

// Eligible reports whether a notification may be sent about a message with
// envelope sender from and header section h (nil when unknown), and if
// not, why (for logs and history; the reason quotes no body and at most a
// short, sanitised header value). A notification is never sent:
//
//   - to the null reverse-path ("" or "<>"): RFC 5321 §4.5.5 and §6.1 —
//     notifications are themselves sent from it and are never answered;
//   - to a MAILER-DAEMON address: the conventional sender of bounces by
//     systems that do not use the null reverse-path, so answering it
//     starts a loop between two mail systems;
//   - to a sender no header field can hold (see Build);
//   - about a report (Content-Type multipart/report, RFC 6522): a
//     delivery-status or disposition notification, or any other
//     automatic report about mail, is not answered with another one;
//   - about automatic mail: an Auto-Submitted field other than "no" (RFC
//     3834 §5; "auto-replied", "auto-generated", "auto-notified" and any
//     extension). Such mail has no person waiting to hear of its fate;
//     its failure stays in the relay's history and metrics.
//
// Mailing lists are not exempt: their envelope senders are their bounce
// processors, which need notifications.
func Eligible(from string, h *Header) (ok bool, reason string) {
	if why := senderProblem(from); why != "" {
		return false, why
	}
	if typ := reportType(h.Get("Content-Type")); typ != "" {
		return false, "the message is a report (multipart/report; report-type=" + typ + ")"
	}
	for _, v := range h.values("Auto-Submitted") {
		if kw := autoSubmitted(v); kw != "no" {
			return false, "the message is automatic (Auto-Submitted: " + kw + ")"
		}
	}
	return true, ""
}

// senderProblem says why from cannot receive a notification; "" when it
// can.
func senderProblem(from string) string {
	if _, err := headerAddress(from); err == errNullSender {
		return "the sender is the null reverse-path"
	} else if err != nil {
		return "the sender address cannot be written in a header field"
	}
	addr := strings.Trim(strings.TrimSpace(from), "<>")
	local := addr[:max(0, strings.LastIndexByte(addr, '@'))]
	if strings.EqualFold(strings.Trim(local, `"`), "mailer-daemon") {
		return "the sender is a MAILER-DAEMON address"
	}
	return ""
}

// reportType returns the report-type of a multipart/report Content-Type
// ("unknown" when it has none or cannot be parsed), "" for any other
// content type.
func reportType(contentType string) string {
	if contentType == "" {
		return ""
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		// Judge a malformed field by its media type alone.
		mt, _, _ = strings.Cut(contentType, ";")
		mt, params = strings.ToLower(strings.TrimSpace(mt)), nil
	}
	if mt != "multipart/report" {
		return ""
	}
	if t := params["report-type"]; token.MatchString(t) && len(t) <= 64 {
		return strings.ToLower(t)
	}
	return "unknown"
}

var token = regexp.MustCompile(`^[A-Za-z0-9.+_-]+$`)

// autoSubmitted returns the keyword of an Auto-Submitted value (RFC 3834
// §5: the keyword, then optional ";" parameters; comments allowed),
// lower case; a value without a usable keyword is reported as "invalid",
// which is not "no".
func autoSubmitted(v string) string {
	kw, _, _ := strings.Cut(stripComments(v), ";")
	kw = strings.ToLower(strings.TrimSpace(kw))
	if !token.MatchString(kw) || len(kw) > 64 {
		return "invalid"
	}
	return kw
}

// stripComments removes RFC 5322 comments, nested or with quoted pairs.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

package bounce

import (
	"regexp"
	"strings"
)

// statusCode is an enhanced status code of a failure (RFC 3463 §2):
// class 4 or 5 — class 2 is success and cannot describe one.
var statusCode = regexp.MustCompile(`^[45]\.[0-9]{1,3}\.[0-9]{1,3}$`)

// replyCode matches the start of an SMTP reply (RFC 5321 §4.2) with an
// optional enhanced status code (RFC 2034).
var replyCode = regexp.MustCompile(`^([245])[0-9][0-9](?:[ -]([245]\.[0-9]{1,3}\.[0-9]{1,3}))?(?:[ -]|$)`)

// status returns the Status field of a failure: the caller's code when it
// is well formed; else the enhanced code of the provider's reply when its
// class agrees with the reply's; else the class's generic code (RFC 3463
// §3.1: X.0.0); else 5.0.0. A relayed recipient's status is of class 2,
// a delayed one's of class 4 (RFC 3464 §2.3.4).
func status(f Failure) string {
	switch actionOf(f) {
	case ActionRelayed:
		if successCode.MatchString(f.Status) {
			return f.Status
		}
		return "2.0.0"
	case ActionDelayed:
		if s := failureStatus(f); s[0] == '4' {
			return s
		}
		return "4.0.0"
	}
	return failureStatus(f)
}

// successCode is an enhanced status code of success (RFC 3463 §3.1).
var successCode = regexp.MustCompile(`^2\.[0-9]{1,3}\.[0-9]{1,3}$`)

func failureStatus(f Failure) string {
	if statusCode.MatchString(f.Status) {
		return f.Status
	}
	m := replyCode.FindStringSubmatch(strings.TrimSpace(f.Reply))
	switch {
	case m == nil || m[1] == "2":
		return "5.0.0"
	case m[2] != "" && m[2][0] == m[1][0]:
		return m[2]
	default:
		return m[1] + ".0.0"
	}
}

// statusMeaning names an enhanced status code in a few words for the
// human-readable part (RFC 3463 §3; X.1.10 from RFC 7505).
func statusMeaning(code string) string {
	_, rest, _ := strings.Cut(code, ".")
	if m, ok := detailMeanings[rest]; ok {
		return m
	}
	subject, _, _ := strings.Cut(rest, ".")
	if m, ok := subjectMeanings[subject]; ok {
		return m
	}
	return "unknown status"
}

var detailMeanings = map[string]string{
	"0.0":  "undefined problem",
	"3.3":  "the destination does not support a feature the message needs",
	"6.3":  "conversion to 7 bits required but not supported",
	"6.7":  "non-ASCII addresses not supported",
	"6.9":  "UTF-8 header not supported",
	"1.1":  "no such mailbox",
	"1.2":  "no such destination domain",
	"1.3":  "invalid recipient address syntax",
	"1.6":  "mailbox has moved",
	"1.10": "the domain accepts no mail",
	"2.1":  "mailbox disabled",
	"2.2":  "mailbox full",
	"2.3":  "message too large for the mailbox",
	"3.4":  "message too large",
	"4.7":  "delivery time expired",
	"5.3":  "too many recipients",
	"6.0":  "message content refused",
	"7.0":  "refused by policy",
	"7.1":  "delivery not authorized",
}

var subjectMeanings = map[string]string{
	"0": "undefined problem",
	"1": "recipient address problem",
	"2": "mailbox problem",
	"3": "mail system problem",
	"4": "network or routing problem",
	"5": "mail protocol problem",
	"6": "message content problem",
	"7": "security or policy problem",
}

package upstream

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode"

	"github.com/emersion/go-sasl"
)

// Challenge is the JSON error a provider sends in a 334 challenge when it
// rejects a bearer token (XOAUTH2, and RFC 7628 §3.2.2 for OAUTHBEARER),
// such as {"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}.
type Challenge struct {
	Status  string `json:"status"`
	Schemes string `json:"schemes"`
	Scope   string `json:"scope"`
	// Raw keeps undecodable challenges for the log (they hold no secret:
	// the server wrote them).
	Raw string `json:"-"`
}

// bearerClient implements XOAUTH2 (Google's and Microsoft's bearer token
// mechanism, dropped from go-sasl) and OAUTHBEARER (RFC 7628). On an error
// challenge it answers as the specifications require — an empty line for
// XOAUTH2, a single 0x01 for OAUTHBEARER — so that the server finishes with
// its 535, and keeps the decoded challenge for diagnosis.
type bearerClient struct {
	mech      string
	user      string
	token     string
	host      string
	port      int
	challenge *Challenge
}

var _ sasl.Client = (*bearerClient)(nil)

func newBearerClient(mech, user, token, host string, port int) *bearerClient {
	return &bearerClient{mech: mech, user: user, token: token, host: host, port: port}
}

func (c *bearerClient) Start() (string, []byte, error) {
	var ir []byte
	switch c.mech {
	case "OAUTHBEARER":
		// gs2-header "n,a=<user>," then kvpairs separated by 0x01 (RFC 7628 §3.1).
		ir = []byte("n,a=" + saslName(c.user) + ",\x01")
		if c.host != "" {
			ir = append(ir, "host="+c.host+"\x01"...)
		}
		if c.port != 0 {
			ir = append(ir, "port="+strconv.Itoa(c.port)+"\x01"...)
		}
		ir = append(ir, "auth=Bearer "+c.token+"\x01\x01"...)
	default:
		ir = []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01")
	}
	return c.mech, ir, nil
}

func (c *bearerClient) Next(challenge []byte) ([]byte, error) {
	ch := &Challenge{Raw: string(challenge)}
	_ = json.Unmarshal(challenge, ch)
	// The provider wrote these fields and they end up in log lines and in
	// `account test` output: a CR, LF or escape sequence must not forge a
	// line or repaint a terminal.
	ch.Status, ch.Schemes, ch.Scope = printableLine(ch.Status), printableLine(ch.Schemes), printableLine(ch.Scope)
	c.challenge = ch
	if c.mech == "OAUTHBEARER" {
		return []byte{0x01}, nil
	}
	return []byte{}, nil
}

// printableLine replaces what is not printable with spaces and collapses
// runs of spaces, leaving one line of text.
func printableLine(s string) string {
	return oneLine(strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s))
}

// saslName escapes ',' and '=' in an authzid (RFC 5801 §4).
func saslName(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',':
			out = append(out, "=2C"...)
		case '=':
			out = append(out, "=3D"...)
		default:
			out = append(out, s[i])
		}
	}
	return string(out)
}

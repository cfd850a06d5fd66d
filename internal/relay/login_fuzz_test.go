package relay

import (
	"bytes"
	"errors"
	"testing"
)

// loginCall is one call of the authenticate callback.
type loginCall struct{ username, password string }

// loginExchange is what a LOGIN exchange did, driven as go-smtp's AUTH
// handler drives a sasl.Server: Next with the initial response (nil when
// the client sent none), then with each client line until Next reports done
// or an error, or the client has nothing more to say.
type loginExchange struct {
	challenges [][]byte
	calls      []loginCall
	done       bool
	err        error
}

func runLoginExchange(ir []byte, responses [][]byte, authErr error) loginExchange {
	var ex loginExchange
	l := &loginServer{authenticate: func(u, p string) error {
		ex.calls = append(ex.calls, loginCall{u, p})
		return authErr
	}}
	response := ir
	for {
		challenge, done, err := l.Next(response)
		ex.done, ex.err = done, err
		if err != nil || done {
			return ex
		}
		ex.challenges = append(ex.challenges, challenge)
		if len(responses) == 0 {
			return ex // the client went away
		}
		response, responses = responses[0], responses[1:]
	}
}

// FuzzLoginServer checks the server side of AUTH LOGIN (README "How a
// message travels", step 1) with any initial response and any client lines
// (already base64-decoded, so any bytes): no panic; authenticate is called at
// most once, with exactly the username and password the client sent, and
// its verdict is the exchange's; the prompts are "Username:" then
// "Password:". An empty initial response ("AUTH LOGIN =", RFC 4954 §4) is
// no username, so the server asks for one.
func FuzzLoginServer(f *testing.F) {
	f.Add(false, []byte(nil), uint8(2), []byte("app"), []byte("pw"), []byte(nil), false)
	f.Add(true, []byte("app"), uint8(1), []byte("pw"), []byte(nil), []byte(nil), false)
	f.Add(true, []byte{}, uint8(2), []byte("app"), []byte("pw"), []byte(nil), true)
	f.Add(false, []byte(nil), uint8(0), []byte(nil), []byte(nil), []byte(nil), false)
	f.Add(false, []byte(nil), uint8(1), []byte("app"), []byte(nil), []byte(nil), false)
	f.Add(false, []byte(nil), uint8(3), []byte(""), []byte(""), []byte("extra"), true)
	f.Add(true, []byte("a\x00b\r\n"), uint8(3), []byte("p\x00w\xff"), []byte("again"), []byte("and again"), false)
	f.Add(false, []byte(nil), uint8(3), []byte("Username:"), []byte("Password:"), []byte("*"), true)
	f.Add(true, []byte(bytes.Repeat([]byte("u"), 4096)), uint8(1), bytes.Repeat([]byte{0}, 4096), []byte(nil), []byte(nil), false)
	f.Fuzz(func(t *testing.T, hasIR bool, ir []byte, n uint8, r1, r2, r3 []byte, refuse bool) {
		if !hasIR {
			ir = nil
		} else if ir == nil {
			ir = []byte{} // go-smtp decodes "=" to an empty, non-nil response
		}
		responses := [][]byte{nonNil(r1), nonNil(r2), nonNil(r3)}[:n%4]
		var authErr error
		if refuse {
			authErr = errBadCredentials
		}
		ex := runLoginExchange(ir, responses, authErr)
		want := expectedLogin(ir, responses)
		checkLoginExchange(t, ex, want, authErr)
	})
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// expectedLogin is the exchange the mechanism defines: the username comes
// from a non-empty initial response or the first line, the password from
// the next line.
func expectedLogin(ir []byte, responses [][]byte) (want loginExchange) {
	lines := responses
	if len(ir) > 0 {
		lines = append([][]byte{ir}, responses...)
		want.challenges = [][]byte{[]byte("Password:")}
	} else {
		want.challenges = [][]byte{[]byte("Username:"), []byte("Password:")}
	}
	if len(lines) >= 2 {
		want.calls = []loginCall{{string(lines[0]), string(lines[1])}}
		want.done = true
	} else {
		want.challenges = want.challenges[:len(want.challenges)-1+len(lines)]
	}
	return want
}

func checkLoginExchange(t *testing.T, got, want loginExchange, authErr error) {
	t.Helper()
	if len(got.calls) > 1 {
		t.Fatalf("authenticate called %d times: %q", len(got.calls), got.calls)
	}
	if len(got.calls) != len(want.calls) || len(got.calls) == 1 && got.calls[0] != want.calls[0] {
		t.Fatalf("authenticate calls %q, want %q", got.calls, want.calls)
	}
	if len(got.challenges) != len(want.challenges) {
		t.Fatalf("challenges %q, want %q", got.challenges, want.challenges)
	}
	for i := range got.challenges {
		if !bytes.Equal(got.challenges[i], want.challenges[i]) {
			t.Fatalf("challenges %q, want %q", got.challenges, want.challenges)
		}
	}
	if got.done != want.done {
		t.Fatalf("done = %v, want %v", got.done, want.done)
	}
	if want.done && !errors.Is(got.err, authErr) || !want.done && got.err != nil {
		t.Fatalf("exchange ended with %v, want %v", got.err, authErr)
	}
}

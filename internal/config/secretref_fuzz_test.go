package config_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/oauthrelay/oauthrelay/internal/config"
)

var fuzzRange = hcl.Range{Filename: "fuzz.hcl", Start: hcl.Pos{Line: 3, Column: 19, Byte: 40}, End: hcl.Pos{Line: 3, Column: 40, Byte: 61}}

// FuzzParseSecretRef checks the secret attribute parser (README "Secret
// attributes"): it never panics, a parsed literal never shows its value in
// any printed or encoded form, the reference forms survive a round trip
// through String unchanged, and a mistyped scheme's error does not depend on
// (so cannot reveal) what follows the "://".
func FuzzParseSecretRef(f *testing.F) {
	for _, s := range []string{
		// Good.
		"hunter2", "ya29.a0AfH6SMB-literal_refresh_token",
		"env://SMTP_CLIENT_SECRET", "env://_X1", "ENV://Mixed_Case",
		"file:///etc/oauthrelay/secret", "file:///a/../b//c/", "file:///", "FILE:///x",
		"vault://secret/oauthrelay/app#client_secret", "vault://kv/a/b/c#f.i-e_ld",
		"vault:///secret/app/#field", "VAULT://Secret/X#F",
		// Edge: values that only look like references, or like String's output.
		"", " ", "literal value", "literal", "l", "unset", "env:/X", "env:X", " env://X",
		"://", "a://", "::", "x:/y", "mailto:someone@example.com", "pass#word//x",
		// Hostile and mistyped.
		"env://", "env://1BAD", "env://A-B", "env://A\x00", "env://A B",
		"file://relative", "file://", "file://\x00", "file:///\n",
		"vault://secret#f", "vault://secret//x#f", "vault://secret/x#", "vault://secret/x",
		"vault://secret/x#a#b", "vault://secret/x#ф", "vault://s/p#f\n", "vault://#f", "vault:///#f",
		"valut://secret/x#f", "http://example.com/token", "s3cr3t://hunter2", "1://x", "a+b.c-d://x",
		"\x00", "\xff\xfe", strings.Repeat("A", 1024), "env://" + strings.Repeat("A", 1024),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := config.ParseSecretRef(s, fuzzRange)
		if err != nil {
			if ref.IsSet() {
				t.Fatalf("ParseSecretRef(%q) failed (%v) but returned a set reference %v", s, err, ref)
			}
			checkSchemeErrorHidesRest(t, s, err)
			return
		}
		if ref.Range != fuzzRange {
			t.Fatalf("ParseSecretRef(%q) lost the range: %v", s, ref.Range)
		}
		if ref.Scheme == config.SecretLiteral {
			checkLiteralHidden(t, s, ref)
			return
		}
		checkRoundTrip(t, s, ref)
	})
}

// checkLiteralHidden: every way a reference can be printed or encoded is
// the same whatever the literal, so none of them can contain it.
func checkLiteralHidden(t *testing.T, s string, ref config.SecretRef) {
	t.Helper()
	if ref.Literal() != s {
		t.Fatalf("literal %q parsed as %q", s, ref.Literal())
	}
	other, err := config.ParseSecretRef("a different placeholder", fuzzRange)
	if err != nil {
		t.Fatal(err)
	}
	type holder struct{ Secret config.SecretRef }
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		got, want := fmt.Sprintf(verb, ref), fmt.Sprintf(verb, other)
		if got != want {
			t.Fatalf("%s of a literal depends on its value: %q vs %q", verb, got, want)
		}
		got, want = fmt.Sprintf(verb, holder{ref}), fmt.Sprintf(verb, holder{other})
		if got != want {
			t.Fatalf("%s of a struct holding a literal depends on its value: %q vs %q", verb, got, want)
		}
	}
	got, err1 := json.Marshal(ref)
	want, err2 := json.Marshal(other)
	if err1 != nil || err2 != nil || string(got) != string(want) {
		t.Fatalf("JSON of a literal depends on its value: %s vs %s (%v, %v)", got, want, err1, err2)
	}
	if ref.String() != "literal value" {
		t.Fatalf("String of a literal is %q", ref.String())
	}
}

// checkRoundTrip: String of a reference parses back to the same reference,
// so what the logs and diagnostics name is exactly what is resolved.
func checkRoundTrip(t *testing.T, s string, ref config.SecretRef) {
	t.Helper()
	if ref.Literal() != "" {
		t.Fatalf("reference %q carries a literal", s)
	}
	again, err := config.ParseSecretRef(ref.String(), fuzzRange)
	if err != nil {
		t.Fatalf("%q parsed as %v, which does not parse again: %v", s, ref, err)
	}
	if again != ref || again.String() != ref.String() {
		t.Fatalf("round trip of %q is unstable: %#v then %#v", s, ref, again)
	}
	if !strings.HasPrefix(ref.String(), string(ref.Scheme)+"://") {
		t.Fatalf("%q prints as %q, not as a %s reference", s, ref.String(), ref.Scheme)
	}
}

// checkSchemeErrorHidesRest: a value rejected for its scheme may be a real
// secret behind a typo ("valut://…"), so the error must be the same for
// any text after the "://".
func checkSchemeErrorHidesRest(t *testing.T, s string, err error) {
	t.Helper()
	scheme, rest, ok := strings.Cut(s, "://")
	switch strings.ToLower(scheme) {
	case "env", "file", "vault":
		return // these errors quote the reference, which holds no secret
	}
	if !ok || rest == "" {
		return
	}
	_, errOther := config.ParseSecretRef(scheme+"://placeholder", fuzzRange)
	if errOther == nil || errOther.Error() != err.Error() {
		t.Fatalf("the error for %q depends on the text after the scheme: %q vs %v", s, err, errOther)
	}
}

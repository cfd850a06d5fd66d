package seal_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/seal"
)

func TestLocalRoundTrip(t *testing.T) {
	l := seal.NewLocal()
	seen := map[string]bool{}
	for range 3 {
		key, wrapped, err := l.DataKey(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(key) != seal.KeySize || !strings.HasPrefix(string(wrapped), "local:v1:") {
			t.Fatalf("key of %d bytes, wrapped %q", len(key), wrapped)
		}
		if seen[string(key)] || seen[string(wrapped)] {
			t.Fatal("a data key or its wrapped form repeated")
		}
		seen[string(key)], seen[string(wrapped)] = true, true
		got, err := l.Unwrap(t.Context(), wrapped)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("Unwrap: %v, or another key", err)
		}
		assertSealWorks(t, key, got)
	}
}

// TestLocalUnwrapRefuses: keys from another process (a restart), altered
// or made by Transit are refused with an error that says why, and no key.
func TestLocalUnwrapRefuses(t *testing.T) {
	l := seal.NewLocal()
	key, wrapped, err := l.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(string(wrapped), "local:v1:"))
	if err != nil {
		t.Fatal(err)
	}
	sealed[len(sealed)-1] ^= 1
	altered := []byte("local:v1:" + base64.RawStdEncoding.EncodeToString(sealed))
	tests := []struct {
		name    string
		sealer  *seal.Local
		wrapped []byte
		want    string
		is      error
	}{
		{"after a restart", seal.NewLocal(), wrapped, "bodies sealed before a restart cannot be read", seal.ErrLocalKeyGone},
		{"altered", l, altered, "", seal.ErrLocalKeyGone},
		{"transit ciphertext", l, []byte("vault:v1:AAAA"), "not made by the local sealer", nil},
		{"malformed", l, []byte("local:v1:@@"), "malformed", nil},
		{"too short", l, []byte("local:v1:AAAA"), "malformed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.sealer.Unwrap(t.Context(), tt.wrapped)
			assertClean(t, err, nil, key)
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q lacks %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

package passwd

import (
	"errors"
	"strings"
	"testing"
)

func TestHashAndVerify(t *testing.T) {
	for _, alg := range []string{Bcrypt, Argon2id} {
		h, err := Hash(alg, "correct horse", 4)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if strings.Contains(h, "correct horse") {
			t.Fatalf("%s: hash contains the password", alg)
		}
		if err := CheckHash(h); err != nil {
			t.Errorf("%s: CheckHash(%q) = %v", alg, h, err)
		}
		if err := Verify(h, "correct horse"); err != nil {
			t.Errorf("%s: right password refused: %v", alg, err)
		}
		if err := Verify(h, "wrong"); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: wrong password: %v, want ErrMismatch", alg, err)
		}
	}
}

func TestCheckHashRejects(t *testing.T) {
	for _, h := range []string{
		"",
		"plaintext",
		"$2a$04$short",
		"$argon2id$v=19$m=65536,t=3,p=2$salt",
		"$argon2id$v=16$m=65536,t=3,p=2$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=0,t=3,p=2$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=65536,t=3,p=2$!!!$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
	} {
		if err := CheckHash(h); err == nil {
			t.Errorf("CheckHash(%q) accepted", h)
		}
	}
}

func TestUnknownAlgorithm(t *testing.T) {
	if _, err := Hash("md5", "x", 0); err == nil {
		t.Error("md5 accepted")
	}
}

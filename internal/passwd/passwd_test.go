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

// Below its minimum, bcrypt silently hashes with cost 10; Hash must refuse
// instead, so that the cost asked for is the cost stored.
func TestHashRefusesBcryptCostOutOfRange(t *testing.T) {
	for _, cost := range []int{-1, 1, 3, 32} {
		if h, err := Hash(Bcrypt, "pw", cost); err == nil {
			t.Errorf("cost %d accepted: %s", cost, h)
		} else if !strings.Contains(err.Error(), "outside bcrypt's range 4-31") {
			t.Errorf("cost %d: unclear error %q", cost, err)
		}
	}
	h, err := Hash(Bcrypt, "pw", 0)
	if err != nil || !strings.HasPrefix(h, "$2a$12$") {
		t.Errorf("cost 0 = %q %v, want the default cost 12", h, err)
	}
}

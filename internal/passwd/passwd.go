// Package passwd hashes and verifies the passwords of local SMTP clients.
// Two encodings are accepted: bcrypt ("$2a$", "$2b$", "$2y$") and argon2id in
// the PHC string format ("$argon2id$v=19$m=...,t=...,p=...$salt$hash").
// Plaintext passwords are never stored.
package passwd

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Algorithms for Hash.
const (
	Bcrypt   = "bcrypt"
	Argon2id = "argon2id"
)

// Bcrypt work factors. Costs outside bcrypt's own range are refused (the
// library would silently replace a cost below its minimum with 10); costs
// below the OWASP Password Storage Cheat Sheet's minimum of 10 are weak.
const (
	DefaultBcryptCost = 12
	MinBcryptCost     = bcrypt.MinCost
	MaxBcryptCost     = bcrypt.MaxCost
	WeakBcryptCost    = 10
)

// Argon2id parameters of new hashes (RFC 9106 §4, second recommended option
// scaled down to a mail relay's memory budget).
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 2
	argonKeyLen  = 32
	argonSaltLen = 16
)

var b64 = base64.RawStdEncoding

// ErrMismatch is returned by Verify when the password does not match.
var ErrMismatch = errors.New("password does not match")

// Hash returns an encoded hash of password with the given algorithm. For
// bcrypt, cost 0 means DefaultBcryptCost; other costs outside
// MinBcryptCost..MaxBcryptCost are an error.
func Hash(algorithm, password string, bcryptCost int) (string, error) {
	switch algorithm {
	case Bcrypt, "":
		if bcryptCost == 0 {
			bcryptCost = DefaultBcryptCost
		}
		if err := CheckBcryptCost(bcryptCost); err != nil {
			return "", err
		}
		h, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
		return string(h), err
	case Argon2id:
		salt := make([]byte, argonSaltLen)
		if _, err := rand.Read(salt); err != nil {
			return "", err
		}
		key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
		return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
	}
	return "", fmt.Errorf("unknown algorithm %q (use %q or %q)", algorithm, Bcrypt, Argon2id)
}

// CheckBcryptCost refuses a cost bcrypt cannot use as given.
func CheckBcryptCost(cost int) error {
	if cost < MinBcryptCost || cost > MaxBcryptCost {
		return fmt.Errorf("bcrypt cost %d is outside bcrypt's range %d-%d", cost, MinBcryptCost, MaxBcryptCost)
	}
	return nil
}

// CheckHash reports whether encoded is a hash this package can verify.
func CheckHash(encoded string) error {
	switch {
	case strings.HasPrefix(encoded, "$2"):
		if _, err := bcrypt.Cost([]byte(encoded)); err != nil {
			return fmt.Errorf("not a valid bcrypt hash: %v", err)
		}
		return nil
	case strings.HasPrefix(encoded, "$argon2id$"):
		_, err := parseArgon2id(encoded)
		return err
	}
	return errors.New("not a bcrypt ($2b$...) or argon2id ($argon2id$...) hash")
}

// Verify checks password against an encoded hash in constant time with
// respect to the password. It returns ErrMismatch on a wrong password.
func Verify(encoded, password string) error {
	if strings.HasPrefix(encoded, "$argon2id$") {
		p, err := parseArgon2id(encoded)
		if err != nil {
			return err
		}
		key := argon2.IDKey([]byte(password), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
		if subtle.ConstantTimeCompare(key, p.key) != 1 {
			return ErrMismatch
		}
		return nil
	}
	err := bcrypt.CompareHashAndPassword([]byte(encoded), []byte(password))
	if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
		return ErrMismatch
	}
	return err
}

type argonParams struct {
	time, memory uint32
	threads      uint8
	salt, key    []byte
}

func parseArgon2id(encoded string) (argonParams, error) {
	var p argonParams
	parts := strings.Split(encoded, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 {
		return p, errors.New("argon2id hash must look like $argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash>")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return p, fmt.Errorf("argon2id hash has unsupported version %q", parts[2])
	}
	var threads uint32
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &threads); err != nil {
		return p, fmt.Errorf("argon2id hash has malformed parameters %q", parts[3])
	}
	if p.time == 0 || p.memory == 0 || threads == 0 || threads > 255 || p.memory > 4<<20 {
		return p, fmt.Errorf("argon2id hash has out-of-range parameters %q", parts[3])
	}
	p.threads = uint8(threads)
	var err error
	if p.salt, err = b64.DecodeString(parts[4]); err != nil || len(p.salt) < 8 {
		return p, errors.New("argon2id hash has a malformed salt")
	}
	if p.key, err = b64.DecodeString(parts[5]); err != nil || len(p.key) < 16 {
		return p, errors.New("argon2id hash has a malformed key")
	}
	return p, nil
}

package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
)

// Tokens are the console's bearer tokens; "" means that scope is not
// configured. The admin token also reads.
type Tokens struct {
	Read, Admin string
}

// scope is what a token allows.
type scope int

const (
	scopeNone  scope = iota
	scopeRead        // GETs: overview, accounts, queue, history, system
	scopeAdmin       // and the actions: queue retry/hold/release/delete, reload
)

func (s scope) String() string {
	switch s {
	case scopeRead:
		return "read"
	case scopeAdmin:
		return "admin"
	}
	return "none"
}

// tokenHash is the SHA-256 of a token. Tokens are compared as hashes in
// constant time, so the comparison takes the same time whatever the
// length of the token or of a guess; sessions keep the hash, never the
// token.
type tokenHash [sha256.Size]byte

func hashToken(tok string) tokenHash { return sha256.Sum256([]byte(tok)) }

// id is a configured token's identifier in the audit log: the first 8
// hex digits of its SHA-256. It tells operators which token acted (the
// read or the admin token, and the token before a rotation from the one
// after it) but reveals nothing of the token: a hash cannot be inverted,
// and 32 bits of it match about 2^(n-32) of the 2^n values of a random
// token of n bits, so it narrows down nothing an attacker could search
// (README "Operator console": tokens are long random strings). Only
// tokens that are configured when they act are named so; anything else
// presented as a token, a rotated-away one included, is a failure and
// named by failedTokenID, which cannot be matched against this id.
func (h tokenHash) id() string { return "sha256:" + hex.EncodeToString(h[:4]) }

// failureKey keys failedTokenID; it is drawn at start and never leaves
// the process.
var failureKey = func() (k [sha256.Size]byte) {
	_, _ = rand.Read(k[:]) // never fails (Go 1.24+)
	return k
}()

// failedTokenID names a value presented as a token that is not one, in
// the audit log: the first 8 hex digits of its HMAC-SHA256 under
// failureKey. What was presented may be no random token at all but a
// password pasted by mistake, which an unkeyed hash prefix would let
// anyone holding the log test guesses against offline; the keyed one
// only correlates attempts with the same value within this process
// (one script retrying with a stale token, or many values: guessing).
func failedTokenID(h tokenHash) string {
	mac := hmac.New(sha256.New, failureKey[:])
	mac.Write(h[:])
	return "hmac:" + hex.EncodeToString(mac.Sum(nil)[:4])
}

// scopeOf returns what the token with hash h may do under the current
// tokens. Both comparisons always run, in constant time.
func scopeOf(h tokenHash, toks Tokens) scope {
	admin := matches(h, toks.Admin)
	read := matches(h, toks.Read)
	switch {
	case admin:
		return scopeAdmin
	case read:
		return scopeRead
	}
	return scopeNone
}

func matches(h tokenHash, configured string) bool {
	want := hashToken(configured)
	return subtle.ConstantTimeCompare(h[:], want[:]) == 1 && configured != ""
}

// principal is who makes a request: the scope of its token and the
// token's identifier for the audit log.
type principal struct {
	scope   scope
	tokenID string
	via     string // "api" or "console"
}

// errNoToken: the request carries no bearer token at all.
var errNoToken = errors.New("no bearer token")

// bearer returns the token of an "Authorization: Bearer" header (RFC
// 6750 section 2.1; the scheme is case-insensitive).
func bearer(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errNoToken
	}
	return strings.TrimSpace(tok), nil
}

package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var auditToken = regexp.MustCompile(`token=(\S+)`)

// auditTokenIDs are the token identifiers of the audit lines holding
// every part, in order.
func (h *harness) auditTokenIDs(parts ...string) []string {
	var ids []string
	for _, l := range h.auditLines() {
		if m := auditToken.FindStringSubmatch(l); m != nil && containsAll(l, parts...) {
			ids = append(ids, m[1])
		}
	}
	return ids
}

// A failed authentication names what was presented by a keyed hash
// (HMAC-SHA256 under a key that never leaves the process): attempts with
// one value correlate, and nothing in the log can be checked offline
// against a guess (a password pasted by mistake). Accepted tokens keep
// their SHA-256 identifier, which operators compute from their own.
func TestFailedTokenAuditID(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	pasted := h.addSecret("correct horse battery staple")
	h.api("GET", "/api/v1/accounts", wrongToken)
	h.api("GET", "/api/v1/overview", wrongToken)
	h.browser().post("/login", url.Values{"token": {wrongToken}})
	h.browser().post("/login", url.Values{"token": {pasted}})
	h.api("GET", "/api/v1/accounts", adminToken)
	h.browser().login(readToken)

	failed := h.auditTokenIDs("outcome=failure", "scope=none")
	if len(failed) != 4 {
		t.Fatalf("%d failure lines:\n%s", len(failed), strings.Join(h.auditLines(), "\n"))
	}
	for _, id := range failed {
		if !regexp.MustCompile(`^hmac:[0-9a-f]{8}$`).MatchString(id) {
			t.Errorf("failure names the token %q, want hmac:xxxxxxxx", id)
		}
	}
	if failed[0] != failed[1] || failed[1] != failed[2] || failed[3] == failed[0] {
		t.Errorf("ids %v: want one value's attempts alike (API and form), another value's different", failed)
	}
	logs := h.logs.String()
	for _, v := range []string{wrongToken, pasted} {
		sum := sha256.Sum256([]byte(v))
		for _, unkeyed := range []string{hex.EncodeToString(sum[:4]), hashToken(v).id()} {
			if strings.Contains(logs, unkeyed) {
				t.Errorf("the logs hold an unkeyed hash prefix of a presented value (%s)", unkeyed)
			}
		}
	}
	h.wantAudit("action=login", "outcome=success", "scope=read", "token="+hashToken(readToken).id())
	if failedTokenID(hashToken(wrongToken)) != failed[0] || len(failureKey) != sha256.Size || failureKey == [sha256.Size]byte{} {
		t.Error("the failure key is not the process's random key")
	}
}

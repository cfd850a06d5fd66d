package devsandbox

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// The sandbox also plays the user's side of the first authorisation:
// an authorization endpoint that signs in as a chosen user at once (the
// "browser"), and a device code endpoint whose codes the test approves.

const grantDeviceCode = "urn:ietf:params:oauth:grant-type:device_code"

type authCode struct {
	clientID, user, challenge, redirect, scope string
}

type deviceCode struct {
	clientID, scope, userCode, user string
	approved                        bool
}

// AuthURL is the sandbox's authorization endpoint; DeviceCodeURL its
// device authorization endpoint (RFC 8628).
func (ts *TokenServer) AuthURL() string { return strings.TrimSuffix(ts.URL, "/token") + "/authorize" }
func (ts *TokenServer) DeviceCodeURL() string {
	return strings.TrimSuffix(ts.URL, "/token") + "/devicecode"
}

// SetBrowserUser sets who is signed in at the authorization endpoint.
func (ts *TokenServer) SetBrowserUser(user string) {
	ts.mu.Lock()
	ts.browserUser = strings.ToLower(user)
	ts.mu.Unlock()
}

// ApproveDevice approves a device code by its user code, as user.
func (ts *TokenServer) ApproveDevice(userCode, user string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, d := range ts.devices {
		if d.userCode == userCode {
			d.user, d.approved = strings.ToLower(user), true
			return true
		}
	}
	return false
}

// handleAuthorize signs in the browser user and redirects back with a code
// (RFC 6749 §4.1, with PKCE, RFC 7636).
func (ts *TokenServer) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme != "http" || (redirect.Hostname() != "127.0.0.1" && redirect.Hostname() != "localhost") {
		http.Error(w, "redirect_uri must be a loopback address", http.StatusBadRequest)
		return
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" {
		http.Error(w, "PKCE with S256 is required", http.StatusBadRequest)
		return
	}
	ts.mu.Lock()
	_, known := ts.clients[q.Get("client_id")]
	user := ts.browserUser
	code := "code-" + randomHex(16)
	if known && user != "" {
		ts.codes[code] = &authCode{clientID: q.Get("client_id"), user: user, challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"), scope: q.Get("scope")}
	}
	ts.mu.Unlock()
	v := redirect.Query()
	if !known || user == "" {
		v.Set("error", "access_denied")
	} else {
		v.Set("code", code)
	}
	v.Set("state", q.Get("state"))
	redirect.RawQuery = v.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

func (ts *TokenServer) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeTokenError(w, tokenError{400, "invalid_request", "malformed form body"})
		return
	}
	ts.mu.Lock()
	_, known := ts.clients[r.PostForm.Get("client_id")]
	dc, uc := "dc-"+randomHex(16), strings.ToUpper(randomHex(4))
	if known {
		ts.devices[dc] = &deviceCode{clientID: r.PostForm.Get("client_id"), scope: r.PostForm.Get("scope"), userCode: uc}
	}
	ts.mu.Unlock()
	if !known {
		writeTokenError(w, tokenError{400, "invalid_client", "unknown client"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"device_code":      dc,
		"user_code":        uc,
		"verification_uri": strings.TrimSuffix(ts.URL, "/token") + "/device",
		"expires_in":       900,
		"interval":         1,
		"message":          "To sign in, open " + strings.TrimSuffix(ts.URL, "/token") + "/device and enter the code " + uc + ".",
	})
}

// grantCodeOrDevice handles the authorization_code and device_code grants;
// called with mu held. The bool is false when the grant type is neither.
func (ts *TokenServer) grantCodeOrDevice(r *http.Request) (AccessGrant, *tokenError, bool) {
	form := r.PostForm
	switch form.Get("grant_type") {
	case "authorization_code":
		id, terr := ts.authenticateClient(r, false)
		if terr != nil {
			return AccessGrant{}, terr, true
		}
		c, ok := ts.codes[form.Get("code")]
		delete(ts.codes, form.Get("code")) // codes are single-use
		if !ok || c.clientID != id || c.redirect != form.Get("redirect_uri") {
			return AccessGrant{}, &tokenError{400, "invalid_grant", "The authorization code is invalid or was issued to another client."}, true
		}
		sum := sha256.Sum256([]byte(form.Get("code_verifier")))
		if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			return AccessGrant{}, &tokenError{400, "invalid_grant", "PKCE verification failed."}, true
		}
		return AccessGrant{ClientID: id, User: c.user, Scope: c.scope}, nil, true
	case grantDeviceCode:
		id, terr := ts.authenticateClient(r, false)
		if terr != nil {
			return AccessGrant{}, terr, true
		}
		d, ok := ts.devices[form.Get("device_code")]
		if !ok || d.clientID != id {
			return AccessGrant{}, &tokenError{400, "expired_token", "The device code is unknown or expired."}, true
		}
		if !d.approved {
			return AccessGrant{}, &tokenError{400, "authorization_pending", "The user has not finished signing in."}, true
		}
		delete(ts.devices, form.Get("device_code"))
		return AccessGrant{ClientID: id, User: d.user, Scope: d.scope}, nil, true
	}
	return AccessGrant{}, nil, false
}

package seal_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	keyName     = "oauthrelay-queue"
	dataKeyPath = "/v1/transit/datakey/plaintext/" + keyName
	decryptPath = "/v1/transit/decrypt/" + keyName
)

// relayPolicy is the policy the README asks for.
const relayPolicy = `
path "transit/datakey/plaintext/oauthrelay-queue" { capabilities = ["update"] }
path "transit/decrypt/oauthrelay-queue"           { capabilities = ["update"] }
`

// transitVault starts a Vault dev server with the Transit engine at
// transit/ holding the key keyName.
func transitVault(t *testing.T) *testutil.VaultServer {
	t.Helper()
	vs := testutil.StartVault(t)
	enableTransit(t, vs)
	return vs
}

func enableTransit(t *testing.T, vs *testutil.VaultServer) {
	t.Helper()
	if err := vs.Client.Sys().Mount("transit", &vault.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	if _, err := vs.Client.Logical().Write("transit/keys/"+keyName, nil); err != nil {
		t.Fatal(err)
	}
}

// counter is an http.RoundTripper that counts Vault requests by path and
// by token, and can hold data key requests until released.
type counter struct {
	mu      sync.Mutex
	paths   map[string]int
	tokens  map[string]int
	hold    chan struct{} // when set: data key requests wait for it to close
	entered chan struct{} // a held request announces itself here
}

func newCounter() *counter {
	return &counter{paths: map[string]int{}, tokens: map[string]int{}}
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.paths[r.URL.Path]++
	c.tokens[r.Header.Get("X-Vault-Token")]++
	hold, entered := c.hold, c.entered
	c.mu.Unlock()
	if hold != nil && strings.Contains(r.URL.Path, "/datakey/") {
		entered <- struct{}{}
		<-hold
	}
	return http.DefaultTransport.RoundTrip(r)
}

// holdDataKeys makes data key requests wait until release is called.
func (c *counter) holdDataKeys() (entered <-chan struct{}, release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold, c.entered = make(chan struct{}), make(chan struct{}, 100)
	hold := c.hold
	return c.entered, func() { close(hold) }
}

func (c *counter) path(p string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paths[p]
}

func (c *counter) token(tok string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens[tok]
}

// client returns a Vault client for vs with token whose requests c counts.
func (c *counter) client(t *testing.T, vs *testutil.VaultServer, token string) *vault.Client {
	t.Helper()
	vc, err := vault.NewClient(&vault.Config{
		Address:    vs.Addr,
		HttpClient: &http.Client{Transport: c},
		MaxRetries: 0,
		Timeout:    30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(token)
	return vc
}

// fixed returns a client func that always returns vc.
func fixed(vc *vault.Client) func() *vault.Client {
	return func() *vault.Client { return vc }
}

// clock is a manual clock that counts its reads.
type clock struct {
	mu    sync.Mutex
	now   time.Time
	reads int
}

func newClock() *clock { return &clock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *clock) Reads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

// assertSealWorks encrypts with key and decrypts with the key unwrapped
// elsewhere: AES-256-GCM, as the store uses them.
func assertSealWorks(t *testing.T, key, unwrapped []byte) {
	t.Helper()
	body := []byte("Subject: hello\r\n\r\nqueued body\r\n")
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	sealed := gcm(t, key).Seal(nil, nonce, body, []byte("msg-1"))
	opened, err := gcm(t, unwrapped).Open(nil, nonce, sealed, []byte("msg-1"))
	if err != nil || !bytes.Equal(opened, body) {
		t.Fatalf("AES-GCM with the unwrapped key: %v", err)
	}
}

func gcm(t *testing.T, key []byte) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// assertClean fails when err's text holds a token, a key in any usual
// encoding, or a Transit ciphertext.
func assertClean(t *testing.T, err error, tokens []string, keys ...[]byte) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	text := err.Error()
	secrets := append([]string{"vault:v1:", testutil.VaultRootToken}, tokens...)
	for _, k := range keys {
		secrets = append(secrets, string(k), hex.EncodeToString(k), base64.StdEncoding.EncodeToString(k), base64.RawStdEncoding.EncodeToString(k))
	}
	testutil.AssertNoSecrets(t, "error text", text, secrets)
}

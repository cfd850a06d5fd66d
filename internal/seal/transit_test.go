package seal_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/oauthrelay/oauthrelay/internal/seal"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestTransitRoundTrip: a data key made by one sealer is unwrapped by
// another (a restarted relay, another instance) to the same key, and
// bodies sealed with one open with the other.
func TestTransitRoundTrip(t *testing.T) {
	vs := transitVault(t)
	cnt := newCounter()
	writer := seal.NewTransit(fixed(cnt.client(t, vs, testutil.VaultRootToken)), "transit", keyName, seal.TransitOptions{})
	reader := seal.NewTransit(fixed(cnt.client(t, vs, testutil.VaultRootToken)), "/transit/", keyName, seal.TransitOptions{})

	key, wrapped, err := writer.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != seal.KeySize || !strings.HasPrefix(string(wrapped), "vault:v1:") {
		t.Fatalf("key of %d bytes, wrapped %q…; want %d bytes and a Transit ciphertext", len(key), string(wrapped)[:min(9, len(wrapped))], seal.KeySize)
	}
	if bytes.Contains(wrapped, key) {
		t.Fatal("the wrapped form holds the key")
	}
	got, err := reader.Unwrap(t.Context(), wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, key) {
		t.Fatal("Unwrap returned another key")
	}
	assertSealWorks(t, key, got)
	if n, m := cnt.path(dataKeyPath), cnt.path(decryptPath); n != 1 || m != 1 {
		t.Fatalf("requests: %d datakey, %d decrypt; want 1 each", n, m)
	}

	other, _, err := reader.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other, key) {
		t.Fatal("two sealers got the same data key")
	}
}

// TestTransitRotation: one data key serves until its rotation period ends
// or its uses run out; then Transit makes the next one.
func TestTransitRotation(t *testing.T) {
	type step struct {
		advance time.Duration
		calls   int  // DataKey calls in this step (1 when 0)
		wantNew bool // the first call gets a new key
	}
	tests := []struct {
		name  string
		opts  seal.TransitOptions
		steps []step
	}{
		{"default period is a minute", seal.TransitOptions{}, []step{
			{wantNew: true}, {advance: 59 * time.Second, calls: 3}, {advance: time.Second, wantNew: true}, {advance: 30 * time.Second},
		}},
		{"period", seal.TransitOptions{Rotate: 10 * time.Minute}, []step{
			{wantNew: true}, {advance: 10*time.Minute - time.Nanosecond}, {advance: time.Nanosecond, wantNew: true},
		}},
		{"uses", seal.TransitOptions{MaxUses: 3, Rotate: time.Hour}, []step{
			{wantNew: true}, {calls: 2}, {wantNew: true}, {calls: 2}, {wantNew: true},
		}},
		{"default uses", seal.TransitOptions{Rotate: time.Hour}, []step{
			{wantNew: true, calls: seal.DefaultMaxUses}, {wantNew: true},
		}},
	}
	vs := transitVault(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cnt, clk := newCounter(), newClock()
			opts := tt.opts
			opts.Now = clk.Now
			tr := seal.NewTransit(fixed(cnt.client(t, vs, testutil.VaultRootToken)), "transit", keyName, opts)
			keys := map[string][]byte{} // wrapped → key
			var last []byte
			wantRequests := 0
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				for c := range max(s.calls, 1) {
					key, wrapped, err := tr.DataKey(t.Context())
					if err != nil {
						t.Fatal(err)
					}
					isNew := keys[string(wrapped)] == nil
					if isNew != (s.wantNew && c == 0) {
						t.Fatalf("step %d call %d: new key = %v", i, c, isNew)
					}
					if !isNew && !bytes.Equal(key, last) {
						t.Fatalf("step %d call %d: same wrapped form, another key", i, c)
					}
					keys[string(wrapped)], last = key, key
				}
				if s.wantNew {
					wantRequests++
				}
				if n := cnt.path(dataKeyPath); n != wantRequests {
					t.Fatalf("after step %d: %d datakey requests, want %d", i, n, wantRequests)
				}
			}
			reader := seal.NewTransit(fixed(vs.Client), "transit", keyName, seal.TransitOptions{})
			for wrapped, key := range keys {
				got, err := reader.Unwrap(t.Context(), []byte(wrapped))
				if err != nil || !bytes.Equal(got, key) {
					t.Fatalf("unwrapping a rotated key: %v", err)
				}
			}
		})
	}
}

// TestTransitConcurrentCallersShareOneRequest: when the key is due for
// rotation, one Transit request renews it; a caller that gives up does not
// end it for the others, and the callers meanwhile do not wait for it.
func TestTransitConcurrentCallersShareOneRequest(t *testing.T) {
	vs := transitVault(t)
	cnt, clk := newCounter(), newClock()
	tr := seal.NewTransit(fixed(cnt.client(t, vs, testutil.VaultRootToken)), "transit", keyName, seal.TransitOptions{Now: clk.Now})
	old, _, err := tr.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(seal.DefaultRotate)
	entered, release := cnt.holdDataKeys()
	released := false
	defer func() {
		if !released {
			release()
		}
	}()

	impatient, cancel := context.WithCancel(t.Context())
	impatientErr := make(chan error, 1)
	go func() { _, _, err := tr.DataKey(impatient); impatientErr <- err }()
	<-entered // its request reached Vault's door and waits there
	cancel()
	if err := <-impatientErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled caller got %v, want context.Canceled", err)
	}

	const callers = 64
	type result struct {
		key, wrapped []byte
		err          error
	}
	results := make(chan result, callers)
	for range callers {
		go func() {
			k, w, err := tr.DataKey(t.Context())
			results <- result{k, w, err}
		}()
	}
	// While the renewal waits at Vault's door, the callers do not wait
	// with it: the current key serves on (as through an outage).
	for i := 0; i < callers; i++ {
		r := <-results
		if r.err != nil || !bytes.Equal(r.key, old) {
			t.Fatalf("caller %d during the renewal: err %v, or not the current key", i, r.err)
		}
	}
	release()
	released = true
	testutil.WaitFor(t, 30*time.Second, "the renewed key", func() bool {
		k, _, err := tr.DataKey(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return !bytes.Equal(k, old)
	})
	if n := cnt.path(dataKeyPath); n != 2 {
		t.Fatalf("%d datakey requests, want 2 (the first key and one shared renewal)", n)
	}
}

// TestTransitUnwrapCache: unwrapped keys are kept, up to CacheSize, so
// reading bodies does not ask Vault each time; callers cannot alter them.
func TestTransitUnwrapCache(t *testing.T) {
	vs := transitVault(t)
	writer := seal.NewTransit(fixed(vs.Client), "transit", keyName, seal.TransitOptions{MaxUses: 1})
	var keys, wrapped [3][]byte
	for i := range keys {
		var err error
		if keys[i], wrapped[i], err = writer.DataKey(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	cnt := newCounter()
	reader := seal.NewTransit(fixed(cnt.client(t, vs, testutil.VaultRootToken)), "transit", keyName, seal.TransitOptions{CacheSize: 2})
	steps := []struct {
		key          int
		wantRequests int
	}{
		{0, 1}, {0, 1}, // cached
		{1, 2}, {2, 3}, // the cache holds 1 and 2: 0 went out
		{2, 3}, {1, 3},
		{0, 4},
	}
	for i, s := range steps {
		got, err := reader.Unwrap(t.Context(), wrapped[s.key])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, keys[s.key]) {
			t.Fatalf("step %d: wrong key", i)
		}
		clear(got) // a caller zeroing its copy
		if n := cnt.path(decryptPath); n != s.wantRequests {
			t.Fatalf("step %d: %d decrypt requests, want %d", i, n, s.wantRequests)
		}
	}
}

// TestTransitDataKeyReturnsCopies: a caller zeroing its key (as it
// should when done) does not change the key the next batch gets.
func TestTransitDataKeyReturnsCopies(t *testing.T) {
	vs := transitVault(t)
	tr := seal.NewTransit(fixed(vs.Client), "transit", keyName, seal.TransitOptions{})
	k1, w1, err := tr.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(k1)
	clear(k1)
	clear(w1)
	k2, w2, err := tr.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k2, want) || !strings.HasPrefix(string(w2), "vault:v1:") {
		t.Fatal("the sealer's key changed with the caller's copy")
	}
}

// TestTransitFollowsTokenRotation: every request uses the client func's
// current client and token, so a new login (a new client, or a new token
// in the same client) is used at once and the old token may be revoked.
func TestTransitFollowsTokenRotation(t *testing.T) {
	tests := []struct {
		name   string
		rotate func(cur *atomic.Pointer[vault.Client], next *vault.Client, token string)
	}{
		{"new client", func(cur *atomic.Pointer[vault.Client], next *vault.Client, _ string) { cur.Store(next) }},
		{"new token in the same client", func(cur *atomic.Pointer[vault.Client], _ *vault.Client, token string) { cur.Load().SetToken(token) }},
	}
	vs := transitVault(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokA, tokB := vs.PolicyToken("relay", relayPolicy), vs.PolicyToken("relay", relayPolicy)
			cnt, clk := newCounter(), newClock()
			var cur atomic.Pointer[vault.Client]
			cur.Store(cnt.client(t, vs, tokA))
			tr := seal.NewTransit(cur.Load, "transit", keyName, seal.TransitOptions{Now: clk.Now})
			k1, w1, err := tr.DataKey(t.Context())
			if err != nil {
				t.Fatal(err)
			}

			tt.rotate(&cur, cnt.client(t, vs, tokB), tokB)
			if err := vs.Client.Auth().Token().RevokeTree(tokA); err != nil {
				t.Fatal(err)
			}
			clk.Advance(seal.DefaultRotate)
			k2, _, err := tr.DataKey(t.Context())
			if err != nil {
				t.Fatalf("DataKey after the token rotated: %v", err)
			}
			got, err := tr.Unwrap(t.Context(), w1)
			if err != nil || !bytes.Equal(got, k1) {
				t.Fatalf("Unwrap after the token rotated: %v", err)
			}
			if bytes.Equal(k1, k2) {
				t.Fatal("no new key after the rotation period")
			}
			if a, b := cnt.token(tokA), cnt.token(tokB); a != 1 || b != 2 {
				t.Fatalf("requests with the old token: %d (want 1), with the new: %d (want 2)", a, b)
			}
		})
	}
}

// TestTransitWithoutDecryptPolicy: a token that may make data keys but
// not decrypt them fails at the first read, saying which policy paths
// are needed.
func TestTransitWithoutDecryptPolicy(t *testing.T) {
	vs := transitVault(t)
	tok := vs.PolicyToken("datakey-only", `path "transit/datakey/plaintext/oauthrelay-queue" { capabilities = ["update"] }`)
	vc := newCounter().client(t, vs, tok)
	tr := seal.NewTransit(fixed(vc), "transit", keyName, seal.TransitOptions{})
	key, wrapped, err := tr.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Unwrap(t.Context(), wrapped)
	assertClean(t, err, []string{tok}, key)
	for _, want := range []string{
		`transit decrypt (mount "transit", key "oauthrelay-queue"): permission denied (HTTP 403`,
		`must grant "update" on transit/datakey/plaintext/oauthrelay-queue and transit/decrypt/oauthrelay-queue`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nlacks %q", err, want)
		}
	}
	var re *vault.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 403 {
		t.Errorf("errors.As finds no 403 *vault.ResponseError in %v", err)
	}
}

// TestTransitErrors: every failure names its step, mount and key, says
// what to do where it can, and holds no key, ciphertext or token.
func TestTransitErrors(t *testing.T) {
	vs := transitVault(t)
	tok := vs.PolicyToken("any-key", `
path "+/datakey/plaintext/*" { capabilities = ["update"] }
path "+/decrypt/*"           { capabilities = ["update"] }
`)
	vc := newCounter().client(t, vs, tok)
	good := seal.NewTransit(fixed(vc), "transit", keyName, seal.TransitOptions{})
	key, wrapped, err := good.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tampered := []byte(strings.Replace(string(wrapped), "vault:v1:", "vault:v1:AAAA", 1))
	other := seal.NewTransit(fixed(vc), "transit", "other-key", seal.TransitOptions{})
	if _, err := vs.Client.Logical().Write("transit/keys/other-key", nil); err != nil {
		t.Fatal(err)
	}
	_, localWrapped, _ := seal.NewLocal().DataKey(t.Context())

	tests := []struct {
		name string
		call func() error
		want []string
	}{
		{"missing key", func() error {
			_, _, err := seal.NewTransit(fixed(vc), "transit", "absent", seal.TransitOptions{}).DataKey(t.Context())
			return err
		}, []string{"transit datakey: transit key \"absent\" not found at mount \"transit\": create it with `vault write -f transit/keys/absent`"}},
		{"missing mount", func() error {
			_, _, err := seal.NewTransit(fixed(vc), "nowhere", keyName, seal.TransitOptions{}).DataKey(t.Context())
			return err
		}, []string{`transit datakey: no Transit secrets engine at mount "nowhere"`, "`vault secrets enable -path=nowhere transit`"}},
		{"another key's ciphertext", func() error {
			_, err := other.Unwrap(t.Context(), wrapped)
			return err
		}, []string{`transit decrypt (mount "transit", key "other-key"): HTTP 400 from Vault`, "made with another Transit key or was altered"}},
		{"altered ciphertext", func() error {
			_, err := good.Unwrap(t.Context(), tampered)
			return err
		}, []string{`transit decrypt (mount "transit", key "oauthrelay-queue"): HTTP 400 from Vault`, "made with another Transit key or was altered"}},
		{"not a Transit ciphertext", func() error {
			_, err := good.Unwrap(t.Context(), localWrapped)
			return err
		}, []string{`transit decrypt (mount "transit", key "oauthrelay-queue"): the wrapped key is not a Transit ciphertext`}},
		{"invalid key name", func() error {
			_, _, err := seal.NewTransit(fixed(vc), "transit", "a/b", seal.TransitOptions{}).DataKey(t.Context())
			return err
		}, []string{`transit datakey (mount "transit", key "a/b"): invalid Transit key name "a/b"`}},
		{"not logged in", func() error {
			_, _, err := seal.NewTransit(func() *vault.Client { return nil }, "transit", keyName, seal.TransitOptions{}).DataKey(t.Context())
			return err
		}, []string{`transit datakey (mount "transit", key "oauthrelay-queue"): no Vault client (not logged in)`}},
		{"cancelled", func() error {
			cctx, cancel := context.WithCancel(t.Context())
			cancel()
			_, err := seal.NewTransit(fixed(vc), "transit", keyName, seal.TransitOptions{}).Unwrap(cctx, wrapped)
			return err
		}, []string{`transit decrypt (mount "transit", key "oauthrelay-queue"): context canceled`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			t.Logf("%v", err)
			assertClean(t, err, []string{tok}, key)
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nlacks %q", err, want)
				}
			}
		})
	}
}

// TestTransitServesOnThroughAnOutage: when Vault is down at rotation time
// the current key serves on (Transit asked again after a pause) instead
// of stopping the queue's intake; Vault back, the next key comes.
func TestTransitServesOnThroughAnOutage(t *testing.T) {
	vs := transitVault(t)
	cnt, clk := newCounter(), newClock()
	logs := &testutil.LogBuffer{}
	tr := seal.NewTransit(fixed(cnt.client(t, vs, testutil.VaultRootToken)), "transit", keyName,
		seal.TransitOptions{Now: clk.Now, MaxUses: 5, Log: logs.Logger(t)})
	k1, _, err := tr.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	vs.Stop()
	clk.Advance(seal.DefaultRotate)
	for i := range 2 { // the failed request, then a call inside the pause
		k, _, err := tr.DataKey(t.Context())
		if err != nil || !bytes.Equal(k, k1) {
			t.Fatalf("call %d during the outage: %v, or another key", i, err)
		}
	}
	if n := cnt.path(dataKeyPath); n != 2 {
		t.Fatalf("%d datakey requests, want 2: none during the pause", n)
	}
	if !strings.Contains(logs.String(), "the current one serves on") {
		t.Errorf("no warning logged:\n%s", logs.String())
	}

	clk.Advance(time.Minute) // past the pause: Transit is asked again, and fails again
	k, _, err := tr.DataKey(t.Context())
	if err != nil || !bytes.Equal(k, k1) {
		t.Fatalf("after the pause: %v, or another key", err)
	}
	_, _, err = tr.DataKey(t.Context()) // the fifth and last use
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = tr.DataKey(t.Context())
	assertClean(t, err, nil, k1)
	if !strings.Contains(err.Error(), `transit datakey (mount "transit", key "oauthrelay-queue"): `) {
		t.Fatalf("with the key used up and Vault down: %v", err)
	}

	vs.Restart()
	enableTransit(t, vs)
	k2, _, err := tr.DataKey(t.Context())
	if err != nil || bytes.Equal(k2, k1) {
		t.Fatalf("with Vault back: %v, or the old key", err)
	}
}

// TestTransitRefusalEndsTheKey: a refusal (here the token revoked) is not
// an outage: the expired key is not handed out.
func TestTransitRefusalEndsTheKey(t *testing.T) {
	vs := transitVault(t)
	tok := vs.PolicyToken("relay", relayPolicy)
	clk := newClock()
	tr := seal.NewTransit(fixed(newCounter().client(t, vs, tok)), "transit", keyName, seal.TransitOptions{Now: clk.Now})
	k1, _, err := tr.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := vs.Client.Auth().Token().RevokeTree(tok); err != nil {
		t.Fatal(err)
	}
	clk.Advance(seal.DefaultRotate)
	_, _, err = tr.DataKey(t.Context())
	assertClean(t, err, []string{tok}, k1)
	if !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("err = %v, want permission denied", err)
	}
}

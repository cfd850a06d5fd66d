package seal_test

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/oauthrelay/oauthrelay/internal/seal"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// hangingVault accepts connections and never answers, like a Vault behind
// a firewall that drops packets.
func hangingVault(t *testing.T) *vault.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	cfg := vault.DefaultConfig()
	cfg.Address = "http://" + ln.Addr().String()
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(testutil.VaultRootToken)
	return c
}

// TestTransitHangingAtRotationServesOn: when Vault stops answering at a
// rotation, the caller waits a bounded time, then the current key serves
// on; later callers do not wait while the renewal hangs.
func TestTransitHangingAtRotationServesOn(t *testing.T) {
	vs := transitVault(t)
	hung := hangingVault(t)
	var useHung atomic.Bool
	client := func() *vault.Client {
		if useHung.Load() {
			return hung
		}
		return vs.Client
	}
	clk := newClock()
	logs := &testutil.LogBuffer{}
	tr := seal.NewTransit(client, "transit", keyName, seal.TransitOptions{Now: clk.Now, Log: logs.Logger(t)})
	k1, _, err := tr.DataKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	useHung.Store(true)
	clk.Advance(seal.DefaultRotate)
	for i := range 3 {
		k, _, err := tr.DataKey(t.Context())
		if err != nil || !bytes.Equal(k, k1) {
			t.Fatalf("call %d while Vault hangs: %v, or another key", i, err)
		}
	}
	if !bytes.Contains([]byte(logs.String()), []byte("slow to make a new data key")) {
		t.Errorf("no warning logged:\n%s", logs.String())
	}
}

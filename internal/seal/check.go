package seal

import (
	"context"
	"crypto/subtle"
	"errors"

	vault "github.com/hashicorp/vault/api"
)

// CheckTransit verifies that the Transit key keyName exists at mount and
// that client's token may use it as the relay does: it makes a data key
// and unwraps it again (a real round trip; the key is discarded). Its
// errors tell an operator what to do: create the key, enable the engine,
// or grant the policy paths. It changes nothing in Vault.
func CheckTransit(ctx context.Context, client *vault.Client, mount, keyName string) error {
	n := newNames(mount, keyName)
	key, wrapped, err := requestDataKey(ctx, client, n)
	if err != nil {
		return err
	}
	got, err := requestDecrypt(ctx, client, n, string(wrapped))
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(key, got) != 1 {
		return n.fail(stepCheck, errors.New("decrypt returned another key than datakey made"))
	}
	return nil
}

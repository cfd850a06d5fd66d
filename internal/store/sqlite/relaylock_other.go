//go:build !unix

package sqlite

import "os"

// lockRelay without flock(2): nothing keeps a second relay out.
func lockRelay(string) (*os.File, error) { return nil, nil }

// relayHolding without flock(2): no relay can be seen.
func relayHolding(string) (string, bool) { return "", false }

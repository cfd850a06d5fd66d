//go:build !unix

package sqlite

import "os"

// lockRelay without flock(2): nothing keeps a second relay out.
func lockRelay(string) (*os.File, error) { return nil, nil }

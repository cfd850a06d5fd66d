//go:build !unix

package sqlite

// turnstile without flock(2): writers still poll for the write lock, but
// do not let each other go first.
type turnstile struct{}

func openTurnstile(string) (*turnstile, error) { return &turnstile{}, nil }
func (*turnstile) othersWaiting() bool         { return false }
func (*turnstile) announce() func()            { return func() {} }
func (*turnstile) close() error                { return nil }

package server_test

import (
	"os"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestMain stops the servers the tests share: the headless Chromium of
// the console's browser test.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopSharedBrowser()
	os.Exit(code)
}

package app

import (
	"os"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopSharedPostgres()
	os.Exit(code)
}

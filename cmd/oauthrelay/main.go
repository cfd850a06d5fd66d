// Command oauthrelay is an SMTP relay that delivers local applications' mail
// through Gmail / Google Workspace and Microsoft 365 with OAuth2.
package main

import (
	"context"
	"os"

	"golang.org/x/term"

	"github.com/oauthrelay/oauthrelay/internal/app"
)

func main() {
	os.Exit(app.Main(context.Background(), os.Args[1:], app.IO{
		Stdin:            os.Stdin,
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
		StderrIsTerminal: term.IsTerminal(int(os.Stderr.Fd())),
	}))
}

package app

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/passwd"
	"github.com/oauthrelay/oauthrelay/internal/runtime"
	"github.com/oauthrelay/oauthrelay/internal/telemetry"
)

// Names used by `oauthrelay dev`.
const (
	devClientID = "oauthrelay-dev"
	devAccount  = "dev@oauthrelay.test"
	devUser     = "dev"
)

const devConfigTemplate = `# Written by "oauthrelay dev": the relay in front of the embedded sandbox
# provider. Every value below is real configuration, read by the same code
# as "oauthrelay run"; the secrets live in files next to this one.

server {
  hostname = "localhost"
}

telemetry {
  address = %q   # /metrics, /health/ready, /dev/messages
}

listener "dev" {
  address  = %q
  tls_mode = "none"   # plaintext AUTH is accepted on loopback only
}

provider "sandbox" {
  preset       = "custom"
  token_url    = %q
  smtp_address = %q
  smtp_tls     = "starttls"
  ca_file      = %q
  scopes       = ["https://mail.google.com/"]
}

account_group "dev" {
  provider      = "sandbox"
  flow          = "refresh_token"
  client_id     = %q
  client_secret = "file://%s"

  account %q {
    refresh_token = "file://%s"
  }

  client %q {
    password_hash = %q
  }
}
`

func cmdDev(ctx context.Context, args []string, stdio IO) int {
	fs := newFlagSet("dev", stdio)
	listen := fs.String("listen", "127.0.0.1:2525", "SMTP address of the relay (loopback)")
	telemetryAddr := fs.String("telemetry", "127.0.0.1:8025", "address of /metrics, /health and /dev/messages")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logging := telemetry.NewLogging(stdio.Stderr, "info", "text")
	log := logging.Logger()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stdio.Stderr, "oauthrelay dev: "+format+"\n", a...)
		return 1
	}
	for _, a := range []string{*listen, *telemetryAddr} {
		host, _, err := net.SplitHostPort(a)
		if err != nil || !config.IsLoopbackHost(host) {
			return fail("%q must be a loopback host:port: dev mode accepts plaintext passwords", a)
		}
	}

	sb, err := devsandbox.Start(devsandbox.Options{Logger: log.Named("sandbox")})
	if err != nil {
		return fail("starting the sandbox provider: %v", err)
	}
	defer sb.Close()
	clientSecret := randomWord(20)
	sb.Tokens.AddClient(devClientID, clientSecret)
	refreshToken := sb.Tokens.IssueRefreshToken(devClientID, devAccount, config.GoogleScope)
	sb.SMTP.RequireScope(config.GoogleScope)

	dir, err := os.MkdirTemp("", "oauthrelay-dev-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)
	password := randomWord(12)
	hash, err := passwd.Hash(passwd.Bcrypt, password, 10)
	if err != nil {
		return fail("%v", err)
	}
	files := map[string]string{
		"sandbox-ca.pem": string(sb.CA.PEM),
		"client-secret":  clientSecret,
		"refresh-token":  refreshToken,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return fail("%v", err)
		}
	}
	smtpAddr, note := freeOr(*listen)
	httpAddr, _ := freeOr(*telemetryAddr)
	cfgPath := filepath.Join(dir, "oauthrelay.hcl")
	cfgText := fmt.Sprintf(devConfigTemplate, httpAddr, smtpAddr, sb.Tokens.URL, sb.SMTP.Addr,
		filepath.Join(dir, "sandbox-ca.pem"), devClientID, filepath.Join(dir, "client-secret"),
		devAccount, filepath.Join(dir, "refresh-token"), devUser, hash)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return fail("%v", err)
	}
	cfg := loadConfig(cfgPath, config.Overrides{}, stdio)
	if cfg == nil {
		return fail("the generated configuration is invalid (a bug; please report it)")
	}
	messages := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(sb.SMTP.MessagesJSON())
	})
	ctx, stop := signalContext(ctx, log.Warn)
	defer stop()
	rt, err := runtime.New(ctx, cfg, runtime.Options{
		Logging:    logging,
		ConfigPath: cfgPath,
		Version:    Version,
		ExtraHTTP:  map[string]http.Handler{"GET /dev/messages": messages},
	})
	if err != nil {
		return fail("%v", err)
	}
	if err := rt.Start(); err != nil {
		return fail("%v", err)
	}
	addr := rt.ListenerAddr("dev").String()
	host, port, _ := net.SplitHostPort(addr)
	fmt.Fprintf(stdio.Stdout, `
oauthrelay dev is running: your mail goes relay -> OAuth2 token -> XOAUTH2 over STARTTLS
to an embedded sandbox provider (nothing leaves this machine).%s

  SMTP          %s   (AUTH PLAIN/LOGIN, no TLS: loopback only)
  username      %s
  password      %s
  sends as      %s
  messages      http://%s/dev/messages
  metrics       http://%s/metrics
  config        %s

Try it:
  printf 'Subject: hello\r\n\r\nIt works.\r\n' | curl -sS smtp://%s:%s --mail-from %s --mail-rcpt you@example.com --user '%s:%s' -T -
  swaks --server %s:%s --auth-user %s --auth-password '%s' --from %s --to you@example.com

Press Ctrl-C to stop.
`, note, addr, devUser, password, devAccount, rt.TelemetryAddr(), rt.TelemetryAddr(), cfgPath,
		host, port, devAccount, devUser, password, host, port, devUser, password, devAccount)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rt.Shutdown(sctx)
	return 0
}

// freeOr returns addr if it can be bound now, else a free port on the same
// host, with a note saying so.
func freeOr(addr string) (string, string) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr, ""
	}
	host, _, _ := net.SplitHostPort(addr)
	ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return addr, ""
	}
	defer ln.Close()
	return ln.Addr().String(), fmt.Sprintf("\n(%s was busy; using a free port instead.)", addr)
}

func randomWord(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))[:n]
}

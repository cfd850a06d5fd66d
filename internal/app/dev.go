package app

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/devsandbox"
	"github.com/oauthrelay/oauthrelay/internal/passwd"
	"github.com/oauthrelay/oauthrelay/internal/server"
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
  address = %q   # /metrics, /health/ready, the sandbox inbox at /dev/
}

# The operator console: the admin API (/api/v1) and the web dashboard. Its
# admin token is in the file admin-token next to this one.
admin {
  address     = %q
  admin_token = "file://%s"
}

# STARTTLS with a certificate from the sandbox CA (sandbox-ca.pem), so that
# clients that insist on TLS before AUTH (msmtp, swaks -tls) work; plaintext
# AUTH stays accepted on loopback for curl's one-liner.
listener "dev" {
  address       = %q
  tls_mode      = "starttls"
  tls_cert_file = %q
  tls_key_file  = %q
}

# The same, storing and forwarding: 250 once the message is durably in the
# store below; the queue then delivers it (see "oauthrelay queue list").
listener "queued" {
  address       = %q
  tls_mode      = "starttls"
  tls_cert_file = %q
  tls_key_file  = %q
  delivery      = "queue"
}

# The queue and the delivery history, in this temporary directory. Dev
# mode keeps subjects in the history so that the console shows them (off
# by default: subjects are often personal data).
store {
  path             = %q
  history_subjects = true
}

queue {
  retry_schedule = ["10s", "30s", "1m", "5m"]
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
	queueListen := fs.String("queue-listen", "127.0.0.1:2526", "SMTP address of the relay's store-and-forward listener (loopback)")
	telemetryAddr := fs.String("telemetry", "127.0.0.1:8025", "address of /metrics, /health and the sandbox inbox (/dev/)")
	consoleAddr := fs.String("console", "127.0.0.1:8026", "address of the operator console (web dashboard and admin API)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logging := telemetry.NewLogging(stdio.Stderr, "info", "text")
	log := logging.Logger()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stdio.Stderr, "oauthrelay dev: "+format+"\n", a...)
		return 1
	}
	for _, a := range []string{*listen, *queueListen, *telemetryAddr, *consoleAddr} {
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
	dir, err := os.MkdirTemp("", "oauthrelay-dev-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)
	smtpAddr, note := freeOr(*listen)
	queueAddr, qnote := freeOr(*queueListen)
	httpAddr, _ := freeOr(*telemetryAddr)
	adminAddr, _ := freeOr(*consoleAddr)
	password := randomWord(12)
	files, err := writeDevFiles(sb, dir, devAddrs{smtp: smtpAddr, queue: queueAddr, http: httpAddr, console: adminAddr}, password)
	if err != nil {
		return fail("%v", err)
	}
	cfg := loadConfig(files.config, config.Overrides{}, stdio)
	if cfg == nil {
		return fail("the generated configuration is invalid (a bug; please report it)")
	}
	ctx, stop := signalContext(ctx, log.Warn)
	defer stop()
	rt, err := server.New(ctx, cfg, server.Options{
		Logging:    logging,
		ConfigPath: files.config,
		Version:    Version,
		ExtraHTTP:  map[string]http.Handler{"GET /dev/": sb.SMTP.WebHandler()},
	})
	if err != nil {
		return fail("%v", err)
	}
	if err := rt.Start(); err != nil {
		return fail("%v", err)
	}
	printDevBanner(stdio.Stdout, devBanner{
		Note:      note + qnote,
		SMTP:      rt.ListenerAddr("dev").String(),
		Queued:    rt.ListenerAddr("queued").String(),
		Password:  password,
		Telemetry: rt.TelemetryAddr().String(),
		Console:   rt.ConsoleAddr().String(),
		Token:     files.adminToken,
		CAFile:    files.ca,
		Config:    files.config,
	})
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rt.Shutdown(sctx)
	return 0
}

// devAddrs are the addresses `oauthrelay dev` serves on.
type devAddrs struct{ smtp, queue, http, console string }

// devFiles are the paths of what `oauthrelay dev` writes to its directory.
type devFiles struct {
	ca, config string
	adminToken string // the console's admin token (dev mode prints it)
}

// writeDevFiles registers the dev client and account with the sandbox and
// writes the configuration that uses them, with its secrets in files next
// to it and the listener's certificate issued by the sandbox CA.
func writeDevFiles(sb *devsandbox.Sandbox, dir string, addrs devAddrs, password string) (devFiles, error) {
	clientSecret := randomWord(20)
	sb.Tokens.AddClient(devClientID, clientSecret)
	refreshToken := sb.Tokens.IssueRefreshToken(devClientID, devAccount, config.GoogleScope)
	sb.SMTP.RequireScope(config.GoogleScope)
	hash, err := passwd.Hash(passwd.Bcrypt, password, 10)
	if err != nil {
		return devFiles{}, err
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	adminToken := randomWord(32)
	secrets := map[string]string{
		"admin-token":    adminToken,
		"sandbox-ca.pem": string(sb.CA.PEM),
		"client-secret":  clientSecret,
		"refresh-token":  refreshToken,
	}
	for name, content := range secrets {
		if err := os.WriteFile(path(name), []byte(content), 0o600); err != nil {
			return devFiles{}, err
		}
	}
	// The listener may be moved to any loopback address with -listen.
	if err := sb.CA.WriteFiles(path("listener-cert.pem"), path("listener-key.pem"), "127.0.0.1", "localhost", "::1"); err != nil {
		return devFiles{}, err
	}
	cfgText := fmt.Sprintf(devConfigTemplate, addrs.http, addrs.console, path("admin-token"), addrs.smtp, path("listener-cert.pem"), path("listener-key.pem"),
		addrs.queue, path("listener-cert.pem"), path("listener-key.pem"), path("store"),
		sb.Tokens.URL, sb.SMTP.Addr, path("sandbox-ca.pem"), devClientID, path("client-secret"),
		devAccount, path("refresh-token"), devUser, hash)
	if err := os.WriteFile(path("oauthrelay.hcl"), []byte(cfgText), 0o600); err != nil {
		return devFiles{}, err
	}
	return devFiles{ca: path("sandbox-ca.pem"), config: path("oauthrelay.hcl"), adminToken: adminToken}, nil
}

// devBanner is what `oauthrelay dev` tells the user once it is running.
type devBanner struct {
	Note, SMTP, Queued, Password, Telemetry, Console, Token, CAFile, Config string
}

// printDevBanner prints the addresses, the dev credentials (dev mode only:
// they protect nothing but a sandbox) and commands ready to paste: curl
// without TLS, msmtp and swaks with STARTTLS verified against the CA file.
func printDevBanner(w io.Writer, b devBanner) {
	host, port, _ := net.SplitHostPort(b.SMTP)
	urlHost := host
	if strings.Contains(host, ":") {
		urlHost = "[" + host + "]" // curl's URL syntax for IPv6
	}
	fmt.Fprintf(w, `
oauthrelay dev is running: your mail goes relay -> OAuth2 token -> XOAUTH2 over STARTTLS
to an embedded sandbox provider (nothing leaves this machine).%s

  SMTP          %s   (AUTH PLAIN/LOGIN; STARTTLS offered, plaintext accepted on loopback)
  SMTP, queued  %s   (the same, store and forward: 250 once stored; then see the queue below)
  username      %s
  password      %s
  sends as      %s
  CA file       %s   (trust it to verify the relay's STARTTLS certificate)
  inbox         http://%s/dev/
  messages      http://%s/dev/messages
  metrics       http://%s/metrics
  console       http://%s/   (admin token: %s)
  config        %s
  queue         oauthrelay queue list -config %s

Try it:
  printf 'Subject: hello\r\n\r\nIt works.\r\n' | curl -sS smtp://%s:%s --mail-from %s --mail-rcpt you@example.com --user '%s:%s' -T -
  printf 'Subject: hello\r\n\r\nIt works.\r\n' | msmtp --host=%s --port=%s --tls=on --tls-trust-file=%s --auth=on --user=%s --passwordeval="echo %s" --from=%s you@example.com
  swaks --server %s --tls --tls-verify --tls-ca-path %s --auth-user %s --auth-password '%s' --from %s --to you@example.com

Press Ctrl-C to stop.
`, b.Note, b.SMTP, b.Queued, devUser, b.Password, devAccount, b.CAFile, b.Telemetry, b.Telemetry, b.Telemetry, b.Console, b.Token, b.Config, b.Config,
		urlHost, port, devAccount, devUser, b.Password,
		host, port, b.CAFile, devUser, b.Password, devAccount,
		b.SMTP, b.CAFile, devUser, b.Password, devAccount)
}

// freeOr returns addr if it can be bound now, else a free port on the same
// host, with a note saying so. Port 0 becomes a concrete free port: two
// listeners cannot share the address "host:0" in one configuration.
func freeOr(addr string) (string, string) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		defer ln.Close()
		if _, port, _ := net.SplitHostPort(addr); port == "0" {
			return ln.Addr().String(), ""
		}
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

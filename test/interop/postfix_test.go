package interop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

// TestPostfix relays through Postfix (Debian package postfix) set up the
// way operators put "our Postfix relays via oauthrelay": relayhost =
// [127.0.0.1]:port, smtp_sasl_auth_enable with a hash: sasl_passwd map,
// smtp_tls_security_level = encrypt. A private instance runs with its own
// config_directory and queue_directory in a temporary directory; mail
// enters through its sendmail command, as applications hand it over.
// Covered: STARTTLS and implicit TLS (smtp_tls_wrappermode), AUTH PLAIN
// and LOGIN (smtp_sasl_mechanism_filter, per destination through
// transport_maps), PIPELINING (Postfix pipelines whenever it is offered),
// BODY=8BITMIME (sendmail -B 8BITMIME), a 20 MiB message, Unix line
// endings, SMTPUTF8 (Postfix flags sendmail mail with a UTF-8 address
// itself: smtputf8_autodetect_classes) and DSN (sendmail -N -R -V;
// Postfix adds ORCPT).
//
// Postfix's master and postfix commands refuse to run for anyone but the
// super-user (Postfix's own check, "the postfix command is reserved for
// the superuser"), so the test needs root; .ci/run runs as root.
func TestPostfix(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("Postfix's master and postfix commands run only as the super-user (Postfix refuses otherwise); run the test as root, as .ci/run does")
	}
	bin := lookClient(t, "postfix", "postfix", "/usr/sbin")
	r := startRelay(t)
	pf := startPostfix(t, bin, r)
	cases := append(tlsAuthCases(), pipeliningCase(), eightBitCase(true), bareLFCase(), largeCase(),
		smtputf8Case(),
		dsnCase(dsnRequest{notify: "SUCCESS,FAILURE", ret: "HDRS", envid: "interop-envid-2"}, true),
	)
	runClient(t, r, pf, "postfix", cases)
}

// postfix is a private Postfix instance relaying to the relay.
type postfix struct {
	dir      string // holds config/, queue/, data/ and the maillog
	config   string
	sendmail string
	maillog  string
	// logOffset is where the current case's lines start in the maillog.
	logOffset int
}

func startPostfix(t *testing.T, bin string, r *relay) *postfix {
	t.Helper()
	dir := t.TempDir()
	// Postfix's daemons run as mail_owner and must reach the queue and
	// data directories: t.TempDir's directories are private to root.
	for d := dir; strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	pf := &postfix{dir: dir, config: filepath.Join(dir, "config"), sendmail: filepath.Join(filepath.Dir(bin), "sendmail"), maillog: filepath.Join(dir, "maillog")}
	owner, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("the postfix user is missing: install the Debian package postfix (it creates it): %v", err)
	}
	uid, _ := strconv.Atoi(owner.Uid)
	for _, d := range []string{"config", "queue", "data"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "data"), uid, -1); err != nil {
		t.Fatal(err)
	}
	pf.writeConfig(t, r)
	pf.postmap(t, bin, "sasl_passwd")
	pf.start(t, bin)
	return pf
}

func (pf *postfix) writeConfig(t *testing.T, r *relay) {
	t.Helper()
	starttls, implicit := nexthop(r.starttls), nexthop(r.implicit)
	testutil.WriteFile(t, pf.config, "main.cf", fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
myhostname = postfix.interop.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
message_size_limit = 52428800

# The set-up under test: relay everything via oauthrelay.
relayhost = %[2]s
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = hash:%[1]s/config/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_tls_security_level = encrypt

# Test plumbing: other TLS modes and mechanisms per recipient domain, a
# fresh connection (and AUTH) for every message, and the SMTP dialogue in
# the log (debug_peer_list).
transport_maps = texthash:%[1]s/config/transport
smtp_connection_cache_on_demand = no
debug_peer_list = 127.0.0.1, 127.0.0.2
`, pf.dir, starttls))
	testutil.WriteFile(t, pf.config, "master.cf", `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
smtp      unix  -       -       n       -       -       smtp
smtp-login unix -       -       n       -       -       smtp
  -o smtp_sasl_mechanism_filter=login
smtps-plain unix -      -       n       -       -       smtp
  -o smtp_tls_wrappermode=yes
  -o smtp_sasl_mechanism_filter=plain
smtps-login unix -      -       n       -       -       smtp
  -o smtp_tls_wrappermode=yes
  -o smtp_sasl_mechanism_filter=login
`)
	// Recipient domains name the route (see route); starttls-plain is
	// the relayhost.
	testutil.WriteFile(t, pf.config, "transport", fmt.Sprintf(`starttls-login.example.net smtp-login:%[1]s
implicit-plain.example.net smtps-plain:%[2]s
implicit-login.example.net smtps-login:%[2]s
`, starttls, implicit))
	testutil.WriteFile(t, pf.config, "sasl_passwd", fmt.Sprintf("%s %s:%s\n%s %s:%s\n", starttls, appUser, r.password, implicit, appUser, r.password))
}

// nexthop is Postfix's notation for a host:port without MX lookup.
func nexthop(addr string) string {
	host, port, _ := strings.Cut(addr, ":")
	return "[" + host + "]:" + port
}

func (pf *postfix) postmap(t *testing.T, bin, table string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(filepath.Dir(bin), "postmap"), "-c", pf.config, "hash:"+filepath.Join(pf.config, table)).CombinedOutput()
	if err != nil {
		t.Fatalf("postmap %s: %v\n%s", table, err, out)
	}
}

// start runs the instance's master in the foreground (postfix start-fg),
// so that it is this test's child, and stops it with `postfix stop` when
// the test ends.
func (pf *postfix) start(t *testing.T, bin string) {
	t.Helper()
	cmd := exec.Command(bin, "-c", pf.config, "start-fg")
	out := &testutil.LogBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if msg, err := exec.Command(bin, "-c", pf.config, "stop").CombinedOutput(); err != nil {
			t.Errorf("postfix stop: %v\n%s", err, msg)
		}
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("Postfix did not stop within 30 s; killing the master's parent (pid %d)", cmd.Process.Pid)
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("Postfix output:\n%s\nmaillog:\n%s", out.String(), tail(pf.log(t), 20000))
		}
	})
	testutil.WaitFor(t, time.Minute, "Postfix to start", func() bool {
		select {
		case <-exited:
			t.Fatalf("postfix start-fg exited:\n%s\n%s", out.String(), pf.log(t))
		default:
		}
		return strings.Contains(pf.log(t), "daemon started")
	})
}

func (pf *postfix) log(t *testing.T) string {
	b, err := os.ReadFile(pf.maillog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// send hands the message to Postfix's sendmail, as an application does
// (-i: a line with a lone dot does not end the input).
func (pf *postfix) send(t *testing.T, s submission) string {
	t.Helper()
	pf.logOffset = len(pf.log(t))
	args := []string{"-C", pf.config, "-i", "-f", s.from}
	if s.eightBit {
		args = append(args, "-B", "8BITMIME")
	}
	if d := s.dsn; d != nil {
		args = append(args, "-N", strings.ToLower(d.notify), "-R", strings.ToLower(d.ret), "-V", d.envid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pf.sendmail, append(append(args, "--"), s.rcpts...)...)
	cmd.Stdin = strings.NewReader(string(s.input))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("Postfix's sendmail: %v\n%s", err, out)
	}
	return ""
}

// wire: Postfix stores lines, whatever their ending, and sends each with
// CRLF.
func (pf *postfix) wire(s submission) []byte { return withFinalCRLF(crlf(s.input)) }

var postfixQueueID = regexp.MustCompile(`postfix/cleanup\[\d+\]: ([0-9A-Za-z]+): message-id=(<[^>]*>)`)

// queueID returns the Postfix queue ID of the submission ("" until
// cleanup logged it).
func (pf *postfix) queueID(t *testing.T, s submission) string {
	for _, m := range postfixQueueID.FindAllStringSubmatch(pf.log(t)[pf.logOffset:], -1) {
		if m[2] == s.messageID() {
			return m[1]
		}
	}
	return ""
}

// delivered reports whether Postfix logged status=sent for every
// recipient; a deferral or bounce fails the test at once.
func (pf *postfix) delivered(t *testing.T, s submission) bool {
	id := pf.queueID(t, s)
	if id == "" {
		return false
	}
	sent := 0
	for _, l := range strings.Split(pf.log(t)[pf.logOffset:], "\n") {
		if !strings.Contains(l, " "+id+": to=<") {
			continue
		}
		switch {
		case strings.Contains(l, "status=sent"):
			sent++
		case strings.Contains(l, "status="):
			t.Fatalf("Postfix did not deliver through the relay: %s", l)
		}
	}
	return sent == len(s.rcpts)
}

var postfixChat = regexp.MustCompile(`postfix/smtp\[(\d+)\]: ([<>]) \S+: (.*)`)

// transcript is the SMTP dialogue of the delivery (debug_peer_list), as
// "> command" and "< reply" lines.
func (pf *postfix) transcript(t *testing.T, s submission) string {
	id := pf.queueID(t, s)
	lines := strings.Split(pf.log(t)[pf.logOffset:], "\n")
	pid := ""
	for _, l := range lines {
		if strings.Contains(l, " "+id+": to=<") && strings.Contains(l, "postfix/smtp") {
			pid = l[strings.Index(l, "postfix/smtp[")+len("postfix/smtp[") : strings.Index(l, "]: ")]
			break
		}
	}
	var b strings.Builder
	for _, l := range lines {
		if m := postfixChat.FindStringSubmatch(l); m != nil && m[1] == pid {
			b.WriteString(m[2] + " " + m[3] + "\n")
		}
	}
	return b.String()
}

var postfixAuth = regexp.MustCompile(`(?m)^> AUTH (\S+)`)

func (pf *postfix) mechanism(transcript string) string {
	if m := postfixAuth.FindStringSubmatch(transcript); m != nil {
		return m[1]
	}
	return ""
}

func (pf *postfix) pipelined(transcript string) bool {
	return pipelinedTranscript(transcript, "> ", "< ")
}

// postfixReceived is the header Postfix's pickup adds to mail from
// sendmail (RFC 5321 §4.4).
var postfixReceived = regexp.MustCompile(`\AReceived: by postfix\.interop\.test \(Postfix, from userid 0\)\r\n\tid [0-9A-Za-z]+; [^\r\n]+\r\n`)

func (pf *postfix) unwrap(t *testing.T, data []byte) []byte {
	t.Helper()
	m := postfixReceived.FindIndex(data)
	if m == nil {
		t.Fatalf("no Postfix Received header after the relay's:\n%q", data[:min(len(data), 400)])
	}
	return data[m[1]:]
}

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/oauth"
	"github.com/oauthrelay/oauthrelay/internal/passwd"
)

// The Graph rows: the sandbox's Graph endpoint driven directly, and the
// relay delivering through it (transport = "graph"). Each client sends as
// a mailbox of its own, as Graph allows 4 concurrent requests per mailbox;
// the relay serves them with one domain-wide account.
const (
	graphDirectName = "Graph sendMail directly, keep-alive"
	graphRelayName  = "relay, transport = graph, conn. reuse"
	graphAppID      = "bench-graph-app"
	graphAppSecret  = "bench-graph-secret"
	graphDomain     = "graph.bench"
	// graphBody names its recipient in To:, as a Graph client must.
	graphBody = "Subject: benchmark\r\nTo: rcpt@example.net\r\n\r\nA short benchmark message body.\r\n"
)

// graphScenarios measures Graph directly, then the relay in front of it.
func (b *bench) graphScenarios() error {
	b.sb.Tokens.AddClient(graphAppID, graphAppSecret)
	var next atomic.Int64
	mailboxOf := func(st *clientState) string {
		if st.mailbox == "" {
			st.mailbox = fmt.Sprintf("m%03d@%s", next.Add(1), graphDomain)
		}
		return st.mailbox
	}
	direct := graphDirect(b, mailboxOf)
	directRow := measure(graphDirectName, b.clients, b.duration, nil, direct)
	cfgPath, addr := graphRelayConfig(b)
	relay, err := startRelayAt(b.relayBin, cfgPath, addr)
	if err != nil {
		return err
	}
	defer relay.stop()
	viaRelay := relayPathAs(relay.addr, graphBody, mailboxOf)
	relayRow := measure(graphRelayName, b.clients, b.duration, relay, viaRelay)
	relayRow.RelayRatio = relayRow.PerSecond / directRow.PerSecond
	b.rep.Scenarios = append(b.rep.Scenarios, directRow, relayRow)
	return nil
}

// graphDirect posts sendMail with an app-only token, as an application
// that talks to Graph itself would.
func graphDirect(b *bench, mailboxOf func(*clientState) string) sendFn {
	src := oauth.NewSource(oauth.Settings{
		Name:         "graph-direct",
		Flow:         config.FlowClientCredentials,
		TokenURL:     b.sb.Tokens.URL,
		ClientID:     graphAppID,
		ClientSecret: func() (string, error) { return graphAppSecret, nil },
		Scopes:       []string{config.GraphAppOnlyScope},
		HTTPClient:   oauth.NewHTTPClient(oauth.HTTPOptions{RootCAs: b.sb.CA.Pool}),
	})
	tok, err := src.Token(context.Background())
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: b.sb.CA.Pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 64,
		ForceAttemptHTTP2:   true,
	}}
	payload := []byte(base64.StdEncoding.EncodeToString([]byte(graphBody)))
	return func(st *clientState) error {
		u := b.sb.Graph.URL + "/v1.0/users/" + url.PathEscape(mailboxOf(st)) + "/sendMail"
		req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "text/plain")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("sendMail: %s", resp.Status)
		}
		return nil
	}
}

// graphRelayConfig writes a relay configuration whose provider is the
// sandbox's Graph endpoint, with one domain-wide app-only account.
func graphRelayConfig(b *bench) (cfgPath, smtpAddr string) {
	hash, _ := passwd.Hash(passwd.Bcrypt, password, passwd.DefaultBcryptCost)
	addr, tel := freeAddr(), freeAddr()
	text := fmt.Sprintf(`server {
  log_level  = "warn"
  log_format = "json"
}
telemetry { address = %q }
listener "bench" {
  address                = %q
  tls_mode               = "none"
  max_connections_per_ip = 0
}
provider "graph" {
  preset    = "custom"
  token_url = %q
  transport = "graph"
  graph_url = %q
  ca_file   = %q
  scopes    = [%q]
}
account_group "bench" {
  provider      = "graph"
  flow          = "client_credentials"
  client_id     = %q
  client_secret = %q
  account "*@%s" { }
  client "bench" {
    password_hash   = %q
    allowed_senders = ["*@%s"]
  }
}
`, tel, addr, b.sb.Tokens.URL, b.sb.Graph.URL, b.caFile, config.GraphAppOnlyScope, graphAppID, graphAppSecret, graphDomain, hash, graphDomain)
	path := filepath.Join(b.dir, "relay-graph.hcl")
	_ = os.WriteFile(path, []byte(text), 0o600)
	return path, addr
}

// relayPathAs sends msg through the relay with connection reuse, each
// client as its own sender.
func relayPathAs(addr, msg string, senderOf func(*clientState) string) sendFn {
	dial := relayPath(addr).dial
	return func(st *clientState) error {
		if st.relay == nil {
			c, err := dial()
			if err != nil {
				return err
			}
			st.relay = c
		}
		return st.relay.SendMail(senderOf(st), []string{"rcpt@example.net"}, strings.NewReader(msg))
	}
}

package secrets_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/oauthrelay/oauthrelay/internal/config"
	"github.com/oauthrelay/oauthrelay/internal/secrets"
	"github.com/oauthrelay/oauthrelay/internal/testutil"
)

const (
	awsAccessKey = "AKIAOAUTHRELAYTEST01"
	awsSecretKey = "fake-aws-secret-key-for-oauthrelay-tests"
	relayARN     = "arn:aws:iam::123456789012:user/oauthrelay"
)

// fakeSTS answers GetCallerIdentity, as AWS STS would, with the ARN it is
// told, and records the requests Vault forwards to it.
type fakeSTS struct {
	URL string

	mu       sync.Mutex
	arn      string
	requests []*http.Request
	bodies   []string
}

func startFakeSTS(t *testing.T) *fakeSTS {
	t.Helper()
	f := &fakeSTS{arn: relayARN}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, r)
		f.bodies = append(f.bodies, string(body))
		arn := f.arn
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult><Arn>%s</Arn><UserId>AIDAOAUTHRELAYTEST</UserId><Account>123456789012</Account></GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>`, arn)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *fakeSTS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// enableAWSAuth enables Vault's aws auth method, points its STS calls at
// the fake, and creates the IAM role "oauthrelay" bound to relayARN.
// resolve_aws_unique_ids = false keeps Vault from asking AWS IAM about the
// ARN: every request Vault makes goes to the fake on loopback.
func enableAWSAuth(t *testing.T, vs *testutil.VaultServer, sts *fakeSTS) {
	t.Helper()
	if err := vs.Client.Sys().EnableAuthWithOptions("aws", &vault.EnableAuthOptions{Type: "aws"}); err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		path string
		data map[string]any
	}{
		{"auth/aws/config/client", map[string]any{
			"sts_endpoint":               sts.URL,
			"sts_region":                 "eu-west-1",
			"iam_server_id_header_value": "vault.example.com",
			"max_retries":                0,
		}},
		{"auth/aws/role/oauthrelay", map[string]any{
			"auth_type":               "iam",
			"bound_iam_principal_arn": relayARN,
			"resolve_aws_unique_ids":  false,
			"token_policies":          "oauthrelay",
			"token_ttl":               "1h",
		}},
	}
	for _, w := range writes {
		if _, err := vs.Client.Logical().Write(w.path, w.data); err != nil {
			t.Fatalf("vault write %s: %v", w.path, err)
		}
	}
}

// awsEnv gives the AWS SDK static fake credentials and nothing else to
// find: no shared files, no instance metadata service.
func awsEnv(t *testing.T, withCredentials bool) {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{
		"AWS_EC2_METADATA_DISABLED":              "true",
		"AWS_SHARED_CREDENTIALS_FILE":            dir + "/no-credentials",
		"AWS_CONFIG_FILE":                        dir + "/no-config",
		"AWS_ACCESS_KEY_ID":                      "",
		"AWS_SECRET_ACCESS_KEY":                  "",
		"AWS_SESSION_TOKEN":                      "",
		"AWS_PROFILE":                            "",
		"AWS_ROLE_ARN":                           "",
		"AWS_WEB_IDENTITY_TOKEN_FILE":            "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI":     "",
	}
	if withCredentials {
		env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = awsAccessKey, awsSecretKey
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// awsVaultConfig decodes a configuration whose vault block uses auth
// "aws" with the given attributes, as an operator would write it.
func awsVaultConfig(t *testing.T, addr, attrs string) *config.Vault {
	t.Helper()
	path := testutil.WriteFile(t, t.TempDir(), "relay.hcl", fmt.Sprintf(`
vault {
  address       = %q
  poll_interval = "1h"
  auth "aws" {
    %s
  }
}
listener "l" {
  address  = "127.0.0.1:0"
  tls_mode = "none"
}
provider "google" { preset = "google" }
account_group "g" {
  provider      = "google"
  client_id     = "id"
  client_secret = "vault://secret/oauthrelay/app#client_secret"
  account "a@example.com" { refresh_token = "vault://secret/oauthrelay/app#refresh_token" }
}
`, addr, attrs))
	loaded := config.Load(path, config.Overrides{ClientsOptional: true}) // only the vault block matters here
	if loaded.Diagnostics.HasErrors() {
		t.Fatal(loaded.Diagnostics)
	}
	return loaded.Config.Vault
}

// TestVaultAWSIAMLogin logs in with auth "aws" against a real Vault whose
// aws method verifies the signed GetCallerIdentity request through a fake
// STS on loopback, then reads a secret with the token.
func TestVaultAWSIAMLogin(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.PutPolicy("oauthrelay", relayPolicy)
	vs.Put("oauthrelay/app", map[string]any{"client_secret": "aws-flow-secret", "refresh_token": "aws-flow-rt"})
	sts := startFakeSTS(t)
	enableAWSAuth(t, vs, sts)
	awsEnv(t, true)

	cfg := awsVaultConfig(t, vs.Addr, `role = "oauthrelay"
    region       = "eu-west-1"
    header_value = "vault.example.com"`)
	if cfg.Auth.MountPath != "aws" || cfg.Auth.Region != "eu-west-1" || cfg.Auth.HeaderValue != "vault.example.com" {
		t.Fatalf("decoded auth = %+v", cfg.Auth)
	}
	logs := &testutil.LogBuffer{}
	v := newVault(t, cfg, logs)
	ref := vref(t, "vault://secret/oauthrelay/app#client_secret")
	st, err := secrets.Load(context.Background(), []config.SecretRef{ref}, secrets.WithVault(v, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Get(ref); got != "aws-flow-secret" {
		t.Errorf("read %d chars with the aws login's token", len(got))
	}

	// Vault checks the signed request with STS (more than once per
	// login: for the entity alias, then the login itself); each is the
	// relay's GetCallerIdentity, signed for the configured region and
	// server ID.
	if sts.count() == 0 {
		t.Fatal("Vault did not forward the login to STS")
	}
	sts.mu.Lock()
	defer sts.mu.Unlock()
	for i, r := range sts.requests {
		authz := r.Header.Get("Authorization")
		for _, want := range []string{"AWS4-HMAC-SHA256", "Credential=" + awsAccessKey + "/", "/eu-west-1/sts/aws4_request", "x-vault-aws-iam-server-id"} {
			if !strings.Contains(authz, want) {
				t.Errorf("request %d: the Authorization header lacks %q", i, want)
			}
		}
		if got := r.Header.Get("X-Vault-AWS-IAM-Server-ID"); got != "vault.example.com" {
			t.Errorf("request %d: X-Vault-AWS-IAM-Server-ID = %q", i, got)
		}
		if sts.bodies[i] != "Action=GetCallerIdentity&Version=2011-06-15" {
			t.Errorf("request %d: body = %q", i, sts.bodies[i])
		}
	}
	testutil.AssertNoSecrets(t, "logs", logs.String(), []string{awsSecretKey, "aws-flow-secret"})
}

// TestVaultAWSIAMLoginFailures checks the errors an operator meets.
func TestVaultAWSIAMLoginFailures(t *testing.T) {
	vs := testutil.StartVault(t)
	vs.PutPolicy("oauthrelay", relayPolicy)
	sts := startFakeSTS(t)
	enableAWSAuth(t, vs, sts)
	tests := []struct {
		name     string
		attrs    string
		noCreds  bool
		arn      string
		want     string
		reachSTS bool
	}{
		{name: "unknown role", attrs: `role = "nobody"
    header_value = "vault.example.com"`, want: "nobody", reachSTS: true},
		{name: "wrong server ID header", attrs: `role = "oauthrelay"
    header_value = "other.example.com"`, want: "X-Vault-AWS-IAM-Server-ID"},
		{name: "missing server ID header", attrs: `role = "oauthrelay"`, want: "X-Vault-AWS-IAM-Server-ID"},
		{name: "another principal", attrs: `role = "oauthrelay"
    header_value = "vault.example.com"`, arn: "arn:aws:iam::123456789012:user/intruder", want: "does not belong to the role", reachSTS: true},
		{name: "no AWS credentials", attrs: `role = "oauthrelay"`, noCreds: true, want: "credentials"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			awsEnv(t, !tc.noCreds)
			sts.mu.Lock()
			sts.arn = relayARN
			if tc.arn != "" {
				sts.arn = tc.arn
			}
			sts.mu.Unlock()
			before := sts.count()
			v, err := secrets.NewVault(awsVaultConfig(t, vs.Addr, tc.attrs), secrets.ResolveLocal, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = v.Login(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "vault login (aws)") {
				t.Fatalf("login = %v; want an error about %q", err, tc.want)
			}
			if reached := sts.count() > before; reached != tc.reachSTS {
				t.Errorf("request reached STS: %v, want %v", reached, tc.reachSTS)
			}
			testutil.AssertNoSecrets(t, "error", err.Error(), []string{awsSecretKey})
		})
	}
}

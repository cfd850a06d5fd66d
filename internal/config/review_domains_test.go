package config_test

import (
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// crossGroupConfig declares ceo@contoso.com as an account of group
// "user" (its own refresh token) and *@contoso.com in group "app"; the
// client of group "app" names ceo@contoso.com as a sender (clientBody).
func crossGroupConfig(clientBody string) string {
	return listenerOnly + `provider "m365" {
  preset    = "microsoft"
  tenant    = "contoso.onmicrosoft.com"
  transport = "graph"
}
account_group "user" {
  provider  = "m365"
  client_id = "id"
  account "ceo@contoso.com" { refresh_token = "rt" }
  client "ceo-only" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}
account_group "app" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "id"
  client_secret = "s"
  account "*@contoso.com" { }
  client "erp" {
` + clientBody + `
  }
}
`
}

// An address declared as an account of another group is not "an address
// of one of its domain-wide accounts" (README: "Each entry must be an
// account of the same group"; "An address may belong to one group
// only"): naming it in allowed_senders or send_as of a client of the
// domain-wide account's group is a configuration error. The decoder
// accepts both today, because AccountGroup.Account finds the group's
// *@contoso.com for it; the server then maps the sender to the other
// group's account (see TestReviewCrossGroupSender in internal/server).
func TestReviewCrossGroupSenderRejected(t *testing.T) {
	tests := []struct{ name, client, at string }{
		{"allowed_senders", `    password_hash   = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
    allowed_senders = ["ceo@contoso.com"]`, `    allowed_senders =`},
		{"send_as", `    networks        = ["10.20.0.0/24"]
    send_as         = "ceo@contoso.com"`, `    send_as`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := crossGroupConfig(tt.client)
			loaded := loadText(t, text)
			wantDiag(t, loaded.Diagnostics, "not an account of group", text, tt.at, hcl.DiagError)
		})
	}
}

// MaySendAs agrees with the relay's runtime policy: "*@contoso.com"
// covers the mailboxes the domain-wide account opens, not an address
// declared as an account of its own (the relay answers 550 5.7.1 to MAIL
// FROM:<ceo@contoso.com> for such a client). Today MaySendAs says yes, so
// send_as = "ceo@contoso.com" passes the check and the client sends every
// message as ceo's account, which its allowed_senders do not grant at
// MAIL FROM.
func TestReviewMaySendAsExcludesDeclaredAccounts(t *testing.T) {
	loaded := loadText(t, domainConfig)
	if loaded.Diagnostics.HasErrors() {
		t.Fatal(loaded.Diagnostics)
	}
	for _, c := range loaded.Config.Groups[0].Clients {
		if c.Name == "erp" && c.MaySendAs("ceo@contoso.com") {
			t.Errorf(`erp (allowed_senders = ["*@contoso.com"]).MaySendAs("ceo@contoso.com") = true; the relay refuses that sender for it`)
		}
	}
}

# Microsoft 365 through Microsoft Graph (sendMail), for tenants that keep
# SMTP AUTH switched off. The Entra app has the Graph application
# permission Mail.Send with admin consent, restricted by an application
# access policy to the mail-enabled security group of the mailboxes the
# relay may send as (README "Setting up Microsoft 365"). No mailbox needs
# SMTP AUTH. One app-only token serves every mailbox.

listener "apps" {
  address       = "0.0.0.0:587"
  tls_mode      = "starttls"
  tls_cert_file = "/etc/oauthrelay/tls.crt"
  tls_key_file  = "/etc/oauthrelay/tls.key"
}

provider "m365" {
  preset    = "microsoft"
  tenant    = "11111111-2222-3333-4444-555555555555"
  transport = "graph" # scope https://graph.microsoft.com/.default; 4 requests per mailbox
}

account_group "contoso" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "66666666-7777-8888-9999-000000000000"
  client_secret = "file:///etc/oauthrelay/secrets/m365-graph-secret"

  # Every mailbox of contoso.com the access policy allows: each gets its own
  # limits (Microsoft's 30 a minute), circuit and history on first use.
  account "*@contoso.com" {
    max_mailboxes = 500
  }
  # A mailbox with limits of its own.
  account "newsletter@contoso.com" {
    rate_limit_per_minute = 10
  }

  client "erp" {
    password_hash   = "$argon2id$v=19$m=65536,t=3,p=2$CWhY1lSB/Qw6pXo0xm4QRQ$bN/uftTdaZuzZtB2P7gBRwXFVRLQTsxHenx3Lvs7DCo"
    allowed_senders = ["*@contoso.com"]
  }
  client "newsletter-tool" {
    password_hash   = "$argon2id$v=19$m=65536,t=3,p=2$CWhY1lSB/Qw6pXo0xm4QRQ$bN/uftTdaZuzZtB2P7gBRwXFVRLQTsxHenx3Lvs7DCo"
    allowed_senders = ["newsletter@contoso.com"]
  }
}

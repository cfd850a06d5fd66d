# Google Workspace through the Gmail API (messages.send, up to 35 MB) with a
# service account and domain-wide delegation. In the Admin console, delegate
# https://www.googleapis.com/auth/gmail.send to the service account's
# client ID; enable the Gmail API in its project. The relay gets a token per
# mailbox, impersonating it.

listener "submission" {
  address       = "0.0.0.0:465"
  tls_mode      = "implicit"
  tls_cert_file = "/etc/oauthrelay/tls.crt"
  tls_key_file  = "/etc/oauthrelay/tls.key"
}

provider "workspace" {
  preset    = "google"
  transport = "gmail_api"
  scopes    = ["https://www.googleapis.com/auth/gmail.send"]
}

account_group "example" {
  provider            = "workspace"
  flow                = "service_account"
  service_account_key = "file:///etc/oauthrelay/secrets/relay-sa.json"

  # Any mailbox of example.com, each with Gmail's 2,000 a day of its own.
  account "*@example.com" {}

  client "monitoring" {
    password_hash   = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
    allowed_senders = ["alerts@example.com", "noreply@example.com"]
  }
  client "helpdesk" {
    password_hash   = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
    allowed_senders = ["*@example.com"]
  }
}

# Google Workspace with a service account and domain-wide delegation: no
# per-mailbox consent; the service account impersonates each account below.
# In the Admin console, delegate the scope https://mail.google.com/ to the
# service account's client ID.

listener "submission" {
  address       = "0.0.0.0:465"
  tls_mode      = "implicit"
  tls_cert_file = "/etc/oauthrelay/tls.crt"
  tls_key_file  = "/etc/oauthrelay/tls.key"
}

provider "workspace" {
  preset = "google"
}

account_group "notifications" {
  provider            = "workspace"
  flow                = "service_account"
  service_account_key = "file:///etc/oauthrelay/secrets/relay-sa.json" # the JSON key

  account "noreply@example.com" {}
  account "alerts@example.com" {}

  client "monitoring" {
    password_hash   = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
    allowed_senders = ["alerts@example.com"]
  }
}

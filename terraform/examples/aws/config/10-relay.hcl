# Google Workspace / Gmail, delegated access: each mailbox authorised the
# relay's OAuth client once (scope https://mail.google.com/) and the relay
# keeps the resulting refresh token.

server {
  hostname   = "relay.example.com"
  log_format = "json"
}

telemetry {
  address = "127.0.0.1:9090"
}

# Applications on the network submit here with STARTTLS + AUTH PLAIN/LOGIN.
listener "submission" {
  address          = "0.0.0.0:587"
  tls_mode         = "starttls"
  tls_cert_file    = "/etc/oauthrelay/tls.crt"
  tls_key_file     = "/etc/oauthrelay/tls.key"
  max_message_size = "35MB"
  max_recipients   = 100 # Gmail accepts at most 100 recipients per SMTP message
}

provider "workspace" {
  preset = "google" # token_url, smtp.gmail.com:587 STARTTLS, scope https://mail.google.com/
}

account_group "billing" {
  provider      = "workspace"
  flow          = "refresh_token"
  client_id     = "1234567890-abc.apps.googleusercontent.com"
  client_secret = "env://GOOGLE_CLIENT_SECRET"

  account "invoices@example.com" {
    refresh_token = "file:///etc/oauthrelay/secrets/invoices.refresh-token"
  }

  account "receipts@example.com" {
    refresh_token = "file:///etc/oauthrelay/secrets/receipts.refresh-token"
  }

  # A local SMTP AUTH identity; the hash comes from `oauthrelay hash-password`.
  client "billing-app" {
    password_hash   = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
    allowed_senders = ["invoices@example.com", "receipts@example.com"]
  }
}

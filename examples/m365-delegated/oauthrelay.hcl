# Microsoft 365, delegated access: each mailbox signed in once to the relay's
# app registration (scopes SMTP.Send + offline_access). Microsoft rotates
# refresh tokens; the relay always uses the newest one it was given.

listener "submission" {
  address       = "0.0.0.0:587"
  tls_mode      = "starttls"
  tls_cert_file = "/etc/oauthrelay/tls.crt"
  tls_key_file  = "/etc/oauthrelay/tls.key"
}

provider "m365" {
  preset = "microsoft"
  tenant = "contoso.onmicrosoft.com" # or the directory (tenant) ID
}

account_group "helpdesk" {
  provider  = "m365"
  flow      = "refresh_token"
  client_id = "00000000-1111-2222-3333-444444444444"
  # A public client (no secret) is fine for delegated access; set
  # client_secret for a confidential app registration.

  account "helpdesk@contoso.com" {
    refresh_token = "env://HELPDESK_REFRESH_TOKEN"
  }

  client "ticketing" {
    password_hash = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
  }
}

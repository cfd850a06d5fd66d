# Several account groups on both providers, every secret in Vault. Rotate a
# secret with `vault kv put`: the relay picks it up within poll_interval,
# without a restart, and writes back the refresh tokens Microsoft rotates.

server {
  hostname         = "relay.example.com"
  log_format       = "json"
  shutdown_timeout = "30s"
  watch_config     = true # reload when this directory changes (git pull)
}

telemetry {
  address = "0.0.0.0:9090"
}

# The certificate and its key come from Vault too, so no private key sits
# on the instance; a renewed certificate written to Vault is served from the
# next TLS handshake on.
listener "submission" {
  address  = "0.0.0.0:587"
  tls_mode = "starttls"
  tls_cert = "vault://secret/oauthrelay/tls#certificate"
  tls_key  = "vault://secret/oauthrelay/tls#private_key"
}

vault {
  address       = "https://vault.example.com:8200"
  poll_interval = "30s"

  auth "approle" {
    role_id                    = "file:///etc/oauthrelay/role-id"
    secret_id                  = "file:///etc/oauthrelay/secret-id"
    secret_id_response_wrapped = true # delivered by terraform/modules/relay
  }
}

provider "workspace" {
  preset = "google"
}

provider "m365" {
  preset          = "microsoft"
  tenant          = "contoso.onmicrosoft.com"
  max_connections = 3 # Microsoft's per-mailbox limit (the preset's value)
}

account_group "billing" {
  provider      = "workspace"
  client_id     = "1234567890-abc.apps.googleusercontent.com"
  client_secret = "vault://secret/oauthrelay/clients/google#client_secret"

  account "invoices@example.com" {
    refresh_token = "vault://secret/oauthrelay/accounts/invoices#refresh_token"
  }

  client "billing-app" {
    password_hash = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
  }
}

account_group "helpdesk" {
  provider      = "m365"
  client_id     = "00000000-1111-2222-3333-444444444444"
  client_secret = "vault://secret/oauthrelay/clients/m365#client_secret"

  account "helpdesk@contoso.com" {
    refresh_token = "vault://secret/oauthrelay/accounts/helpdesk#refresh_token"
  }

  account "noreply@contoso.com" {
    refresh_token         = "vault://secret/oauthrelay/accounts/noreply#refresh_token"
    rate_limit_per_minute = 20 # below Microsoft's 30, shared with another system
  }

  client "ticketing" {
    password_hash   = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
    allowed_senders = ["helpdesk@contoso.com"]
  }

  client "notifications" {
    password_hash   = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
    allowed_senders = ["noreply@contoso.com"]
  }
}

account_group "scanners" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "55555555-6666-7777-8888-999999999999"
  client_secret = "vault://secret/oauthrelay/clients/m365-app-only#client_secret"
  write_back    = false # nothing to write back: app-only has no refresh token

  account "scanner@contoso.com" {}

  client "printer-fleet" {
    password_hash = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
  }
}

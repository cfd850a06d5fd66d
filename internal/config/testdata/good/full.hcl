# Every block and most attributes, valid.
server {
  hostname         = "relay.example.com"
  log_level        = "debug"
  log_format       = "json"
  shutdown_timeout = "45s"
  retired_session_timeout = "2m"
  received_hide_client = true
  message_memory_limit = "64MiB"
  spill_to_disk = false
  spool_dir = "/var/lib/oauthrelay/spool"
}

telemetry {
  address                     = "127.0.0.1:9090"
  ready_requires_all_accounts = true
}

listener "local" {
  address          = "127.0.0.1:2525"
  tls_mode         = "none"
  max_message_size = 10485760
  max_recipients   = 50
}

listener "lan" {
  address             = "0.0.0.0:2526"
  tls_mode            = "none"
  allow_insecure_auth = true
  max_message_size    = "25MiB"
  delivery            = "queue"
}

store {
  path              = "/var/lib/oauthrelay"
  history_retention = "14d"
  transit {
    mount = "transit"
    key   = "oauthrelay-queue"
  }
}

queue {
  max_lifetime         = "3d"
  retry_schedule       = ["30s", "2m", "10m", "1h"]
  workers              = 8
  max_bounces_per_hour = 20
}

provider "workspace" {
  preset = "google"
}

provider "m365" {
  preset = "microsoft"
  tenant = "contoso.onmicrosoft.com"
}

provider "proxy" {
  preset         = "custom"
  token_url      = "https://login.example.net/oauth2/token"
  smtp_address   = "smtp.example.net:465"
  smtp_tls       = "implicit"
  scopes         = ["mail.send"]
  auth_mechanism = "oauthbearer"
}

account_group "billing" {
  provider              = "workspace"
  client_id             = "1234.apps.googleusercontent.com"
  client_secret         = "env://GOOGLE_CLIENT_SECRET"
  refresh_before_expiry = "2m"

  account "Invoices@Example.com" {
    refresh_token         = "file:///etc/oauthrelay/invoices.rt"
    rate_limit_per_minute = 30
    daily_message_limit   = 2000
  }

  account "receipts@example.com" {
    refresh_token = "vault://secret/oauthrelay/accounts/receipts#refresh_token"
  }

  client "billing-app" {
    password_hash   = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
    allowed_senders = ["invoices@example.com"]
  }

  client "erp" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}

account_group "printers" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "00000000-0000-0000-0000-000000000000"
  client_secret = "env://M365_CLIENT_SECRET"

  account "scanner@contoso.com" {}

  client "printer" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}

account_group "delegated-m365" {
  provider  = "m365"
  client_id = "11111111-1111-1111-1111-111111111111"

  account "alerts@contoso.com" {
    refresh_token = "env://ALERTS_RT"
  }
}

account_group "robots" {
  provider            = "workspace"
  flow                = "service_account"
  service_account_key = "file:///etc/oauthrelay/sa.json"

  account "robot@example.com" {}
}

vault {
  address = "https://vault.example.com:8200"
  auth "approle" {
    role_id   = "file:///etc/oauthrelay/role-id"
    secret_id = "env://VAULT_SECRET_ID"
  }
}

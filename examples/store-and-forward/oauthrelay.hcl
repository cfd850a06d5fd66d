# Store-and-forward for devices that cannot retry: printers and scanners get
# 250 as soon as their message is stored durably, and the relay delivers it
# in the background, retrying for up to max_lifetime before it bounces. The
# applications' listener stays direct: they hear the provider's own answer.

store {
  path              = "/var/lib/oauthrelay" # embedded database, created 0700 by `check` and `run`
  history_retention = "30d"

  # Queued bodies encrypted with Vault's Transit engine, so the database
  # holds no readable mail.
  transit {
    mount = "transit"
    key   = "oauthrelay-queue"
  }
}

queue {
  max_lifetime         = "5d"                             # then pending recipients bounce
  retry_schedule       = ["1m", "5m", "15m", "30m", "1h"] # the last step repeats
  workers              = 64                               # concurrent deliveries (the default)
  max_bounces_per_hour = 100                              # per sender address
  delay_warning        = "4h"                             # a "delayed" notice to senders who asked (DSN NOTIFY=DELAY)
}

listener "printers" {
  address             = "10.0.0.5:2525"
  tls_mode            = "none"
  allow_insecure_auth = true # an isolated printer VLAN whose devices cannot do TLS
  delivery            = "queue"
}

listener "apps" {
  address       = "0.0.0.0:587"
  tls_cert_file = "/etc/oauthrelay/tls.crt"
  tls_key_file  = "/etc/oauthrelay/tls.key"
  # delivery = "direct" (the default): 250 only once Microsoft accepted
}

vault {
  address = "https://vault.example.com:8200"
  auth "approle" {
    role_id   = "file:///etc/oauthrelay/role-id"
    secret_id = "file:///etc/oauthrelay/secret-id"
  }
}

provider "m365" {
  preset = "microsoft"
  tenant = "11111111-2222-3333-4444-555555555555"
}

account_group "devices" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "66666666-7777-8888-9999-000000000000"
  client_secret = "vault://secret/oauthrelay/m365#client_secret"

  account "scanner-floor1@contoso.com" {}
  account "alerts@contoso.com" {}

  client "printer-fleet" {
    password_hash   = "$argon2id$v=19$m=65536,t=3,p=2$CWhY1lSB/Qw6pXo0xm4QRQ$bN/uftTdaZuzZtB2P7gBRwXFVRLQTsxHenx3Lvs7DCo"
    allowed_senders = ["scanner-floor1@contoso.com"]
  }

  client "monitoring" {
    password_hash   = "$argon2id$v=19$m=65536,t=3,p=2$CWhY1lSB/Qw6pXo0xm4QRQ$bN/uftTdaZuzZtB2P7gBRwXFVRLQTsxHenx3Lvs7DCo"
    allowed_senders = ["alerts@contoso.com"]
  }
}

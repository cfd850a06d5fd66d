# The relay configuration that modules/relay's cloud-init writes to
# /etc/oauthrelay on every instance. Secrets come from Vault through the
# AppRole that modules/vault created (role-id and a response-wrapped
# secret-id are written next to this file at boot).

server {
  log_format = "json"
}

telemetry {
  address = "0.0.0.0:9090" # the load balancer's health check reads /health/ready
}

listener "submission" {
  address       = "0.0.0.0:587"
  tls_mode      = "starttls"
  tls_cert_file = "/etc/oauthrelay/tls.crt"
  tls_key_file  = "/etc/oauthrelay/tls.key"
}

vault {
  address = "https://vault.example.com:8200"

  auth "approle" {
    role_id                    = "file:///etc/oauthrelay/role-id"
    secret_id                  = "file:///etc/oauthrelay/secret-id"
    secret_id_response_wrapped = true
  }
}

provider "workspace" {
  preset = "google"
}

account_group "apps" {
  provider      = "workspace"
  client_id     = "1234567890-abc.apps.googleusercontent.com"
  client_secret = "vault://secret/oauthrelay/clients/google#client_secret"

  account "noreply@example.com" {
    refresh_token = "vault://secret/oauthrelay/accounts/noreply#refresh_token"
  }

  client "apps" {
    password_hash = "$2a$12$mIJKtptqjJV60v9nTNY69elfHcOHrknvtbE8jsXC79uQaTxMiLOt6"
  }
}

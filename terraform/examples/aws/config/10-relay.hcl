# The relay configuration that modules/relay's cloud-init writes to
# /etc/oauthrelay on every instance. It holds no secret: the relay logs in
# to Vault with the instance's IAM role (modules/vault's AWS auth role) and
# reads every secret from there, the listener's certificate and key
# included; they rotate without a restart.
#
# No store block here: with database_enabled, modules/relay adds
# 90-store-postgres.hcl, a store { postgres { … } } block for the RDS
# database every instance shares (one queue, one set of limits; each
# instance logs in with its own PostgreSQL user from Vault). Without it the
# instances keep no durable state and relay in direct mode.

server {
  log_format = "json"
}

telemetry {
  address = "0.0.0.0:9090" # the load balancer's health check reads /health/ready
}

listener "submission" {
  address  = "0.0.0.0:587"
  tls_mode = "starttls"
  # Written with: vault kv put -mount=secret oauthrelay/tls cert=@tls.crt key=@tls.key
  tls_cert = "vault://secret/oauthrelay/tls#cert"
  tls_key  = "vault://secret/oauthrelay/tls#key"
}

vault {
  address = "https://vault.example.com:8200"

  auth "aws" {
    role         = "oauthrelay"        # modules/vault role_name
    mount_path   = "aws"               # modules/vault aws_auth_path
    region       = "eu-west-1"         # sign for the regional STS endpoint Vault checks with
    header_value = "vault.example.com" # modules/vault iam_server_id_header_value
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

# Vault for oauthrelay: a KV v2 mount (or an existing one), a policy with
# exactly what the relay needs, the AWS IAM login of the relay instances
# with short-lived tokens, the listener's TLS certificate and key
# (optionally), and an AppRole for installs outside AWS (optionally).

terraform {
  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = ">= 3.20"
    }
  }
}

resource "vault_mount" "kv" {
  count       = var.create_mount ? 1 : 0
  path        = var.kv_mount
  type        = "kv"
  options     = { version = "2" }
  description = "oauthrelay secrets: OAuth client secrets, refresh tokens, the listener's TLS key"
}

locals {
  mount       = var.create_mount ? vault_mount.kv[0].path : var.kv_mount
  aws_enabled = length(var.relay_iam_role_arns) > 0

  # Only with the shared PostgreSQL store (modules/database).
  database_policy = var.database_credentials_path == null ? "" : <<-EOT
    # The shared store: a PostgreSQL user of its own from the database
    # secrets engine, its lease renewed, and revoked when the relay changes
    # to a new user or stops.
    path "${var.database_credentials_path}" {
      capabilities = ["read"]
    }
    path "sys/leases/renew" {
      capabilities = ["update"]
    }
    path "sys/leases/revoke" {
      capabilities = ["update"]
    }
  EOT
}

resource "vault_policy" "relay" {
  name   = var.policy_name
  policy = <<-EOT
    # Read the secrets the configuration references (client secrets, refresh
    # tokens, the listener's TLS certificate and key at tls), and their
    # versions: the relay polls them to pick up rotations.
    path "${local.mount}/data/${var.secrets_path}/*" {
      capabilities = ["read"]
    }
    path "${local.mount}/metadata/${var.secrets_path}/*" {
      capabilities = ["read"]
    }
    # Write back refresh tokens rotated by the provider (check-and-set).
    path "${local.mount}/data/${var.secrets_path}/accounts/*" {
      capabilities = ["read", "update", "create"]
    }
    ${local.database_policy}
  EOT
}

# The listener's certificate and key, read by the relay through
# tls_cert = "vault://<mount>/<secrets_path>/tls#cert" and tls_key = "…#key".
# Only when write_tls_secret is set: the key then also sits in Terraform's
# state. Otherwise write it with `vault kv put` (see README.md).
resource "vault_kv_secret_v2" "tls" {
  count = var.write_tls_secret ? 1 : 0
  mount = local.mount
  name  = "${var.secrets_path}/tls"
  data_json = jsonencode({
    cert = var.tls_cert_pem
    key  = var.tls_key_pem
  })
}

# AWS IAM login: an instance proves its IAM role with a signed
# sts:GetCallerIdentity request; nothing secret is delivered to it.
resource "vault_auth_backend" "aws" {
  count = local.aws_enabled && var.create_aws_backend ? 1 : 0
  type  = "aws"
  path  = var.aws_auth_path
}

resource "vault_aws_auth_backend_client" "relay" {
  count   = local.aws_enabled && var.create_aws_backend ? 1 : 0
  backend = vault_auth_backend.aws[0].path
  # Signed requests must name this Vault (the relay's header_value), so a
  # request made for another Vault cannot be replayed here.
  iam_server_id_header_value = var.iam_server_id_header_value
  sts_region                 = var.sts_region
  sts_endpoint               = var.sts_endpoint
}

resource "vault_aws_auth_backend_role" "relay" {
  count                    = local.aws_enabled ? 1 : 0
  backend                  = var.create_aws_backend ? vault_auth_backend.aws[0].path : var.aws_auth_path
  role                     = var.role_name
  auth_type                = "iam"
  bound_iam_principal_arns = var.relay_iam_role_arns
  token_policies           = [vault_policy.relay.name]
  token_ttl                = var.token_ttl
  token_max_ttl            = var.token_max_ttl
  token_bound_cidrs        = var.token_bound_cidrs

  depends_on = [vault_aws_auth_backend_client.relay]
}

# AppRole, for relays outside AWS: a role ID plus a response-wrapped secret
# ID delivered to each host.
resource "vault_auth_backend" "approle" {
  count = var.approle_enabled && var.create_approle_backend ? 1 : 0
  type  = "approle"
  path  = var.approle_path
}

resource "vault_approle_auth_backend_role" "relay" {
  count              = var.approle_enabled ? 1 : 0
  backend            = var.create_approle_backend ? vault_auth_backend.approle[0].path : var.approle_path
  role_name          = var.role_name
  token_policies     = [vault_policy.relay.name]
  token_ttl          = var.token_ttl
  token_max_ttl      = var.token_max_ttl
  secret_id_ttl      = var.secret_id_ttl
  secret_id_num_uses = var.secret_id_num_uses
  token_bound_cidrs  = var.token_bound_cidrs
}

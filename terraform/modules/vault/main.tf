# Vault for oauthrelay: a KV v2 mount (or an existing one), a policy with
# exactly what the relay needs, and an AppRole whose tokens live briefly.

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
  description = "oauthrelay secrets: OAuth client secrets and refresh tokens"
}

locals {
  mount = var.create_mount ? vault_mount.kv[0].path : var.kv_mount
}

resource "vault_policy" "relay" {
  name   = var.policy_name
  policy = <<-EOT
    # Read the secrets the configuration references, and their versions.
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
  EOT
}

resource "vault_auth_backend" "approle" {
  count = var.create_approle_backend ? 1 : 0
  type  = "approle"
  path  = var.approle_path
}

resource "vault_approle_auth_backend_role" "relay" {
  backend            = var.create_approle_backend ? vault_auth_backend.approle[0].path : var.approle_path
  role_name          = var.role_name
  token_policies     = [vault_policy.relay.name]
  token_ttl          = var.token_ttl
  token_max_ttl      = var.token_max_ttl
  secret_id_ttl      = var.secret_id_ttl
  secret_id_num_uses = var.secret_id_num_uses
  token_bound_cidrs  = var.token_bound_cidrs
}

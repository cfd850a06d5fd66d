output "role_name" {
  description = "Vault role of the relay: `role` of its auth \"aws\" block (and the AppRole's name)."
  value       = var.role_name
}

output "aws_auth_path" {
  description = "Mount of the AWS auth method: `mount_path` of the relay's auth \"aws\" block."
  value       = var.aws_auth_path
}

output "iam_server_id_header_value" {
  description = "`header_value` of the relay's auth \"aws\" block (null: none)."
  value       = var.iam_server_id_header_value
}

output "policy_name" {
  value = vault_policy.relay.name
}

output "kv_mount" {
  value = local.mount
}

output "tls_secret_refs" {
  description = "Secret references for the listener's tls_cert and tls_key."
  value = {
    cert = "vault://${local.mount}/${var.secrets_path}/tls#cert"
    key  = "vault://${local.mount}/${var.secrets_path}/tls#key"
  }
}

output "role_id" {
  description = "AppRole role ID for an auth \"approle\" block (not a secret on its own); null unless approle_enabled."
  value       = one(vault_approle_auth_backend_role.relay[*].role_id)
}

output "secret_id_command" {
  description = "Command that issues a response-wrapped secret ID for a relay outside AWS; null unless approle_enabled."
  value       = var.approle_enabled ? "vault write -wrap-ttl=10m -f auth/${var.approle_path}/role/${var.role_name}/secret-id" : null
}

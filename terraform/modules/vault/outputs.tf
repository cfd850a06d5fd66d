output "role_id" {
  description = "AppRole role ID for the relay's auth \"approle\" block (not a secret on its own)."
  value       = vault_approle_auth_backend_role.relay.role_id
}

output "role_name" {
  value = vault_approle_auth_backend_role.relay.role_name
}

output "policy_name" {
  value = vault_policy.relay.name
}

output "kv_mount" {
  value = local.mount
}

output "secret_id_command" {
  description = "Command that issues a response-wrapped secret ID for a relay instance."
  value       = "vault write -wrap-ttl=10m -f auth/${var.approle_path}/role/${var.role_name}/secret-id"
}

# Nothing secret: the master password never leaves this module (Vault
# rotates it at once), and the relays get their users from Vault.

output "address" {
  description = "Host name of the database (the relays' DSN and Vault's connection verify-full against it)."
  value       = aws_db_instance.relay.address
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.database.id
}

output "vault_credentials_path" {
  description = "Where the relays read their PostgreSQL users: modules/vault's database_credentials_path, the relay's store.postgres.vault_credentials."
  value       = local.credentials_path
}

output "relay_store" {
  description = "What modules/relay's database input needs to write the relay's store { postgres { … } } block."
  value = {
    address          = aws_db_instance.relay.address
    port             = aws_db_instance.relay.port
    database         = aws_db_instance.relay.db_name
    credentials_path = local.credentials_path
    owner_role       = var.owner_role
  }
}

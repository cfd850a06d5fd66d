# Vault's database secrets engine for the relay: Vault logs in as the RDS
# master user and gives every relay instance its own PostgreSQL user, valid
# for credential_ttl, renewable up to credential_max_ttl, dropped when its
# lease ends. The relay runs SET ROLE <owner_role> on each connection, so
# its tables belong to that one stable NOLOGIN role and outlive every user.

locals {
  vault_mount = var.create_vault_mount ? vault_mount.database[0].path : var.vault_mount
  # Read by the relays (store.postgres.vault_credentials), allowed by
  # modules/vault's policy.
  credentials_path = "${local.vault_mount}/creds/${vault_database_secret_backend_role.relay.name}"

  # The bootstrap, so that nobody has to run psql by hand: the owner role
  # exists and may create in the database and in schema public (PostgreSQL
  # 15 and later grant CREATE on public to nobody by default). Vault runs it
  # before each new user; it changes nothing once done. Instances that start
  # together do not race here: Vault creates the users of one connection one
  # at a time.
  bootstrap_statement = <<-EOT
    DO $$
    BEGIN
      IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '${var.owner_role}') THEN
        CREATE ROLE ${var.owner_role} NOLOGIN;
      END IF;
      IF NOT has_database_privilege('${var.owner_role}', current_database(), 'CREATE') THEN
        EXECUTE format('GRANT CONNECT, TEMPORARY, CREATE ON DATABASE %I TO ${var.owner_role}', current_database());
      END IF;
      IF NOT has_schema_privilege('${var.owner_role}', 'public', 'CREATE') THEN
        GRANT USAGE, CREATE ON SCHEMA public TO ${var.owner_role};
      END IF;
    END
    $$
  EOT

  # Run by Vault as the master user, in one transaction, for every new user.
  # Each element is one statement: Vault splits a statement on ";" unless it
  # holds an END (the DO block), and runs the pieces in order.
  creation_statements = [
    local.bootstrap_statement,
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
    "GRANT ${var.owner_role} TO \"{{name}}\"",
    # Ending the user's sessions, REASSIGN OWNED and DROP OWNED at
    # revocation need the privileges of this user; RDS's master user is no
    # superuser and has them only as a member.
    "GRANT \"{{name}}\" TO CURRENT_USER",
  ]

  # Run when a lease ends (expired or revoked), in one transaction. In this
  # order: the user's sessions end (a session whose role is dropped fails
  # with "invalid role OID", and its locks could hold up what follows);
  # whatever the user came to own (a table created before SET ROLE) goes to
  # the owner role, so DROP OWNED only revokes its grants and drops nothing
  # of the relay's; then the role can go.
  revocation_statements = [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'",
    "REASSIGN OWNED BY \"{{name}}\" TO ${var.owner_role}",
    "DROP OWNED BY \"{{name}}\"",
    "DROP ROLE IF EXISTS \"{{name}}\"",
  ]
}

resource "vault_mount" "database" {
  count       = var.create_vault_mount ? 1 : 0
  path        = var.vault_mount
  type        = "database"
  description = "oauthrelay: PostgreSQL users for the relay instances"
}

resource "vault_database_secret_backend_connection" "relay" {
  backend       = local.vault_mount
  name          = var.vault_connection_name
  plugin_name   = "postgresql-database-plugin"
  allowed_roles = [var.vault_role_name]

  postgresql {
    # Templated: Vault fills in the master user's current password, which
    # rotate-root (below) changes.
    connection_url = "postgresql://{{username}}:{{password}}@${aws_db_instance.relay.address}:${aws_db_instance.relay.port}/${aws_db_instance.relay.db_name}?sslmode=verify-full"
    username       = aws_db_instance.relay.username
    password       = random_password.master.result
    # RDS's server certificates chain to AWS's RDS CAs, in no public trust
    # store: verify-full checks them against this bundle (Vault 1.18+).
    tls_ca = var.ca_bundle_pem
    # Vault hashes the new users' passwords itself: no plain password in a
    # CREATE ROLE that a statement log could keep.
    password_authentication = "scram-sha-256"
  }
}

resource "vault_database_secret_backend_role" "relay" {
  backend               = local.vault_mount
  name                  = var.vault_role_name
  db_name               = vault_database_secret_backend_connection.relay.name
  creation_statements   = local.creation_statements
  revocation_statements = local.revocation_statements
  default_ttl           = var.credential_ttl
  max_ttl               = var.credential_max_ttl
}

# Vault changes the master password at once, so only Vault knows it (the
# copy in Terraform's state stops working). Again whenever Terraform sets a
# new one.
resource "vault_generic_endpoint" "rotate_root" {
  path           = "${local.vault_mount}/rotate-root/${vault_database_secret_backend_connection.relay.name}"
  data_json      = jsonencode({})
  disable_read   = true
  disable_delete = true

  lifecycle {
    replace_triggered_by = [random_password.master]
  }
}

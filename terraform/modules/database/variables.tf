variable "name" {
  type        = string
  description = "Identifier of the RDS instance, and name of its subnet group, security group and parameter group prefix."
  default     = "oauthrelay"
}

variable "vpc_id" {
  type        = string
  description = "VPC of subnet_ids and of the relay instances."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets (at least two availability zones) for the database; the relay module's subnet_ids fit."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "relay_security_group_id" {
  type        = string
  description = "Security group of the relay instances (modules/relay's security_group_id): the only clients of the store."
}

variable "vault_security_group_ids" {
  type        = list(string)
  description = "Security groups of the Vault servers, which log in to create and drop the relays' users."

  validation {
    condition     = length(var.vault_security_group_ids) > 0
    error_message = "Vault must reach the database (port 5432) to issue the relays' users: give its security groups."
  }
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL version: a major version (\"16\": the newest minor, upgraded in the maintenance window) or an exact one (\"16.4\")."
  default     = "16"
}

variable "instance_class" {
  type        = string
  description = "RDS instance class."
  default     = "db.t4g.small"
}

variable "allocated_storage" {
  type        = number
  description = "Initial storage in GiB (gp3)."
  default     = 20
}

variable "max_allocated_storage" {
  type        = number
  description = "Storage autoscaling limit in GiB (a queue that backs up during a provider outage grows)."
  default     = 100
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key encrypting storage, backups and snapshots (null: the account's aws/rds key)."
  default     = null
}

variable "multi_az" {
  type        = bool
  description = "A standby in a second availability zone that takes over in about a minute (doubles the cost)."
  default     = false
}

variable "backup_retention_days" {
  type        = number
  description = "Days of automated backups (point-in-time recovery)."
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days is between 1 and 35: the queue holds mail nobody else has."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "RDS refuses to delete the instance (terraform destroy included) until this is false."
  default     = true
}

variable "apply_immediately" {
  type        = bool
  description = "Apply instance changes now instead of in the next maintenance window."
  default     = false
}

variable "ca_cert_identifier" {
  type        = string
  description = "RDS certificate authority of the server certificate; ca_bundle_pem and the relay image's bundle must hold it."
  default     = "rds-ca-rsa2048-g1"
}

variable "ca_bundle_pem" {
  type        = string
  description = "AWS's RDS CA bundle (PEM, public: https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem) that Vault verifies the server with."

  validation {
    condition     = can(regex("-----BEGIN CERTIFICATE-----", var.ca_bundle_pem))
    error_message = "ca_bundle_pem must hold PEM certificates (AWS's RDS CA bundle)."
  }
}

variable "database_name" {
  type        = string
  description = "Database created in the instance for the relay's store."
  default     = "oauthrelay"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name is a plain lower-case PostgreSQL identifier."
  }
}

variable "master_username" {
  type        = string
  description = "RDS master user; Vault logs in as it and rotates its password, so only Vault knows it."
  default     = "vault_root"
}

variable "owner_role" {
  type        = string
  description = "NOLOGIN role that owns the relay's tables; every Vault-issued user is a member and runs SET ROLE to it (the relay's store.postgres.role)."
  default     = "oauthrelay_owner"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.owner_role))
    error_message = "owner_role is a plain lower-case PostgreSQL identifier (it is written into SQL unquoted)."
  }
}

variable "create_vault_mount" {
  type        = bool
  description = "Enable the database secrets engine at vault_mount (false: it is already enabled there)."
  default     = true
}

variable "vault_mount" {
  type        = string
  description = "Path of Vault's database secrets engine."
  default     = "database"
}

variable "vault_connection_name" {
  type        = string
  description = "Name of the engine's connection to this database."
  default     = "oauthrelay"
}

variable "vault_role_name" {
  type        = string
  description = "Engine role the relays read credentials from: <vault_mount>/creds/<vault_role_name>."
  default     = "oauthrelay"
}

variable "credential_ttl" {
  type        = number
  description = "Seconds a relay's PostgreSQL user is valid before it renews its lease."
  default     = 3600
}

variable "credential_max_ttl" {
  type        = number
  description = "Seconds after which a relay's user ends whatever its renewals; the relay changes to a new user before."
  default     = 86400
}

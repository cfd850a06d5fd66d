variable "kv_mount" {
  type        = string
  description = "Path of the KV v2 mount holding the relay's secrets."
  default     = "secret"
}

variable "create_mount" {
  type        = bool
  description = "Create the KV v2 mount (false: use an existing one)."
  default     = false
}

variable "secrets_path" {
  type        = string
  description = "Path under the mount where the relay's secrets live (vault://<mount>/<secrets_path>/...)."
  default     = "oauthrelay"
}

variable "policy_name" {
  type        = string
  description = "Vault policy given to the relay's tokens."
  default     = "oauthrelay"
}

variable "relay_iam_role_arns" {
  type        = list(string)
  description = "IAM roles of the relay instances (modules/relay's iam_role_arn) that may log in through the AWS auth method; empty: no AWS login."
  default     = []
}

variable "create_aws_backend" {
  type        = bool
  description = "Enable and configure the AWS auth method at aws_auth_path (false: it is already there, configured)."
  default     = true
}

variable "aws_auth_path" {
  type        = string
  description = "Mount of the AWS auth method (the relay's auth \"aws\" mount_path)."
  default     = "aws"
}

variable "iam_server_id_header_value" {
  type        = string
  description = "Value the signed login requests must carry in X-Vault-AWS-IAM-Server-ID, usually Vault's host name; the relay's header_value. Null: not required."
  default     = null
}

variable "sts_region" {
  type        = string
  description = "Region of the STS endpoint Vault checks login requests with (null: Vault's default, us-east-1)."
  default     = null
}

variable "sts_endpoint" {
  type        = string
  description = "STS endpoint Vault checks login requests with (null: the region's)."
  default     = null
}

variable "write_tls_secret" {
  type        = bool
  description = "Write tls_cert_pem and tls_key_pem to <kv_mount>/<secrets_path>/tls (the key is then in Terraform's state too)."
  default     = false
}

variable "tls_cert_pem" {
  type        = string
  description = "Certificate chain of the relay's listener (with write_tls_secret)."
  default     = null
}

variable "tls_key_pem" {
  type        = string
  description = "Private key of the relay's listener (with write_tls_secret)."
  default     = null
  sensitive   = true
}

variable "approle_enabled" {
  type        = bool
  description = "Create the AppRole role too, for relays outside AWS."
  default     = false
}

variable "create_approle_backend" {
  type        = bool
  description = "Enable the AppRole auth method (false: it is already enabled at approle_path)."
  default     = false
}

variable "approle_path" {
  type        = string
  description = "Mount of the AppRole auth method (with approle_enabled)."
  default     = "approle"
}

variable "role_name" {
  type        = string
  description = "Name of the relay's role in the AWS auth method (and AppRole)."
  default     = "oauthrelay"
}

variable "token_ttl" {
  type        = number
  description = "TTL of the relay's Vault tokens, in seconds; the relay renews them."
  default     = 900
}

variable "token_max_ttl" {
  type        = number
  description = "Maximum TTL, in seconds; the relay logs in again after it."
  default     = 3600
}

variable "secret_id_ttl" {
  type        = number
  description = "Lifetime of an AppRole secret ID, in seconds (deliver it response-wrapped)."
  default     = 86400
}

variable "secret_id_num_uses" {
  type        = number
  description = "Uses of an AppRole secret ID (0: unlimited until secret_id_ttl)."
  default     = 0
}

variable "token_bound_cidrs" {
  type        = list(string)
  description = "Networks the relay's tokens may be used from (empty: any)."
  default     = []
}

variable "database_credentials_path" {
  type        = string
  description = "Vault path of the relays' PostgreSQL users (modules/database's vault_credentials_path): the policy may read it and renew and revoke its leases. Null: no database, no such rights."
  default     = null
}

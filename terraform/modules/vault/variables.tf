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
  type    = string
  default = "oauthrelay"
}

variable "create_approle_backend" {
  type        = bool
  description = "Enable the AppRole auth method (false: it is already enabled at approle_path)."
  default     = false
}

variable "approle_path" {
  type    = string
  default = "approle"
}

variable "role_name" {
  type    = string
  default = "oauthrelay"
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
  description = "Lifetime of a secret ID, in seconds (deliver it response-wrapped)."
  default     = 86400
}

variable "secret_id_num_uses" {
  type    = number
  default = 0
}

variable "token_bound_cidrs" {
  type        = list(string)
  description = "Networks the relay's tokens may be used from (empty: any)."
  default     = []
}

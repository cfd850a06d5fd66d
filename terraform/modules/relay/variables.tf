variable "name" {
  type    = string
  default = "oauthrelay"
}

variable "ami_id" {
  type        = string
  description = "Image built by packer/oauthrelay.pkr.hcl."
}

variable "instance_count" {
  type        = number
  description = "Relay instances; they are stateless (Vault holds the secrets), so any number works."
  default     = 2
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets for the instances and the load balancer."
}

variable "app_cidrs" {
  type        = list(string)
  description = "Networks of the applications that submit mail (port 587)."
}

variable "monitoring_cidrs" {
  type        = list(string)
  description = "Networks of Prometheus (health_port: /metrics, /health). The load balancer's health checks need nothing here."
  default     = []
}

variable "health_port" {
  type        = number
  description = "Port of the relay's telemetry listener (/health/ready, /metrics): the load balancer's health checks always reach it; monitoring_cidrs may too."
  default     = 9090
}

variable "config_dir" {
  type        = string
  description = "Directory (in git) with the relay's *.hcl configuration files."
}

variable "tls_cert_pem" {
  type        = string
  description = "Certificate chain of the submission listener."
}

variable "tls_key_pem" {
  type        = string
  description = "Private key of the submission listener."
  sensitive   = true
}

variable "vault_role_id" {
  type        = string
  description = "AppRole role ID (output of modules/vault)."
}

variable "vault_wrapped_secret_ids" {
  type        = list(string)
  description = "One response-wrapped secret ID per instance (vault write -wrap-ttl=... -f auth/approle/role/oauthrelay/secret-id)."
  sensitive   = true
}

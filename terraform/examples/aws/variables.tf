variable "vault_address" {
  type = string
}

variable "aws_region" {
  type    = string
  default = "eu-west-1"
}

variable "ami_id" {
  type = string
}

variable "instance_count" {
  type    = number
  default = 2
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "app_cidrs" {
  type = list(string)
}

variable "monitoring_cidrs" {
  type    = list(string)
  default = []
}

variable "vault_iam_server_id" {
  type        = string
  description = "X-Vault-AWS-IAM-Server-ID the relays sign; must equal header_value in config/10-relay.hcl."
  default     = "vault.example.com"
}

variable "database_enabled" {
  type        = bool
  description = "Create the RDS PostgreSQL store the instances share (modules/database); false: each instance as configured in config/."
  default     = false
}

variable "database_multi_az" {
  type        = bool
  description = "A standby database in a second availability zone."
  default     = false
}

variable "vault_security_group_ids" {
  type        = list(string)
  description = "Security groups of the Vault servers, which must reach the database (with database_enabled)."
  default     = []
}

variable "rds_ca_bundle_file" {
  type        = string
  description = "AWS's RDS CA bundle, relative to this directory, for Vault's connection (with database_enabled): curl -o rds-ca-bundle.pem https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
  default     = "rds-ca-bundle.pem"
}

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

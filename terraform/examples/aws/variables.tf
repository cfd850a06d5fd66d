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

variable "tls_cert_file" {
  type = string
}

variable "tls_key_file" {
  type = string
}

variable "vault_wrapped_secret_ids" {
  type      = list(string)
  sensitive = true
}

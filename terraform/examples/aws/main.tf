# Example root module: Vault policy and AppRole for the relay, and two relay
# instances on AWS behind a load balancer.

terraform {
  required_version = ">= 1.5"
}

provider "vault" {
  address = var.vault_address
}

provider "aws" {
  region = var.aws_region
}

module "vault" {
  source       = "../../modules/vault"
  kv_mount     = "secret"
  secrets_path = "oauthrelay"
  role_name    = "oauthrelay"
}

module "relay" {
  source                   = "../../modules/relay"
  ami_id                   = var.ami_id
  instance_count           = var.instance_count
  vpc_id                   = var.vpc_id
  subnet_ids               = var.subnet_ids
  app_cidrs                = var.app_cidrs
  monitoring_cidrs         = var.monitoring_cidrs
  config_dir               = "${path.root}/config"
  tls_cert_pem             = file(var.tls_cert_file)
  tls_key_pem              = file(var.tls_key_file)
  vault_role_id            = module.vault.role_id
  vault_wrapped_secret_ids = var.vault_wrapped_secret_ids
}

output "smtp_endpoint" {
  value = module.relay.smtp_endpoint
}

output "secret_id_command" {
  value = module.vault.secret_id_command
}

# Example root module: the relay's Vault policy and AWS IAM login, and relay
# instances on AWS in an Auto Scaling group behind a load balancer;
# optionally (database_enabled) an RDS PostgreSQL store they share. The
# listener's certificate and key live in Vault (see README.md, "Provisioning
# as code"), not in user data.

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
  source                     = "../../modules/vault"
  kv_mount                   = "secret"
  secrets_path               = "oauthrelay"
  role_name                  = "oauthrelay"
  relay_iam_role_arns        = [module.relay.iam_role_arn]
  iam_server_id_header_value = var.vault_iam_server_id
  sts_region                 = var.aws_region
  sts_endpoint               = "https://sts.${var.aws_region}.amazonaws.com"
  database_credentials_path  = one(module.database[*].vault_credentials_path)
}

module "relay" {
  source           = "../../modules/relay"
  ami_id           = var.ami_id
  instance_count   = var.instance_count
  vpc_id           = var.vpc_id
  subnet_ids       = var.subnet_ids
  app_cidrs        = var.app_cidrs
  monitoring_cidrs = var.monitoring_cidrs
  config_dir       = "${path.root}/config"
  # With the database, the instances share one queue and one set of limits
  # in it (a store { postgres { … } } block is added to config/).
  database = one(module.database[*].relay_store)
}

# Optional: a PostgreSQL store the instances share, and the Vault database
# secrets engine that gives each instance its own user.
module "database" {
  count                    = var.database_enabled ? 1 : 0
  source                   = "../../modules/database"
  vpc_id                   = var.vpc_id
  subnet_ids               = var.subnet_ids
  relay_security_group_id  = module.relay.security_group_id
  vault_security_group_ids = var.vault_security_group_ids
  multi_az                 = var.database_multi_az
  # Read only with the database: without it the file need not exist.
  ca_bundle_pem = var.database_enabled ? file("${path.root}/${var.rds_ca_bundle_file}") : null
}

output "smtp_endpoint" {
  value = module.relay.smtp_endpoint
}

output "tls_secret_refs" {
  description = "What config/10-relay.hcl's listener reads its certificate and key from."
  value       = module.vault.tls_secret_refs
}

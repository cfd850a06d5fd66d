# An RDS PostgreSQL database that several relay instances share (one queue,
# one set of limits), reachable only from the relays and Vault, encrypted,
# TLS only, and the Vault database secrets engine that issues each relay its
# own short-lived PostgreSQL user (vault.tf). See README.md.

terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
    vault = {
      source = "hashicorp/vault"
      # postgresql tls_ca (4.5) and password_authentication (4.6).
      version = ">= 4.6"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5"
    }
  }
}

locals {
  # The relay's connection string names this port; it is not a variable so
  # that the security group, the instance and the DSN cannot disagree.
  port = 5432
  # rds.force_ssl and friends live in a parameter group of the engine's
  # major version: "16.4" and "16" are both family postgres16.
  parameter_family = "postgres${split(".", var.engine_version)[0]}"
}

resource "aws_db_subnet_group" "relay" {
  name        = var.name
  description = "oauthrelay: private subnets of the shared store"
  subnet_ids  = var.subnet_ids
}

# Port 5432 from the relay instances (their store) and from Vault (the
# database secrets engine creates and drops their users), nothing else. No
# egress: the database starts no connection.
resource "aws_security_group" "database" {
  name        = "${var.name}-postgres"
  description = "oauthrelay PostgreSQL: from the relay instances and Vault only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "PostgreSQL from the relay instances and Vault"
    from_port       = local.port
    to_port         = local.port
    protocol        = "tcp"
    security_groups = concat([var.relay_security_group_id], var.vault_security_group_ids)
  }

  # Managed as empty: AWS's default allow-all egress rule, or one added by
  # hand, is removed.
  egress = []
}

resource "aws_db_parameter_group" "relay" {
  name_prefix = "${var.name}-"
  family      = local.parameter_family
  description = "oauthrelay: TLS 1.2+ only, SCRAM passwords"

  # The server refuses connections without TLS, whatever a client asks for.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "ssl_min_protocol_version"
    value = "TLSv1.2"
  }
  parameter {
    name  = "password_encryption"
    value = "scram-sha-256"
  }

  # A new engine major version needs a new group before the old one goes.
  lifecycle {
    create_before_destroy = true
  }
}

# The master password: generated here and handed to RDS and to Vault's
# connection only, never output. Vault rotates it as soon as the connection
# exists (vault.tf), so the copy in Terraform's state is dead from then on.
# Not manage_master_user_password: RDS would rotate its Secrets Manager copy
# on its own schedule, and Vault, which logs in as this user to create and
# drop the relays' users, would be locked out at the first rotation.
resource "random_password" "master" {
  length  = 40
  special = false
}

resource "aws_db_instance" "relay" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  # "16" follows the newest 16.x; AWS applies minor versions in the
  # maintenance window.
  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  instance_class              = var.instance_class
  allocated_storage           = var.allocated_storage
  max_allocated_storage       = var.max_allocated_storage
  storage_type                = "gp3"
  storage_encrypted           = true
  kms_key_id                  = var.kms_key_arn

  db_name  = var.database_name
  username = var.master_username
  password = random_password.master.result
  port     = local.port

  db_subnet_group_name   = aws_db_subnet_group.relay.name
  vpc_security_group_ids = [aws_security_group.database.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.relay.name
  ca_cert_identifier     = var.ca_cert_identifier
  multi_az               = var.multi_az

  backup_retention_period   = var.backup_retention_days
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-final"
  apply_immediately         = var.apply_immediately

  tags = {
    Name = var.name
  }
}

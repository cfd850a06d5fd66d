# Relay instances from the Packer image in an Auto Scaling group behind a
# TCP load balancer (AWS). A new image or configuration rolls out instance
# by instance; instances log in to Vault with their IAM role and, with
# var.database, share a PostgreSQL store.

terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40"
    }
  }
}

locals {
  git_config_files = { for f in fileset(var.config_dir, "*.hcl") : f => file("${var.config_dir}/${f}") }
  # With the database, the store block that points the relays at it: the
  # configuration in git then needs no store of its own.
  store_config_file = var.database == null ? {} : {
    (local.store_file_name) = templatefile("${path.module}/store.hcl.tftpl", {
      address            = var.database.address
      port               = var.database.port
      database           = var.database.database
      credentials_path   = var.database.credentials_path
      owner_role         = var.database.owner_role
      ca_file            = var.database_ca_file
      expected_instances = local.max_instances
    })
  }
  store_file_name = "90-store-postgres.hcl"
  config_files    = merge(local.git_config_files, local.store_config_file)
  # Room for the extra instances a refresh starts before it stops old ones.
  max_instances = ceil(var.instance_count * var.refresh_max_healthy_percentage / 100)
}

# The load balancer's nodes live in these subnets, and its health checks
# come from their addresses.
data "aws_subnet" "lb" {
  for_each = toset(var.subnet_ids)
  id       = each.value
}

resource "aws_security_group" "relay" {
  name        = var.name
  description = "oauthrelay: SMTP submission from applications, metrics from monitoring"
  vpc_id      = var.vpc_id

  ingress {
    description = "SMTP submission"
    from_port   = 587
    to_port     = 587
    protocol    = "tcp"
    cidr_blocks = var.app_cidrs
  }

  # Always open to the load balancer, whoever else may scrape: without it
  # every target is unhealthy and the load balancer sends no mail anywhere.
  ingress {
    description = "Load balancer health checks (/health/ready)"
    from_port   = var.health_port
    to_port     = var.health_port
    protocol    = "tcp"
    cidr_blocks = [for s in data.aws_subnet.lb : s.cidr_block]
  }

  dynamic "ingress" {
    for_each = length(var.monitoring_cidrs) > 0 ? [1] : []
    content {
      description = "Prometheus /metrics and /health"
      from_port   = var.health_port
      to_port     = var.health_port
      protocol    = "tcp"
      cidr_blocks = var.monitoring_cidrs
    }
  }

  egress {
    description = "Providers (SMTP 587, HTTPS token endpoints), Vault and AWS STS"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# The instances' identity for Vault's AWS auth method (auth "aws" in the
# relay's vault block): Vault checks a signed sts:GetCallerIdentity request,
# which needs no permission, so the role has no policy attached.
data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "relay" {
  name               = var.name
  description        = "oauthrelay instances: logs in to Vault (aws auth method, iam)"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_instance_profile" "relay" {
  name = var.name
  role = aws_iam_role.relay.name
}

resource "aws_launch_template" "relay" {
  name                   = var.name
  image_id               = var.ami_id
  instance_type          = var.instance_type
  vpc_security_group_ids = [aws_security_group.relay.id]
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.relay.arn
  }

  # Only the configuration kept in git: no secret is in user data. The
  # relay logs in to Vault with the instance's IAM role and reads every
  # secret, the listener's certificate and key included, from there.
  user_data = base64encode(templatefile("${path.module}/cloud-init.yaml.tftpl", {
    config_files = local.config_files
  }))

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
    # The relay runs on the host, never in a container one hop further.
    http_put_response_hop_limit = 1
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name = var.name
    }
  }

  lifecycle {
    precondition {
      condition     = var.database == null || !contains(keys(local.git_config_files), local.store_file_name)
      error_message = "config_dir has a ${local.store_file_name}, the file this module writes for the database: rename it."
    }
    precondition {
      # Two store blocks do not load; the database's is the one to keep.
      condition     = var.database == null || alltrue([for c in values(local.git_config_files) : !can(regex("(?m)^\\s*store\\s*\\{", c))])
      error_message = "With the database, this module writes the store block: remove the one in config_dir."
    }
  }
}

resource "aws_autoscaling_group" "relay" {
  name                = var.name
  vpc_zone_identifier = var.subnet_ids
  min_size            = var.instance_count
  desired_capacity    = var.instance_count
  max_size            = local.max_instances
  target_group_arns   = [aws_lb_target_group.smtp.arn]
  # The load balancer's health check (/health/ready), not only EC2's: an
  # instance that cannot relay is replaced.
  health_check_type         = "ELB"
  health_check_grace_period = var.health_check_grace_period

  launch_template {
    id      = aws_launch_template.relay.id
    version = aws_launch_template.relay.latest_version
  }

  # A new launch template version (image or configuration) replaces the
  # instances one at a time: a new one is started, must pass the load
  # balancer's health check, then an old one is drained and stopped.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = var.refresh_min_healthy_percentage
      max_healthy_percentage = var.refresh_max_healthy_percentage
      instance_warmup        = var.health_check_grace_period
      auto_rollback          = true
    }
  }
}

resource "aws_lb" "smtp" {
  name               = var.name
  load_balancer_type = "network"
  internal           = true
  subnets            = var.subnet_ids
}

resource "aws_lb_target_group" "smtp" {
  name     = "${var.name}-587"
  port     = 587
  protocol = "TCP"
  vpc_id   = var.vpc_id
  # Sessions of a replaced instance finish first: the relay's shutdown
  # drains for shutdown_timeout (30s by default).
  deregistration_delay = var.deregistration_delay

  health_check {
    protocol            = "HTTP"
    port                = tostring(var.health_port)
    path                = "/health/ready"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "smtp" {
  load_balancer_arn = aws_lb.smtp.arn
  port              = 587
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.smtp.arn
  }
}

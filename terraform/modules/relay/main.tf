# N relay instances from the Packer image behind a TCP load balancer (AWS).

terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

locals {
  config_files = { for f in fileset(var.config_dir, "*.hcl") : f => file("${var.config_dir}/${f}") }
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
    description = "Providers (SMTP 587, HTTPS token endpoints) and Vault"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "relay" {
  count                  = var.instance_count
  ami                    = var.ami_id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_ids[count.index % length(var.subnet_ids)]
  vpc_security_group_ids = [aws_security_group.relay.id]

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    config_files = local.config_files
    tls_cert     = var.tls_cert_pem
    tls_key      = var.tls_key_pem
    role_id      = var.vault_role_id
    secret_id    = var.vault_wrapped_secret_ids[count.index]
  })
  user_data_replace_on_change = true

  metadata_options {
    http_tokens = "required"
  }

  tags = {
    Name = "${var.name}-${count.index}"
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

  health_check {
    protocol = "HTTP"
    port     = tostring(var.health_port)
    path     = "/health/ready"
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

resource "aws_lb_target_group_attachment" "relay" {
  count            = var.instance_count
  target_group_arn = aws_lb_target_group.smtp.arn
  target_id        = aws_instance.relay[count.index].id
  port             = 587
}

variable "name" {
  type        = string
  description = "Name of the load balancer, Auto Scaling group, IAM role and security group."
  default     = "oauthrelay"
}

variable "ami_id" {
  type        = string
  description = "Image built by packer/oauthrelay.pkr.hcl."
}

variable "instance_count" {
  type        = number
  description = "Relay instances (the Auto Scaling group's size); they are stateless (Vault holds the secrets), so any number works."
  default     = 2
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the relays."
  default     = "t3.small"
}

variable "vpc_id" {
  type        = string
  description = "VPC of subnet_ids."
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

variable "health_check_grace_period" {
  type        = number
  description = "Seconds a new instance has to boot and become ready before health checks count (also the refresh's warm-up)."
  default     = 180
}

variable "refresh_min_healthy_percentage" {
  type        = number
  description = "Instance refresh: share of instance_count that stays in service while instances are replaced."
  default     = 100

  validation {
    condition     = var.refresh_min_healthy_percentage >= 0 && var.refresh_min_healthy_percentage <= 100
    error_message = "refresh_min_healthy_percentage is between 0 and 100."
  }
}

variable "refresh_max_healthy_percentage" {
  type        = number
  description = "Instance refresh: capacity allowed during a refresh, in percent of instance_count (above 100: new instances start before old ones stop)."
  default     = 150

  validation {
    condition     = var.refresh_max_healthy_percentage >= 100 && var.refresh_max_healthy_percentage <= 200
    error_message = "refresh_max_healthy_percentage is between 100 and 200 (and at most 100 above the minimum)."
  }
}

variable "deregistration_delay" {
  type        = number
  description = "Seconds the load balancer lets a leaving instance's connections finish (the relay's shutdown_timeout plus a margin)."
  default     = 45
}

variable "database" {
  type = object({
    address          = string
    port             = number
    database         = string
    credentials_path = string
    owner_role       = string
  })
  description = "The shared PostgreSQL store (modules/database's relay_store): the instances get a store { postgres { … } } block for it and keep no state of their own. Null: the configuration in config_dir only."
  default     = null
}

variable "database_ca_file" {
  type        = string
  description = "Path, on the instances, of AWS's RDS CA bundle the relay verifies the database with (installed by the Packer image)."
  default     = "/usr/local/share/oauthrelay/rds-ca-bundle.pem"

  validation {
    # Written into the DSN as it is.
    condition     = can(regex("^/[-_./A-Za-z0-9]+$", var.database_ca_file))
    error_message = "database_ca_file is an absolute path of letters, digits, '-', '_', '.' and '/'."
  }
}

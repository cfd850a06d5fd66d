# Builds a Debian 12 image with oauthrelay installed as a hardened systemd
# service. Build the binary first (`make build`), then:
#
#   packer init .
#   packer build -only='amazon-ebs.debian' -var 'aws_region=eu-west-1' .
#   scripts/build-qemu.sh                     # local image, no cloud account
#
# The image holds the binary, the unit, a dedicated user, an example
# configuration and AWS's RDS CA bundle; the real configuration is written
# at boot (see terraform/modules/relay, cloud-init).

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.1.0"
    }
  }
}

variable "version" {
  type        = string
  description = "oauthrelay version, recorded in the image name and tags."
  default     = "dev"
}

variable "binary" {
  type        = string
  description = "Path of the oauthrelay binary built by `make build`."
  default     = "../bin/oauthrelay"
}

variable "aws_region" {
  type    = string
  default = "eu-west-1"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "ami_name_prefix" {
  type    = string
  default = "oauthrelay"
}

variable "debian_cloud_image_url" {
  type        = string
  description = "Debian 12 generic cloud image for the qemu build."
  default     = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
}

variable "debian_cloud_image_checksum" {
  type        = string
  description = "Checksum of the cloud image, e.g. file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS."
  default     = "file:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS"
}

variable "rds_ca_bundle_url" {
  type        = string
  description = "AWS's RDS CA bundle, installed at /usr/local/share/oauthrelay/rds-ca-bundle.pem for a shared PostgreSQL store on RDS (terraform/modules/relay's database_ca_file); \"\": none."
  default     = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
}

variable "rds_ca_bundle_sha256" {
  type        = string
  description = "SHA-256 the downloaded bundle must have (\"\": not checked); pin it for reproducible images."
  default     = ""
}

variable "build_ssh_key" {
  type        = string
  description = "qemu build only: private key Packer logs in with; cloud-init authorizes <build_ssh_key>.pub. scripts/build-qemu.sh makes a fresh pair per build and deletes it afterwards."
  default     = ""
}

locals {
  image_name = "${var.ami_name_prefix}-${var.version}-${formatdate("YYYYMMDDhhmmss", timestamp())}"
}

source "amazon-ebs" "debian" {
  region        = var.aws_region
  instance_type = var.instance_type
  ami_name      = local.image_name
  ssh_username  = "admin"

  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }

  tags = {
    Name    = local.image_name
    Product = "oauthrelay"
    Version = var.version
  }
}

source "qemu" "debian" {
  iso_url          = var.debian_cloud_image_url
  iso_checksum     = var.debian_cloud_image_checksum
  disk_image       = true
  format           = "qcow2"
  disk_size        = "4G"
  output_directory = "output-qemu"
  vm_name          = "${local.image_name}.qcow2"
  headless         = true
  accelerator      = "kvm"
  memory           = 1024
  cd_label         = "cidata"
  cd_content = {
    "meta-data" = file("cloud-init/meta-data")
    "user-data" = templatefile("cloud-init/user-data.pkrtpl", { ssh_public_key = file("${var.build_ssh_key}.pub") })
  }
  # Key only: the image never has a password to log in with.
  ssh_username         = "debian"
  ssh_private_key_file = var.build_ssh_key
  ssh_timeout          = "10m"
  shutdown_command     = "sudo shutdown -P now"
}

build {
  name    = "oauthrelay"
  sources = ["source.amazon-ebs.debian", "source.qemu.debian"]

  provisioner "file" {
    source      = var.binary
    destination = "/tmp/oauthrelay"
  }

  provisioner "file" {
    source      = "files/oauthrelay.service"
    destination = "/tmp/oauthrelay.service"
  }

  provisioner "file" {
    source      = "../examples/gmail-workspace/oauthrelay.hcl"
    destination = "/tmp/oauthrelay.example.hcl"
  }

  provisioner "shell" {
    script = "scripts/install.sh"
    environment_vars = [
      "RDS_CA_BUNDLE_URL=${var.rds_ca_bundle_url}",
      "RDS_CA_BUNDLE_SHA256=${var.rds_ca_bundle_sha256}",
    ]
    execute_command = "chmod +x {{ .Path }}; sudo {{ .Vars }} {{ .Path }}"
  }

  # Last: nothing may run after the image is sealed.
  provisioner "shell" {
    script           = "scripts/seal.sh"
    environment_vars = ["BUILD_USER=${build.User}"]
    execute_command  = "chmod +x {{ .Path }}; sudo {{ .Vars }} {{ .Path }}"
  }
}

// Package iac holds the tests of the provisioning code under packer/ and
// terraform/: they parse, are formatted, declare what they use, and the
// systemd unit verifies; the modules' expressions are evaluated as
// Terraform would, and the database module's SQL runs in a real Vault
// against a real PostgreSQL. Terraform itself is not needed.
package iac

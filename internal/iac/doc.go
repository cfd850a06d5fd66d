// Package iac holds the tests of the provisioning code under packer/ and
// terraform/: they parse, are formatted, declare what they use, and the
// systemd unit verifies.
package iac

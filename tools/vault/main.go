// Command vault-dev is HashiCorp Vault v1.14.1 built from the Go module
// proxy, for the tests' `vault server -dev`.
//
// gosnowflake, linked into Vault, parses a built-in CA certificate with a
// negative serial number at init; Go 1.23+ rejects those unless told not to.
//
//go:debug x509negativeserial=1
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}

// Package interop proves that real SMTP clients from Debian's packages —
// swaks, msmtp, curl, Python's smtplib and Postfix as a relay client —
// submit mail through the oauthrelay binary, and that the provider (the
// sandbox of internal/devsandbox) receives, behind the relay's own
// Received header, the very bytes each client sent.
//
// The package holds tests only; `make test` runs them with the rest.
// .ci/run installs the clients; a missing client fails its test with the
// name of the Debian package to install.
package interop

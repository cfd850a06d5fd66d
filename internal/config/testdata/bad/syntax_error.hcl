listener "l" {
  address = "127.0.0.1:2525" tls_mode = "none" # want: Missing newline after argument
}

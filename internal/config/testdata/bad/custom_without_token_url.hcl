listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "c" { # want: Missing required argument
  preset       = "custom"
  smtp_address = "smtp.example.com:587"
}

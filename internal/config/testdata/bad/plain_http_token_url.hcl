listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "c" {
  preset       = "custom"
  token_url    = "http://login.example.com/token" # want: Invalid token_url
  smtp_address = "smtp.example.com:587"
}

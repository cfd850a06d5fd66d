listener "l" {
  address  = "127.0.0.1:99999" # want: Invalid address
  tls_mode = "none"
}
server {
  log_level = "loud" # want: Invalid log_level
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider              = "gw"
  client_id             = "id"
  refresh_before_expiry = "soon" # want: Invalid duration
  account "a@example.com" {
    refresh_token = "env://1BAD" # want: Invalid secret reference
  }
}

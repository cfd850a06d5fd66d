# want: No client can authenticate
listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider  = "gw"
  client_id = "id"
  account "a@example.com" {
    refresh_token = "rt"
  }
}

listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider      = "gw"
  flow          = "client_credentials" # want: Flow not offered by provider
  client_id     = "id"
  client_secret = "s"
}

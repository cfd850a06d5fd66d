listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "m365" {
  preset = "microsoft"
  tenant = "contoso.onmicrosoft.com"
}
account_group "g" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "id"
  client_secret = "s"
  account "a@example.com" {
    refresh_token = "rt" # want: Unexpected attribute
  }
}

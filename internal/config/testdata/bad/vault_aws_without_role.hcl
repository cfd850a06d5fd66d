vault {
  address = "https://vault.example.com:8200"
  auth "aws" { # want: Missing required argument
    region = "eu-west-1"
  }
}
listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider      = "gw"
  client_id     = "id"
  client_secret = "vault://secret/oauthrelay/app#client_secret"
  account "a@example.com" {
    refresh_token = "vault://secret/oauthrelay/a#refresh_token"
  }
}

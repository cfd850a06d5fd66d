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
  client_secret = "vault:secret/oauthrelay/app#client_secret" # want: Invalid secret reference
  account "a@example.com" {
    refresh_token = "ENV:REFRESH_TOKEN" # want: Invalid secret reference
  }
  account "b@example.com" {
    refresh_token = "file:/etc/oauthrelay/b.rt" # want: Invalid secret reference
  }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}

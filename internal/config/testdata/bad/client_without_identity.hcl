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
  client_secret = "literal-secret"
  account "a@example.com" {
    refresh_token = "rt"
  }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
  client "printer" { # want: Client cannot be recognised
    allowed_senders = ["a@example.com"]
  }
}

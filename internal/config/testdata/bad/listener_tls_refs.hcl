listener "both" {
  address       = "0.0.0.0:587"
  tls_cert_file = "/etc/oauthrelay/tls.crt"
  tls_key_file  = "/etc/oauthrelay/tls.key"
  tls_cert      = "vault://secret/oauthrelay/tls#cert" # want: Conflicting TLS certificate settings
  tls_key       = "vault://secret/oauthrelay/tls#key"
}
listener "half" { # want: Missing TLS certificate
  address  = "0.0.0.0:465"
  tls_mode = "implicit"
  tls_cert = "file:///etc/oauthrelay/tls.crt"
}
listener "plain" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
  tls_key  = "env://TLS_KEY" # want: Unexpected attribute
}
vault {
  address = "https://vault.example.com:8200"
  auth "token" {
    token = "env://VAULT_TOKEN"
  }
}
provider "gw" {
  preset = "google"
}
account_group "g" {
  provider      = "gw"
  client_id     = "id"
  client_secret = "literal-secret"
  account "a@example.com" {
    refresh_token = "rt"
  }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}

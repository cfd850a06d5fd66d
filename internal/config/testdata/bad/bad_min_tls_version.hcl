listener "l" {
  address         = "127.0.0.1:2525"
  tls_mode        = "none"
  min_tls_version = "1.2" # want: Unexpected attribute
}
listener "tls" {
  address         = "127.0.0.1:2465"
  tls_mode        = "implicit"
  tls_cert_file   = "/etc/oauthrelay/tls.crt"
  tls_key_file    = "/etc/oauthrelay/tls.key"
  min_tls_version = "TLSv1" # want: Invalid min_tls_version
}
listener "number" {
  address         = "127.0.0.1:2587"
  tls_cert_file   = "/etc/oauthrelay/tls.crt"
  tls_key_file    = "/etc/oauthrelay/tls.key"
  min_tls_version = 1.0 # want: Invalid min_tls_version
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
}

listener "printers" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
  delivery = "queue"
}
store {
  path              = "relative/state" # want: Invalid store path
  history_retention = "10m" # want: Invalid value
  transit { # want: Transit without a vault block
    key = "oauthrelay-queue"
  }
}
store { # want: Duplicate store block
  postgres {
    dsn = "env://DSN"
  }
}
queue {
  max_lifetime = "60d" # want: Invalid value
  workers      = 2000 # want: Invalid value
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
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}

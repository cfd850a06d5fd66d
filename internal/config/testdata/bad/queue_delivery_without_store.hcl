listener "printers" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
  delivery = "queue" # want: Queue delivery without a store block
}
queue {
  retry_schedule = ["1m", "30s"] # want: Decreasing retry_schedule
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

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
  account "ceo@example.com" {
    refresh_token = "rt"
  }
  client "scanners" { # want: Network client without senders
    networks = ["10.20.0.0/24"]
  }
  client "copier" {
    networks        = ["10.30.0.7"]
    allowed_senders = ["a@example.com"]
  }
  client "mfp" {
    networks = ["10.40.0.7"]
    send_as  = "a@example.com"
  }
}

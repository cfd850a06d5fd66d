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
  client "printer" {
    networks        = ["10.20.0.0/24", "10.30.0.0/24"]
    allowed_senders = ["a@example.com"]
  }
  client "scanner" {
    networks = ["10.20.0.0/24"] # want: Network of two clients
    send_as  = "a@example.com"
  }
}

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
    networks = [
      "10.20.0.0/24",
      "10.30.0.7/24", # want: Invalid network
      "printer.lan",  # want: Invalid network
      "::ffff:10.40.0.0/120", # want: Invalid network
      "fe80::1%eth0", # want: Invalid network
    ]
    allowed_senders = ["a@example.com"]
  }
  client "scanner" {
    networks = [] # want: Empty networks
    send_as  = "a@example.com"
  }
}

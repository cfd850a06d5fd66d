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
    networks        = ["10.20.0.0/24", "0.0.0.0/1"] # want: Public network too wide
    allowed_senders = ["a@example.com"]
  }
  client "scanner" {
    networks        = ["128.0.0.0/1"] # want: Public network too wide
    allowed_senders = ["a@example.com"]
  }
  client "v6" {
    networks        = ["::/0"] # want: Networks allow everyone
    allowed_senders = ["a@example.com"]
  }
  client "v4" {
    networks        = ["0.0.0.0/0"] # want: Networks allow everyone
    allowed_senders = ["a@example.com"]
  }
}

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
  account "b@example.com" {
    refresh_token = "rt"
  }
  client "printer" {
    networks        = ["10.20.0.0/24"]
    allowed_senders = ["a@example.com"]
    send_as         = "b@example.com" # want: send_as is not an allowed sender
  }
  client "scanner" {
    networks = ["10.30.0.0/24"]
    send_as  = "c@example.com" # want: send_as is not an account of the group
  }
  client "fax" {
    networks = ["10.40.0.0/24"]
    send_as  = "Fax Machine <a@example.com>" # want: Invalid send_as
  }
}
account_group "other" {
  provider      = "gw"
  client_id     = "id2"
  client_secret = "literal-secret"
  account "d@example.com" {
    refresh_token = "rt"
  }
  client "copier" {
    networks = ["10.50.0.0/24"]
    send_as  = "a@example.com" # want: send_as is not an account of the group
  }
}

# The shape of what `oauthrelay dev` (make run) generates: the relay on
# loopback in front of a local provider. `oauthrelay dev` writes this with the
# sandbox's real ports, CA and secrets; use this file as a starting point for
# your own local provider (an SMTP server that speaks XOAUTH2 and an OAuth2
# token endpoint).

server {
  hostname  = "localhost"
  log_level = "debug"
}

telemetry {
  address = "127.0.0.1:8025"
}

listener "dev" {
  address  = "127.0.0.1:2525"
  tls_mode = "none" # plaintext AUTH is accepted from loopback only
}

provider "local" {
  preset       = "custom"
  token_url    = "http://127.0.0.1:8080/token" # plain http is allowed on loopback only
  smtp_address = "127.0.0.1:5870"
  smtp_tls     = "starttls"
  scopes       = ["https://mail.google.com/"]
}

account_group "dev" {
  provider      = "local"
  client_id     = "oauthrelay-dev"
  client_secret = "env://DEV_CLIENT_SECRET"

  account "dev@oauthrelay.test" {
    refresh_token = "env://DEV_REFRESH_TOKEN"
  }

  client "dev" {
    # printf 'dev\n' | oauthrelay hash-password
    password_hash = "$2a$10$i37btyuJ3vcYgTwViDq8BeGYADtFR63INzRcmWuj5v2OfPGGJN0YG"
  }
}

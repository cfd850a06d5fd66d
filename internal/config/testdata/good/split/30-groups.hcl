account_group "g" {
  provider  = "workspace"
  client_id = "id"
  account "a@example.com" {
    refresh_token = "env://A_RT"
  }
  client "app" {
    password_hash = "$2a$04$QCyaEPbsxIfUiGswc9PiQuRymdUR234UTYP5H1nzDnZz30SEcYAE."
  }
}

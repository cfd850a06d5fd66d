# Microsoft 365, app-only access (client credentials): no user signs in. The
# app has the Exchange "SMTP.SendAsApp" permission with admin consent, its
# service principal is registered in Exchange Online, and it was granted
# FullAccess or SendAs on each mailbox below. One token serves the group.

listener "printers" {
  address             = "10.0.0.5:2525"
  tls_mode            = "none"
  allow_insecure_auth = true # an isolated printer VLAN whose devices cannot do TLS
  max_message_size    = "25MB"
}

provider "m365" {
  preset = "microsoft"
  tenant = "11111111-2222-3333-4444-555555555555"
}

account_group "scanners" {
  provider      = "m365"
  flow          = "client_credentials" # scope https://outlook.office365.com/.default
  client_id     = "66666666-7777-8888-9999-000000000000"
  client_secret = "file:///etc/oauthrelay/secrets/m365-app-secret"

  account "scanner-floor1@contoso.com" {}
  account "scanner-floor2@contoso.com" {}

  client "printer-fleet" {
    password_hash = "$argon2id$v=19$m=65536,t=3,p=2$CWhY1lSB/Qw6pXo0xm4QRQ$bN/uftTdaZuzZtB2P7gBRwXFVRLQTsxHenx3Lvs7DCo"
  }
}

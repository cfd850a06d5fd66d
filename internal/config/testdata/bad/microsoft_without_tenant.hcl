listener "l" {
  address  = "127.0.0.1:2525"
  tls_mode = "none"
}
provider "m365" { # want: Missing tenant
  preset = "microsoft"
}

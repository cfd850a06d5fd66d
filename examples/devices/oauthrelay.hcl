# Printers, scanners and multifunction devices of an office, as they are:
# the scanners on their own network send without a password, whatever
# sender they were set up with, and every scan leaves as one mailbox; the
# copiers that can authenticate do, some only with old TLS.
#
# `oauthrelay check` proves on each listener that a host outside every
# client network cannot send without AUTH (it connects from such a
# loopback address and expects 530).

listener "office" {
  address       = "0.0.0.0:587"
  tls_cert_file = "/etc/oauthrelay/tls.crt" # an RSA certificate: many old devices know no ECDSA
  tls_key_file  = "/etc/oauthrelay/tls.key"
  # min_tls_version = "1.2" is the default. For copiers that only speak
  # TLS 1.0 or 1.1, set "1.0" on a listener of their own: it is logged as a
  # warning at every load, and allows suites without forward secrecy.
  min_tls_version = "1.2"
}

provider "m365" {
  preset = "microsoft"
  tenant = "11111111-2222-3333-4444-555555555555"
}

account_group "office" {
  provider      = "m365"
  flow          = "client_credentials"
  client_id     = "66666666-7777-8888-9999-000000000000"
  client_secret = "env://M365_CLIENT_SECRET"

  account "scans@contoso.com" {}
  account "copier-2f@contoso.com" {}

  # Scanners on the scanner VLAN, and one at the branch office: no AUTH
  # (they cannot be given a password, or keep losing it). Every message
  # leaves as scans@contoso.com: the envelope sender and the From address
  # are rewritten, the display name kept ("Scanner 2F <scans@contoso.com>")
  # and the device's own From moved to Reply-To.
  client "scanners" {
    networks = ["10.20.0.0/24", "10.40.7.12"]
    send_as  = "scans@contoso.com"
  }

  # The copier on the second floor, by its address: it may only send as
  # its own mailbox, with the sender it gives. (A network inside another
  # client's would be allowed too, with a warning: the most specific
  # network wins.)
  client "copier-2f" {
    networks        = ["10.30.0.50"]
    allowed_senders = ["copier-2f@contoso.com"]
  }

  # Devices that authenticate (AUTH PLAIN or LOGIN), from anywhere.
  client "mfp" {
    password_hash   = "$argon2id$v=19$m=65536,t=3,p=2$CWhY1lSB/Qw6pXo0xm4QRQ$bN/uftTdaZuzZtB2P7gBRwXFVRLQTsxHenx3Lvs7DCo"
    allowed_senders = ["copier-2f@contoso.com"]
  }
}

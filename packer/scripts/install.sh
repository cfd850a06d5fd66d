#!/bin/sh
# Installs oauthrelay into the image: binary, user, directories, unit.
set -eu

install -o root -g root -m 0755 /tmp/oauthrelay /usr/local/bin/oauthrelay
/usr/local/bin/oauthrelay version

if ! id oauthrelay >/dev/null 2>&1; then
  useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin oauthrelay
fi

# /etc/oauthrelay: configuration (root-owned, readable by the service);
# secrets/: file:// secrets, writable by the service for refresh tokens
# rotated by the provider.
install -d -o root -g oauthrelay -m 0750 /etc/oauthrelay
install -d -o oauthrelay -g oauthrelay -m 0700 /etc/oauthrelay/secrets
# The example is named *.example so the relay (which reads /etc/oauthrelay/*.hcl)
# ignores it; cloud-init writes the real configuration next to it.
install -o root -g oauthrelay -m 0640 /tmp/oauthrelay.example.hcl /etc/oauthrelay/oauthrelay.hcl.example

install -o root -g root -m 0644 /tmp/oauthrelay.service /etc/systemd/system/oauthrelay.service
systemctl daemon-reload
# Enabled, started at boot once cloud-init wrote /etc/oauthrelay/*.hcl.
systemctl enable oauthrelay.service

rm -f /tmp/oauthrelay /tmp/oauthrelay.service /tmp/oauthrelay.example.hcl

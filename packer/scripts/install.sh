#!/bin/sh
# Installs oauthrelay into the image: binary, user, directories, the RDS
# CA bundle, unit.
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

# AWS's RDS certificate authorities, for a store { postgres { … } } on RDS:
# its server certificates chain to no public CA, so the DSN's
# sslmode=verify-full names this bundle (sslrootcert). Public data, fetched
# at build time so that instances need no download at boot.
if [ -n "${RDS_CA_BUNDLE_URL:-}" ]; then
  if ! command -v curl >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends curl ca-certificates
  fi
  curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 \
    --output /tmp/rds-ca-bundle.pem "$RDS_CA_BUNDLE_URL"
  if [ -n "${RDS_CA_BUNDLE_SHA256:-}" ]; then
    echo "$RDS_CA_BUNDLE_SHA256  /tmp/rds-ca-bundle.pem" | sha256sum --check --strict
  fi
  grep -q -e '-----BEGIN CERTIFICATE-----' /tmp/rds-ca-bundle.pem
  install -d -o root -g root -m 0755 /usr/local/share/oauthrelay
  install -o root -g root -m 0644 /tmp/rds-ca-bundle.pem /usr/local/share/oauthrelay/rds-ca-bundle.pem
  rm -f /tmp/rds-ca-bundle.pem
fi

install -o root -g root -m 0644 /tmp/oauthrelay.service /etc/systemd/system/oauthrelay.service
systemctl daemon-reload
# Enabled, started at boot once cloud-init wrote /etc/oauthrelay/*.hcl.
systemctl enable oauthrelay.service

rm -f /tmp/oauthrelay /tmp/oauthrelay.service /tmp/oauthrelay.example.hcl

#!/bin/sh
# Last step of every build: removes what identifies the build machine and
# what the build logged in with, so each instance gets its own identity
# (machine ID, SSH host keys, cloud-init instance) at first boot and nobody
# can log in with anything the build used.
set -eu
build_user=${BUILD_USER:?set BUILD_USER to the account Packer logged in with}
build_home=$(getent passwd "$build_user" | cut -d: -f6)

# No password at all for the build account: '!' locks it and holds no hash.
# Locked, not expired: an expired password makes sshd demand a new one even
# at a key login, which would lock operators out of their instances.
usermod --password '!' "$build_user"

# The build's key (Packer's temporary one on AWS, build-qemu.sh's on qemu).
# cloud-init installs the instance's own keys at first boot.
rm -f "$build_home/.ssh/authorized_keys" /root/.ssh/authorized_keys

# Host keys made at the build's first boot would be shared by every
# instance; cloud-init generates new ones per instance.
rm -f /etc/ssh/ssh_host_*

# Forget the build's cloud-init instance, its logs and the machine ID, so
# cloud-init runs as on a new machine at the next boot.
cloud-init clean --logs --machine-id

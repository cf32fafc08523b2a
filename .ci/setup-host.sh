#!/bin/bash
# Installs and starts what Skerry needs from the host, idempotently:
# Debian packages, a libvirtd running without systemd, and the project's venv.
# Usage: bash .ci/setup-host.sh        (needs root, as on the CI machines)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc
      qemu-system-x86 qemu-utils iproute2 busybox-static cpio)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirtd without systemd: the qemu driver resolves user+group "libvirt-qemu"
# before it reads qemu.conf, and virtlogd must run for serial logs.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt /var/lib/libvirt /run/libvirt
grep -q '^user = "root"' /etc/libvirt/qemu.conf 2>/dev/null || printf 'user = "root"\ngroup = "root"\n' >> /etc/libvirt/qemu.conf
pgrep -x virtlogd >/dev/null || /usr/sbin/virtlogd -d
pgrep -x libvirtd >/dev/null || /usr/sbin/libvirtd -d
for _ in $(seq 1 300); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
virsh -c qemu:///system version >/dev/null || { echo "setup-host: libvirtd did not come up" >&2; exit 1; }

# The project's virtualenv (Python 3.11: python-rados only imports there).
PY=$(command -v python3.11 || command -v python3)
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
  echo "setup-host: Python 3.11 is required, found $("$PY" --version)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -U pip >/dev/null
.venv/bin/pip install -q -e '.[test]' >/dev/null

# The tiny guest image used by the demo and the tests (cached after the first build).
bash images/build-tiny-guest.sh >/dev/null
echo "setup-host: ready (libvirtd up, venv at .venv, guest image in images/build/tiny)"

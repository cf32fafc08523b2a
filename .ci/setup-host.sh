#!/bin/bash
# Installs and starts what Skerry needs from the host, idempotently:
# Debian packages, a libvirtd running without systemd, and the project's venv.
# Usage: bash .ci/setup-host.sh        (needs root, as on the CI machines)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config gcc
      qemu-system-x86 qemu-utils iproute2 kmod busybox-static cpio
      syslinux syslinux-common mtools dosfstools
      ceph-mon ceph-osd python3-rados)
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

# 802.1Q for the VLAN data-path tests: load the module where the kernel ships it
# (this machine's kernel has none: those tests then skip, saying so).
if ! grep -qw 8021q /proc/modules 2>/dev/null; then
  modprobe 8021q 2>/dev/null || echo "setup-host: no 8021q module: VLAN data-path tests will skip"
fi

# 2 MB hugepages for hugepage-backed guests (mem_page_size 2MB): reserve a few (never
# fewer than already reserved) and mount hugetlbfs. libvirt's qemu driver finds the
# mount by itself (qemu.conf hugetlbfs_mount left unset), but only when it starts:
# a libvirtd running from before the mount is restarted (its guests keep running).
HUGEPAGES=${SKERRY_HUGEPAGES:-128}
restart_libvirtd=0
if [ -w /proc/sys/vm/nr_hugepages ]; then
  [ "$(cat /proc/sys/vm/nr_hugepages)" -ge "$HUGEPAGES" ] ||
    echo "$HUGEPAGES" >/proc/sys/vm/nr_hugepages || true
fi
got=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
[ "$got" -ge "$HUGEPAGES" ] || echo "setup-host: only $got of $HUGEPAGES 2 MB hugepages reserved" >&2
if ! grep -qs '^[^ ]* /dev/hugepages hugetlbfs ' /proc/mounts; then
  mkdir -p /dev/hugepages
  if mount -t hugetlbfs hugetlbfs /dev/hugepages; then
    restart_libvirtd=1
  else
    echo "setup-host: cannot mount hugetlbfs on /dev/hugepages; hugepage tests will skip" >&2
  fi
fi
pid=$(cat /run/libvirtd.pid 2>/dev/null || true)
if [ "$restart_libvirtd" = 1 ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  echo "setup-host: restarting libvirtd (pid $pid) so that it finds /dev/hugepages"
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
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
# python-rados is not on PyPI: link Debian's binding (built for Python 3.11) into the venv,
# for the RADOS object backend and its tests against a throwaway Ceph (tests/ceph/).
site_packages=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for so in /usr/lib/python3/dist-packages/rados.cpython-311-*.so; do
  if [ -e "$so" ]; then ln -sf "$so" "$site_packages/"; fi
done
.venv/bin/python -c 'import rados' || { echo "setup-host: python-rados does not import in .venv" >&2; exit 1; }

# The tiny guest image used by the demo and the tests (cached after the first build).
bash images/build-tiny-guest.sh >/dev/null
want=$(sed -n 's/^IMAGE_VERSION=\([0-9]*\).*/\1/p' images/build-tiny-guest.sh)
have=$(cat "${SKERRY_IMAGE_DIR:-images/build}/tiny/VERSION" 2>/dev/null || echo none)
[ "$have" = "$want" ] || { echo "setup-host: guest image is version $have, want $want" >&2; exit 1; }
# The same guest as a bootable disk image (central image store / site cache tests).
bash images/build-tiny-disk.sh >/dev/null
echo "setup-host: ready (libvirtd up, venv at .venv, guest image in images/build/tiny)"

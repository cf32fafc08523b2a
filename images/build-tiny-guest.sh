#!/bin/bash
# Build the "tiny" test guest: a Debian cloud kernel plus a busybox-static initramfs
# with the virtio modules. Everything comes from Debian packages, extracted with
# `apt-get download` + `dpkg-deb -x`; nothing is installed on the host.
#
# Output: $SKERRY_IMAGE_DIR/tiny/{vmlinuz,initrd.gz,VERSION}  (default <repo>/images/build)
# Cached: exits at once when both files exist and VERSION is IMAGE_VERSION below.
# Bump IMAGE_VERSION whenever the guest's behaviour (its /init) changes, so that
# machines holding an older build rebuild it.
set -euo pipefail

IMAGE_VERSION=3  # 2: skerry.ip / skerry.ping network contract; 3: config disk, SKERRY-DISK, skerry.stamp
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE_DIR=${SKERRY_IMAGE_DIR:-$REPO/images/build}
OUT=$IMAGE_DIR/tiny

if [[ -s $OUT/vmlinuz && -s $OUT/initrd.gz && $(cat "$OUT/VERSION" 2>/dev/null) == "$IMAGE_VERSION" ]]; then
  echo "tiny guest version $IMAGE_VERSION already built in $OUT"
  exit 0
fi

mkdir -p "$IMAGE_DIR"
WORK=$(mktemp -d "$IMAGE_DIR/.tiny-build.XXXXXX")
STAGE=""
trap 'rm -rf "$WORK" ${STAGE:+"$STAGE"}' EXIT
cd "$WORK"

KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
if [[ -z $KPKG ]]; then
  apt-get update -qq
  KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
[[ -n $KPKG ]] || { echo "cannot resolve the kernel package of linux-image-cloud-amd64" >&2; exit 1; }

if ! apt-get download -q "$KPKG" busybox-static >/dev/null 2>&1; then
  apt-get update -qq
  apt-get download -q "$KPKG" busybox-static >/dev/null
fi

mkdir -p k bb rd/{bin,proc,sys,dev,tmp,etc,lib/modules}
dpkg-deb -x "$KPKG"_*.deb k
dpkg-deb -x busybox-static_*.deb bb
cp k/boot/vmlinuz-* vmlinuz
cp bb/bin/busybox rd/bin/

KM=$(echo k/lib/modules/*/kernel)
MODS="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev
      drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk
      net/core/failover drivers/net/net_failover drivers/net/virtio_net"
for m in $MODS; do
  # Some kernels build a module in or compress it; take whatever exists.
  for f in "$KM/$m.ko" "$KM/$m.ko.xz"; do
    if [[ -e $f ]]; then
      case $f in
        *.xz) xz -dc "$f" >"rd/lib/modules/$(basename "$m").ko" ;;
        *) cp "$f" rd/lib/modules/ ;;
      esac
    fi
  done
done

cat >rd/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
         failover net_failover virtio_net; do
  [ -e /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko >/dev/null 2>&1
done
# Arguments: the kernel command line, plus the text of a config disk (a virtio disk
# whose first line is SKERRY-CONFIG) when the guest booted from a disk image.
sleep 0.3
ARGS=$(cat /proc/cmdline)
CONFIG_DEV=""
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  d=$(basename "$b")
  if [ "$(head -c 14 "/dev/$d" 2>/dev/null)" = "SKERRY-CONFIG" ]; then
    CONFIG_DEV=$d
    ARGS="$ARGS $(head -c 65536 "/dev/$d" | tr -d '\000' | sed 1d)"
  fi
done
echo "$ARGS" >/tmp/args
NAME=skerry-guest
for arg in $ARGS; do
  case "$arg" in skerry.hostname=*) NAME="${arg#skerry.hostname=}" ;; esac
done
hostname "$NAME"
ip link set lo up

# skerry.ip=MAC,ADDR/PREFIX: give ADDR to the interface with that MAC.
iface_of() {
  for a in /sys/class/net/*/address; do
    [ "$(cat "$a")" = "$1" ] && { basename "$(dirname "$a")"; return 0; }
  done
  return 1
}
for arg in $ARGS; do
  case "$arg" in skerry.ip=*,*) ;; *) continue ;; esac
  spec=${arg#skerry.ip=}; mac=${spec%%,*}; addr=${spec#*,}
  dev=""
  for _ in $(seq 1 50); do dev=$(iface_of "$mac") && break; sleep 0.1; done
  if [ -z "$dev" ]; then
    echo "SKERRY-NET mac=$mac dev=none addr=$addr error=no-such-interface" >/dev/ttyS0
    continue
  fi
  ip link set "$dev" up
  ip addr add "$addr" dev "$dev"
  echo "SKERRY-NET mac=$mac dev=$dev addr=$addr" >/dev/ttyS0
done

echo "SKERRY-GUEST-UP hostname=$NAME" >/dev/ttyS0

# skerry.ping=A[,B...]: ping each target once a second, 120 rounds, one line per ping.
for arg in $ARGS; do
  case "$arg" in skerry.ping=*) TARGETS=$(echo "${arg#skerry.ping=}" | tr , ' ') ;; esac
done
if [ -n "${TARGETS:-}" ]; then
  (
    for _ in $(seq 1 120); do
      for t in $TARGETS; do
        if ping -c1 -W1 "$t" >/dev/null 2>&1; then r=ok; else r=fail; fi
        echo "SKERRY-PING $t $r" >/dev/ttyS0
      done
      sleep 1
    done
  ) &
fi
# Disks: one SKERRY-DISK line per virtio disk at boot and per disk plugged or
# unplugged later. skerry.stamp=TEXT: the guest writes TEXT, repeated over the
# first 64 KiB, onto every disk that appears after boot, then syncs.
for arg in $ARGS; do
  case "$arg" in skerry.stamp=*) STAMP="${arg#skerry.stamp=}" ;; esac
done
disk_line() {
  serial=$(cat "/sys/block/$1/serial" 2>/dev/null)
  sectors=$(cat "/sys/block/$1/size" 2>/dev/null)
  echo "SKERRY-DISK $2 dev=$1 bytes=$((${sectors:-0} * 512)) serial=${serial:-none}" >/dev/ttyS0
}
disks() { for b in /sys/block/vd*; do [ -e "$b" ] && basename "$b"; done | grep -vx "${CONFIG_DEV:-none}"; }
SEEN=$(disks)
for d in $SEEN; do disk_line "$d" present; done
while true; do
  NOW=$(disks)
  for d in $NOW; do
    echo "$SEEN" | grep -qx "$d" && continue
    disk_line "$d" added
    if [ -n "${STAMP:-}" ]; then
      yes "$STAMP" | head -c 65536 >"/dev/$d" 2>/dev/null && sync && \
        echo "SKERRY-DISK stamped dev=$d" >/dev/ttyS0
    fi
  done
  for d in $SEEN; do
    echo "$NOW" | grep -qx "$d" || echo "SKERRY-DISK removed dev=$d" >/dev/ttyS0
  done
  SEEN=$NOW
  sleep 0.5
done
INIT
chmod +x rd/init
(cd rd && find . | ../bb/bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 >../initrd.gz)

# Move into place atomically: stage next to the target, then rename.
STAGE=$(mktemp -d "$IMAGE_DIR/.tiny-stage.XXXXXX")
mv vmlinuz initrd.gz "$STAGE/"
echo "$IMAGE_VERSION" >"$STAGE/VERSION"
chmod 755 "$STAGE"
chmod 644 "$STAGE/vmlinuz" "$STAGE/initrd.gz" "$STAGE/VERSION"
rm -rf "$OUT"
mv -T "$STAGE" "$OUT"
echo "tiny guest version $IMAGE_VERSION built in $OUT ($KPKG)"

#!/bin/bash
# Build "tiny-disk": the tiny guest (build-tiny-guest.sh) as a bootable disk image, for
# the central image store and the site image cache. The disk is a FAT "superfloppy"
# (no partition table) whose boot sector is SYSLINUX: SeaBIOS boots it from the first
# disk, SYSLINUX loads the same vmlinuz + initrd.gz with console=ttyS0. The guest then
# reads its skerry.* arguments from a config disk (see images/README.md).
#
# Needs: mkfs.fat (dosfstools), mtools, syslinux + syslinux-common, qemu-img
# (.ci/setup-host.sh installs them).
# Output: $SKERRY_IMAGE_DIR/tiny-disk/{tiny.raw,tiny.qcow2,VERSION}  (default <repo>/images/build)
# Cached: exits at once when the files exist and VERSION is DISK_VERSION below plus the
# tiny guest's IMAGE_VERSION (so a new guest rebuilds the disk too).
set -euo pipefail

DISK_VERSION=1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE_DIR=${SKERRY_IMAGE_DIR:-$REPO/images/build}
OUT=$IMAGE_DIR/tiny-disk
GUEST_VERSION=$(sed -n 's/^IMAGE_VERSION=\([0-9]*\).*/\1/p' "$REPO/images/build-tiny-guest.sh")
WANT="$DISK_VERSION.$GUEST_VERSION"

if [[ -s $OUT/tiny.raw && -s $OUT/tiny.qcow2 && $(cat "$OUT/VERSION" 2>/dev/null) == "$WANT" ]]; then
  echo "tiny disk version $WANT already built in $OUT"
  exit 0
fi

bash "$REPO/images/build-tiny-guest.sh" >/dev/null
TINY=$IMAGE_DIR/tiny
for tool in mkfs.fat mcopy syslinux qemu-img; do
  command -v "$tool" >/dev/null || { echo "build-tiny-disk: $tool is missing (run .ci/setup-host.sh)" >&2; exit 1; }
done

mkdir -p "$IMAGE_DIR"
WORK=$(mktemp -d "$IMAGE_DIR/.tiny-disk-build.XXXXXX")
STAGE=""
trap 'rm -rf "$WORK" ${STAGE:+"$STAGE"}' EXIT
cd "$WORK"

# 32 MiB holds the ~14 MiB kernel and ~1 MiB initramfs with room to spare.
truncate -s 32M tiny.raw
mkfs.fat -F 16 -n SKERRY tiny.raw >/dev/null
cat >syslinux.cfg <<'CFG'
DEFAULT tiny
PROMPT 0
TIMEOUT 0
SERIAL 0 115200
LABEL tiny
  KERNEL /vmlinuz
  APPEND initrd=/initrd.gz console=ttyS0 quiet
CFG
export MTOOLS_SKIP_CHECK=1
mcopy -i tiny.raw "$TINY/vmlinuz" ::/vmlinuz
mcopy -i tiny.raw "$TINY/initrd.gz" ::/initrd.gz
mcopy -i tiny.raw syslinux.cfg ::/syslinux.cfg
syslinux --install tiny.raw
qemu-img convert -q -f raw -O qcow2 tiny.raw tiny.qcow2

STAGE=$(mktemp -d "$IMAGE_DIR/.tiny-disk-stage.XXXXXX")
mv tiny.raw tiny.qcow2 "$STAGE/"
echo "$WANT" >"$STAGE/VERSION"
chmod 755 "$STAGE"
chmod 644 "$STAGE/tiny.raw" "$STAGE/tiny.qcow2" "$STAGE/VERSION"
rm -rf "$OUT"
mv -T "$STAGE" "$OUT"
echo "tiny disk version $WANT built in $OUT"

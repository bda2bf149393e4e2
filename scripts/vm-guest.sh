#!/usr/bin/env bash
# Builds the test guest of the `vm` kind once, outside the clone, and prints its directory:
#
#   /var/cache/nodeagent-test/vm-guest-<kernel package version>/{vmlinuz,initrd.img}
#
# The kernel is Debian's cloud kernel (LZ4: boots to a shell in about 4-5 s under TCG, where the
# generic XZ kernel takes 11 s), from `apt-get download` + `dpkg-deb -x` (nothing is installed
# on the host). The initramfs is busybox-static, the virtio modules and an /init that:
#   - mounts proc, sys, dev; loads the modules (virtio_ring before virtio);
#   - makes /var/run and /var/log and starts busybox `acpid`, whose power-button action powers
#     the guest off (so QMP `system_powerdown` works);
#   - prints `NODEAGENT-GUEST-READY` on the serial console and runs a shell there, again and
#     again (init must not exit).
# A directory whose kernel version matches is reused as it is. Needs: apt-get, dpkg-deb,
# cpio, gzip, busybox-static (installed if missing).
#
# Usage: scripts/vm-guest.sh [CACHE_ROOT]   (default /var/cache/nodeagent-test)
set -euo pipefail

ROOT=${1:-/var/cache/nodeagent-test}
META=linux-image-cloud-amd64

die() { echo "vm-guest.sh: $*" >&2; exit 1; }

command -v apt-cache >/dev/null || die "needs apt-cache (Debian)"
# The kernel package the meta-package points at (linux-image-6.1.0-NN-cloud-amd64).
PKG=$(apt-cache depends "$META" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -1)
[ -n "$PKG" ] || die "no $META in the apt lists: run apt-get update"
VER=$(apt-cache policy "$PKG" | sed -n 's/^ *Candidate: //p')
[ -n "$VER" ] && [ "$VER" != "(none)" ] || die "no candidate version of $PKG"
# RECIPE changes when this script builds a different initramfs (the cache is then rebuilt).
RECIPE=2
DIR="$ROOT/vm-guest-${PKG#linux-image-}-$VER-r$RECIPE"
if [ -s "$DIR/vmlinuz" ] && [ -s "$DIR/initrd.img" ]; then
    echo "$DIR"
    exit 0
fi

if [ ! -x /bin/busybox ] || ! file -L /bin/busybox 2>/dev/null | grep -q static; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2 \
        || die "apt-get install busybox-static failed"
fi
command -v cpio >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cpio >&2

WORK=$(mktemp -d /tmp/nodeagent-vm-guest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
apt-get download "$PKG=$VER" >&2 \
    || die "apt-get download $PKG=$VER failed"
dpkg-deb -x ./*.deb kernel
KREL=${PKG#linux-image-}
[ -f "kernel/boot/vmlinuz-$KREL" ] || die "no kernel/boot/vmlinuz-$KREL in the package"
MODS="kernel/lib/modules/$KREL/kernel"

mkdir -p initrd/{bin,sbin,dev,proc,sys,tmp,etc/acpi/PWRF,lib/modules,var/run,var/log}
cp /bin/busybox initrd/bin/busybox
for a in $(/bin/busybox --list); do
    [ -e "initrd/bin/$a" ] || ln -s busybox "initrd/bin/$a"
done

# In load order: a module after what it needs. Those built into this kernel are not files.
ORDER="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console
virtio_balloon virtio_blk failover net_failover virtio_net virtio_mem evdev button"
: > initrd/etc/modules
for m in $ORDER; do
    f=$(find "$MODS" -name "$m.ko*" | head -1)
    [ -n "$f" ] || continue
    case "$f" in
        *.ko.xz) xz -dc "$f" > "initrd/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" > "initrd/lib/modules/$m.ko" ;;
        *) cp "$f" "initrd/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> initrd/etc/modules
done
# virtio_ring before virtio (virtio's symbols come from virtio_ring in this kernel).
if grep -qx virtio_ring initrd/etc/modules; then
    { echo virtio_ring; grep -vx virtio_ring initrd/etc/modules; } > initrd/etc/modules.new
    mv initrd/etc/modules.new initrd/etc/modules
fi

cat > initrd/etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
echo "NODEAGENT-GUEST-POWERDOWN" > /dev/console
sync
poweroff -f
EOF
chmod +x initrd/etc/acpi/PWRF/00000080

cat > initrd/init <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /var/run /var/log /tmp
while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done < /etc/modules
acpid -c /etc/acpi
con=ttyS0
[ -e /dev/hvc0 ] && grep -q 'console=hvc0' /proc/cmdline && con=hvc0
echo "NODEAGENT-GUEST-READY" > /dev/$con
while :; do
    setsid sh -c "exec sh </dev/$con >/dev/$con 2>&1"
done
EOF
chmod +x initrd/init

mkdir -p "$DIR.tmp"
cp "kernel/boot/vmlinuz-$KREL" "$DIR.tmp/vmlinuz"
(cd initrd && find . | cpio -o -H newc --quiet | gzip -1) > "$DIR.tmp/initrd.img"
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
echo "$DIR"

#!/usr/bin/env bash
# Builds Pumice's test guest: a 32 MiB bootable raw disk image made from Debian
# packages only (nothing else can be downloaded here), with no loop devices and
# no mounts, so it works unprivileged-ish, in containers and in CI.
#
#   scripts/build-test-guest.sh OUT.raw
#
# Contents: one bootable FAT16 partition at 1 MiB holding syslinux, the Debian
# kernel (package named by `apt-cache depends linux-image-amd64`, fetched with
# `apt-get download`) and a busybox initramfs whose /init
#   - prints PUMICE-GUEST-BOOTED on ttyS0 as soon as it runs,
#   - loads the virtio modules (the Debian kernel has virtio_blk as a module)
#     and evdev + button for the ACPI power button, starts busybox acpid,
#     prints PUMICE-GUEST-READY,
#   - every second scans /sys/block/vd*: each data disk (a disk with no
#     partition and no MBR boot signature: the boot disk has both) newly seen
#     gets its counter record `PUMICE-MARK <n>` (first 512-byte sector; absent
#     = 0) rewritten as n+1 with fsync, read back bypassing the page cache, and
#     the guest prints `PUMICE-DISK serial=<virtio serial> counter=<n+1>`
#     (`PUMICE-DISK-ERROR serial=... reason=...` when that fails). A disk that
#     disappears prints `PUMICE-DISK-GONE serial=...` and is counted again when
#     it comes back.
#   - a data disk whose record is `PUMICE-TICK <n>` is a ticker instead: every
#     100 ms n+1 is written with fsync and `PUMICE-TICK serial=<S> n=<n+1>`
#     printed once acknowledged (the counter a live migration must not break);
#   - prints `PUMICE-GUEST-DISK name=<sdX|vdX> serial=<S> bus=<scsi|virtio>
#     driver=<sd|virtio_blk> discard_max_bytes=<N>` for every disk it sees
#     (hw_disk_bus: virtio-scsi disks are sd* under a SCSI host, counted like
#     vd* data disks);
#   - answers on the org.qemu.guest_agent.0 virtio-serial port (when present)
#     as a stand-in guest agent for the host side's protocol: guest-sync,
#     guest-sync-delimited, guest-ping, guest-fsfreeze-freeze / -thaw (sync,
#     print PUMICE-GUEST-FSFREEZE / PUMICE-GUEST-FSTHAW) and an error for the
#     rest; prints PUMICE-GUEST-AGENT port=<vportNpM> when it starts;
#   - on ACPI power-off prints PUMICE-GUEST-POWEROFF, syncs and powers off.
# Measured here under TCG (-machine pc -accel tcg -m 256): qemu start to
# PUMICE-GUEST-BOOTED in about 5 s (see test/e2e/qemu-driver.test.ts output).
#
# Host tools (scripts/install-deps.sh): dosfstools mtools fdisk cpio
# busybox-static syslinux syslinux-common, plus apt-get/dpkg-deb.
set -euo pipefail

out=${1:?usage: build-test-guest.sh OUT.raw}
fail() { echo "build-test-guest: $*" >&2; exit 1; }

need() { # need CMD PACKAGE
  command -v "$1" >/dev/null 2>&1 || fail "$1 not found: apt-get install $2 (or run scripts/install-deps.sh)"
}
need sfdisk fdisk
need mkfs.fat dosfstools
need mcopy mtools
need syslinux syslinux
need cpio cpio
need dpkg-deb dpkg
need apt-get apt
busybox=/usr/bin/busybox
[ -x "$busybox" ] || fail "$busybox not found: apt-get install busybox-static"
case "$(ldd "$busybox" 2>&1 || true)" in *'not a dynamic'*) ;; *)
  fail "$busybox is not a static busybox: apt-get install busybox-static" ;;
esac
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || fail "$mbr not found: apt-get install syslinux-common"

work=$(mktemp -d "${TMPDIR:-/tmp}/pumice-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# ---------------------------------------------------------------- kernel
kernel_package() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
kpkg=$(kernel_package || true)
if [ -z "$kpkg" ]; then
  # A fresh machine has no package lists yet.
  [ "$(id -u)" = 0 ] || fail "apt-cache knows no linux-image-amd64: run apt-get update as root"
  apt-get update -qq
  kpkg=$(kernel_package || true)
  [ -n "$kpkg" ] || fail "apt-cache depends linux-image-amd64 names no kernel package (check /etc/apt/sources.list)"
fi
if ! apt-get download -qq "$kpkg" >download.log 2>&1; then
  # Lists older than the archive: the pinned version is gone. Refresh once.
  [ "$(id -u)" = 0 ] || fail "apt-get download $kpkg failed: $(tail -3 download.log)"
  apt-get update -qq
  kpkg=$(kernel_package)
  apt-get download -qq "$kpkg" >download.log 2>&1 || fail "apt-get download $kpkg failed: $(tail -3 download.log)"
fi
dpkg-deb -x "$kpkg"_*.deb kernel
kver=${kpkg#linux-image-}
vmlinuz=kernel/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || fail "no $vmlinuz in $kpkg"
moddir=kernel/lib/modules/$kver/kernel

# ---------------------------------------------------------------- initramfs
mkdir -p initramfs/{bin,sbin,etc/acpi/PWRF,proc,sys,dev,tmp,var/log,lib/modules}
cp "$busybox" initramfs/bin/busybox
# Load order matters: each module's dependencies first.
modules=(
  drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/block/virtio_blk
  drivers/input/evdev drivers/acpi/button
  drivers/scsi/scsi_common drivers/scsi/scsi_mod crypto/crct10dif_common crypto/crct10dif_generic
  lib/crc-t10dif lib/crc64 crypto/crc64_rocksoft_generic lib/crc64-rocksoft block/t10-pi
  drivers/scsi/sd_mod drivers/scsi/virtio_scsi drivers/char/virtio_console
)
for m in "${modules[@]}"; do
  src=$(ls "$moddir/$m".ko* 2>/dev/null | head -1)
  [ -n "$src" ] || fail "module $m not in $kpkg"
  case "$src" in
    *.ko) cp "$src" initramfs/lib/modules/ ;;
    *.ko.xz) xz -dc "$src" >"initramfs/lib/modules/$(basename "$m").ko" ;;
    *.ko.zst) zstd -qdc "$src" >"initramfs/lib/modules/$(basename "$m").ko" ;;
    *) fail "unknown module compression: $src" ;;
  esac
done
printf '%s\n' "${modules[@]##*/}" >initramfs/lib/modules/order

cat >initramfs/init <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
echo PUMICE-GUEST-BOOTED >/dev/ttyS0
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
exec </dev/null >/dev/ttyS0 2>&1
for m in $(cat /lib/modules/order); do
  insmod /lib/modules/$m.ko || echo "PUMICE-GUEST-ERROR insmod $m"
done
# busybox acpid exits unless /var/log exists; it runs /etc/acpi/PWRF/00000080
# for the power button (KEY_POWER on /dev/input/event*).
sleep 0.2
acpid -c /etc/acpi -l /var/log/acpid.log
echo PUMICE-GUEST-READY

# A stand-in for qemu-guest-agent (which needs glib and a real root): enough of
# its line protocol for the host's sync / ping / fsfreeze. Reads return EOF
# while no host client is connected, so the port is reopened in a loop.
agent_port() {
  for p in /sys/class/virtio-ports/vport*; do
    [ "$(cat $p/name 2>/dev/null)" = org.qemu.guest_agent.0 ] && { echo ${p##*/}; return; }
  done
}
agent() { # agent PORT
  echo "PUMICE-GUEST-AGENT port=$1"
  while true; do
    exec 3<>/dev/$1
    while read -r line <&3; do
      id=$(echo "$line" | sed -n 's/.*"id": *\([0-9]*\).*/\1/p')
      case "$line" in
        *guest-sync-delimited*) printf '\377{"return": %s}\n' "$id" >&3 ;;
        *guest-sync*) printf '{"return": %s}\n' "$id" >&3 ;;
        *guest-ping*) printf '{"return": {}}\n' >&3 ;;
        *guest-fsfreeze-freeze*) sync; echo PUMICE-GUEST-FSFREEZE; printf '{"return": 1}\n' >&3 ;;
        *guest-fsfreeze-thaw*) echo PUMICE-GUEST-FSTHAW; printf '{"return": 1}\n' >&3 ;;
        *) printf '{"error": {"class": "CommandNotFound", "desc": "not in the test guest agent"}}\n' >&3 ;;
      esac
    done
    exec 3<&-
    sleep 0.2
  done
}
port=$(agent_port)
[ -n "$port" ] && agent $port &

# A data disk has no partition and no MBR boot signature; the boot disk has both.
is_data_disk() {
  ls -d /sys/block/$1/$1[0-9]* >/dev/null 2>&1 && return 1
  sig=$(dd if=/dev/$1 bs=512 count=1 2>/dev/null | od -A n -t x1 -j 510 -N 2 | tr -d ' \n')
  [ "$sig" != 55aa ]
}

# A ticker disk (record "PUMICE-TICK <n>"): every 100 ms the record is read
# bypassing the page cache, n+1 written with fsync, and only then
# `PUMICE-TICK serial=S n=<n+1>` printed (an acknowledged write), while the
# disk is there. A lost write or a stale read shows as a repeated or smaller n.
tick_disk() { # tick_disk NAME SERIAL
  while [ -e /sys/block/$1 ]; do
    rec=$(dd if=/dev/$1 bs=512 count=1 iflag=direct 2>/dev/null | tr -d '\000' | head -n 1)
    case "$rec" in
      "PUMICE-TICK "*) n=${rec#PUMICE-TICK } ;;
      *) echo "PUMICE-TICK-ERROR serial=$2 reason=record:$rec"; sleep 1; continue ;;
    esac
    next=$((n + 1))
    printf 'PUMICE-TICK %d\n' $next >/tmp/tick.$1
    if dd if=/tmp/tick.$1 of=/dev/$1 bs=512 count=1 conv=sync,fsync 2>/dev/null; then
      echo "PUMICE-TICK serial=$2 n=$next"
    else
      echo "PUMICE-TICK-ERROR serial=$2 reason=write"
    fi
    sleep 0.1
  done
}

# Counter record in the first sector: "PUMICE-MARK <n>\n", NUL padded.
touch_disk() { # touch_disk NAME SERIAL
  rec=$(dd if=/dev/$1 bs=512 count=1 iflag=direct 2>/dev/null | tr -d '\000' | head -n 1)
  case "$rec" in "PUMICE-TICK "*) tick_disk $1 "$2" & return ;; esac
  n=0
  case "$rec" in
    "PUMICE-MARK "*) n=${rec#PUMICE-MARK }; case "$n" in ''|*[!0-9]*) n=0 ;; esac ;;
  esac
  next=$((n + 1))
  printf 'PUMICE-MARK %d\n' $next >/tmp/rec
  if ! dd if=/tmp/rec of=/dev/$1 bs=512 count=1 conv=sync,fsync 2>/tmp/dd.err; then
    echo "PUMICE-DISK-ERROR serial=$2 reason=write:$(tr '\n' ' ' </tmp/dd.err)"; return
  fi
  back=$(dd if=/dev/$1 bs=512 count=1 iflag=direct 2>/dev/null | tr -d '\000' | head -n 1)
  if [ "$back" != "PUMICE-MARK $next" ]; then
    echo "PUMICE-DISK-ERROR serial=$2 reason=readback:$back"; return
  fi
  echo "PUMICE-DISK serial=$2 counter=$next"
}

seen=" "
while true; do
  now=" "
  for path in /sys/block/vd* /sys/block/sd*; do
    [ -e "$path" ] || continue
    name=${path##*/}
    # Key on name, serial and the sysfs node: an unplugged and replugged disk is new.
    # A SCSI disk's serial is VPD page 0x80 after its 4-byte header.
    case $name in
      sd*) serial=$(tail -c +5 $path/device/vpd_pg80 2>/dev/null | tr -d '\000 ') ;;
      *) serial=$(cat $path/serial 2>/dev/null) ;;
    esac
    node=$(stat -L -c %i $path 2>/dev/null)
    key="$name:$serial:$node"
    now="$now$key "
    case "$seen" in *" $key "*) continue ;; esac
    case "$(readlink -f $path/device)" in */target*) bus=scsi ;; */virtio*) bus=virtio ;; *) bus=other ;; esac
    drv=$(readlink -f $path/device/driver); drv=${drv##*/}
    echo "PUMICE-GUEST-DISK name=$name serial=$serial bus=$bus driver=$drv discard_max_bytes=$(cat $path/queue/discard_max_bytes 2>/dev/null)"
    if is_data_disk $name; then touch_disk $name "$serial"; fi
  done
  for key in $seen; do
    case "$now" in *" $key "*) ;; *) s=${key#*:}; echo "PUMICE-DISK-GONE serial=${s%:*}" ;; esac
  done
  seen=$now
  sleep 1
done
EOF
cat >initramfs/etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
echo PUMICE-GUEST-POWEROFF >/dev/ttyS0
sync
poweroff -f
EOF
chmod 0755 initramfs/init initramfs/etc/acpi/PWRF/00000080
(cd initramfs && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >initrd.gz

# ---------------------------------------------------------------- disk
cat >syslinux.cfg <<'EOF'
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0,115200 quiet loglevel=3 panic=5
EOF
disk=disk.raw
truncate -s 32M "$disk"
printf 'label: dos\nstart=2048, type=6, bootable\n' | sfdisk -q "$disk" >/dev/null
# 32 MiB - 1 MiB = 31744 KiB of file system, at sector 2048.
mkfs.fat -F 16 -n PUMICEGUEST --offset 2048 -h 2048 "$disk" 31744 >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$disk@@1M" "$vmlinuz" ::vmlinuz
mcopy -i "$disk@@1M" initrd.gz ::initrd.gz
mcopy -i "$disk@@1M" syslinux.cfg ::syslinux.cfg
syslinux --offset 1048576 --install "$disk"
dd if="$mbr" of="$disk" bs=440 count=1 conv=notrunc status=none

cd - >/dev/null
tmp_out="$out.tmp.$$"
cp --sparse=always "$work/$disk" "$tmp_out"
mv -f "$tmp_out" "$out"
echo "build-test-guest: $out ($kpkg, $(du -k "$out" | cut -f1) KiB allocated)"

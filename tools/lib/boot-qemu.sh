#!/bin/bash
# Boot a kernel + initramfs in qemu-system-x86_64 under TCG with a hard time limit; the serial
# console goes to LOG. QEMU is always gone when this returns: `timeout` kills it (KILL after
# a grace period) and exits 124 on a timeout.
#
#   boot-qemu.sh LOG TIMEOUT_S KERNEL INITRD "CMDLINE" [DISK_IMAGE...]
set -euo pipefail

log=${1:?usage: boot-qemu.sh LOG TIMEOUT_S KERNEL INITRD CMDLINE [DISK...]}
limit=$2 kernel=$3 initrd=$4 cmdline=$5
shift 5
drives=()
for disk in "$@"; do
    drives+=(-drive "file=$disk,format=raw,if=virtio,readonly=on")
done
set +e
timeout --kill-after=5 "$limit" qemu-system-x86_64 \
    -accel tcg -m "${BOOT_MEM:-768}" -smp 1 \
    -nographic -no-reboot -nodefaults -serial stdio -monitor none \
    -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 loglevel=4 $cmdline" \
    "${drives[@]}" </dev/null >"$log" 2>&1
rc=$?
set -e
exit $rc

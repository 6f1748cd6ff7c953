#!/bin/bash
# Make the boot test's root filesystem: a static busybox, a few test files of varied sizes
# and the guest init (boot-guest-init). With SRC, copy that tree (e.g. a debootstrap rootfs)
# and add the test files and init to it.
#
#   boot-rootfs.sh DIR [SRC]      DIR/etc/boot-test/files lists the files to checksum
set -euo pipefail

dir=${1:?usage: boot-rootfs.sh DIR [SRC]}
src=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX:-/bin/busybox}

rm -rf "$dir"
mkdir -p "$dir"
if [[ -n $src ]]; then
    cp -a "$src/." "$dir/"
else
    mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,run,tmp,root}
    cp "$busybox" "$dir/bin/busybox"
    for applet in $("$busybox" --list); do
        [[ $applet == busybox ]] || ln -sf busybox "$dir/bin/$applet"
    done
    ln -sf ../etc/boot-test/init "$dir/sbin/init"
fi
mkdir -p "$dir"/{proc,sys,dev,run,tmp} "$dir/etc/boot-test" "$dir/data/small"
cp "$busybox" "$dir/etc/boot-test/busybox"
install -m 0755 "$here/boot-guest-init" "$dir/etc/boot-test/init"

# Test data: incompressible, compressible, many small files, an empty file, a symlink.
head -c 3145728 /dev/urandom >"$dir/data/random.bin"
seq 1 300000 >"$dir/data/numbers.txt"
for i in $(seq 1 64); do
    head -c $((i * 97)) /dev/urandom >"$dir/data/small/f$i"
done
: >"$dir/data/empty"
ln -s numbers.txt "$dir/data/link"
(cd "$dir" && find data -type f | LC_ALL=C sort) >"$dir/etc/boot-test/files"
echo etc/boot-test/busybox >>"$dir/etc/boot-test/files"

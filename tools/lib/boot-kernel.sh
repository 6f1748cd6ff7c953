#!/bin/bash
# Fetch a Debian kernel (vmlinuz + modules) into a cache dir without touching the host's apt
# configuration: a private apt state/cache/sources under the cache dir, `apt-get download`,
# `dpkg-deb -x`.
#
#   boot-kernel.sh SUITE CACHE_DIR      prints the extracted kernel's root dir (…/SUITE/root),
#                                       with boot/vmlinuz-RELEASE and lib/modules/RELEASE
#
# SUITE is `bookworm` (Linux 6.1) or `bookworm-backports` (Linux 6.12). The result is reused
# while it exists; delete CACHE_DIR/SUITE to refresh.
set -euo pipefail
# shellcheck source=private-apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/private-apt.sh"

suite=${1:?usage: boot-kernel.sh SUITE CACHE_DIR}
cache=$(realpath -m "${2:?usage: boot-kernel.sh SUITE CACHE_DIR}")

dir=$cache/$suite
root=$dir/root
if [[ -f $dir/ok ]]; then
    echo "$root"
    exit 0
fi

private_apt "$dir" "$suite"

# linux-image-amd64 is a metapackage; its first dependency is the real kernel package.
pkg=$(apt-cache "${apt_opts[@]}" depends "linux-image-amd64/$suite" 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[[ -n $pkg ]] || { echo "boot-kernel: no linux-image-amd64 in $suite" >&2; exit 1; }
echo "boot-kernel: $suite -> $pkg" >&2

private_apt_extract "$dir" "$root" "$pkg/$suite"
ls "$root"/boot/vmlinuz-* >/dev/null
# The package ships no modules.dep (its postinst runs depmod); `chunkfs initramfs` needs it.
command -v depmod >/dev/null || PATH=$PATH:/sbin:/usr/sbin
command -v depmod >/dev/null || { echo "boot-kernel: depmod missing (apt-get install kmod)" >&2; exit 1; }
release=$(basename "$root"/lib/modules/*)
depmod -b "$root" "$release"
touch "$dir/ok"
echo "$root"

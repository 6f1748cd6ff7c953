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

suite=${1:?usage: boot-kernel.sh SUITE CACHE_DIR}
cache=$(realpath -m "${2:?usage: boot-kernel.sh SUITE CACHE_DIR}")
mirror=${CHUNKFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}

dir=$cache/$suite
root=$dir/root
if [[ -f $dir/ok ]]; then
    echo "$root"
    exit 0
fi

mkdir -p "$dir/apt/state/lists/partial" "$dir/apt/cache/archives/partial" "$dir/apt/etc/sources.list.d" \
    "$dir/apt/etc/preferences.d" "$dir/debs"
echo "deb $mirror $suite main" >"$dir/apt/etc/sources.list"
apt_opts=(
    -o "Dir::State=$dir/apt/state"
    -o "Dir::State::status=/dev/null"
    -o "Dir::Cache=$dir/apt/cache"
    -o "Dir::Etc::sourcelist=$dir/apt/etc/sources.list"
    -o "Dir::Etc::sourceparts=$dir/apt/etc/sources.list.d"
    -o "Dir::Etc::preferencesparts=$dir/apt/etc/preferences.d"
    -o "APT::Default-Release=$suite"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -qq update >&2

# linux-image-amd64 is a metapackage; its first dependency is the real kernel package.
pkg=$(apt-cache "${apt_opts[@]}" depends "linux-image-amd64/$suite" 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[[ -n $pkg ]] || { echo "boot-kernel: no linux-image-amd64 in $suite" >&2; exit 1; }
echo "boot-kernel: $suite -> $pkg" >&2

(cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "$pkg/$suite" >&2)
rm -rf "$root"
mkdir -p "$root"
for deb in "$dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
ls "$root"/boot/vmlinuz-* >/dev/null
# The package ships no modules.dep (its postinst runs depmod); `chunkfs initramfs` needs it.
command -v depmod >/dev/null || PATH=$PATH:/sbin:/usr/sbin
command -v depmod >/dev/null || { echo "boot-kernel: depmod missing (apt-get install kmod)" >&2; exit 1; }
release=$(basename "$root"/lib/modules/*)
depmod -b "$root" "$release"
touch "$dir/ok"
echo "$root"

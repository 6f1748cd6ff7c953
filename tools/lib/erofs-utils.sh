#!/bin/bash
# Debian trixie's erofs-utils (mkfs.erofs 1.8.6, with zstd) for a bookworm host, without touching
# the host's apt configuration or libraries: a private apt state/cache/sources under the cache
# dir, `apt-get download` of the package and of the trixie libraries it links, `dpkg-deb -x`, and
# a wrapper that starts it with trixie's own dynamic loader and libraries.
#
#   erofs-utils.sh CACHE_DIR        prints the wrapper's path (CACHE_DIR/trixie/mkfs.erofs)
#
# Why: bookworm's erofs-utils 1.5 has no zstd, bookworm-backports has no erofs-utils, and
# trixie's needs glibc 2.38 (bookworm has 2.36). The benchmark uses it only to build the peer
# image (kernel EROFS reading mkfs.erofs's zstd image). The result is reused while it exists;
# delete CACHE_DIR/trixie to refresh.
set -euo pipefail

cache=$(realpath -m "${1:?usage: erofs-utils.sh CACHE_DIR}")
mirror=${CHUNKFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=trixie
# erofs-utils and what it links (Depends of erofs-utils 1.8.6-1, plus libselinux1's libpcre2).
packages=(erofs-utils libc6 libdeflate0 liblz4-1 liblzma5 libselinux1 libpcre2-8-0 libuuid1
    libxxhash0 libzstd1 zlib1g)

dir=$cache/$suite
root=$dir/root
wrapper=$dir/mkfs.erofs
if [[ -f $dir/ok ]]; then
    echo "$wrapper"
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
rm -f "$dir"/debs/*.deb
(cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "${packages[@]/%//$suite}" >&2)
rm -rf "$root"
mkdir -p "$root"
for deb in "$dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
cat >"$wrapper" <<EOF
#!/bin/sh
# trixie's mkfs.erofs on this host: its own loader and libraries (tools/lib/erofs-utils.sh).
exec "$root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$root/usr/lib/x86_64-linux-gnu" \\
    "$root/usr/bin/mkfs.erofs" "\$@"
EOF
chmod +x "$wrapper"
"$wrapper" --help 2>&1 | grep -q zstd || { echo "erofs-utils: $wrapper has no zstd" >&2; exit 1; }
touch "$dir/ok"
echo "$wrapper"

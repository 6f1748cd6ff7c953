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
# shellcheck source=private-apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/private-apt.sh"

cache=$(realpath -m "${1:?usage: erofs-utils.sh CACHE_DIR}")
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

private_apt "$dir" "$suite"
private_apt_extract "$dir" "$root" "${packages[@]/%//$suite}"
cat >"$wrapper" <<EOF
#!/bin/sh
# trixie's mkfs.erofs on this host: its own loader and libraries (tools/lib/erofs-utils.sh).
exec "$root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$root/usr/lib/x86_64-linux-gnu" \\
    "$root/usr/bin/mkfs.erofs" "\$@"
EOF
chmod +x "$wrapper"
# Captured, not piped into `grep -q`: with pipefail, grep leaving early kills the writer (SIGPIPE)
# and the check failed now and then on a wrapper that has zstd.
help=$("$wrapper" --help 2>&1 || true)
[[ $help == *zstd* ]] || { echo "erofs-utils: $wrapper has no zstd" >&2; exit 1; }
touch "$dir/ok"
echo "$wrapper"

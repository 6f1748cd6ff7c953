# Sourced, not run: a private apt for fetching packages of another Debian suite without touching
# the host's apt configuration (state, cache and sources under a directory of our own).
#
#   private_apt DIR SUITE      creates DIR/apt and DIR/debs, sets the array `apt_opts` (pass it
#                              to apt-get and apt-cache) and runs `apt-get update` for SUITE
#   private_apt_extract DIR ROOT PKG...
#                              downloads PKG... (e.g. `name/suite`) into DIR/debs, replacing
#                              what an earlier run left there, and extracts them all into a
#                              fresh ROOT
#
# CHUNKFS_DEBIAN_MIRROR overrides the mirror (default http://deb.debian.org/debian).

private_apt() {
    local dir=$1 suite=$2
    local mirror=${CHUNKFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
    mkdir -p "$dir/apt/state/lists/partial" "$dir/apt/cache/archives/partial" \
        "$dir/apt/etc/sources.list.d" "$dir/apt/etc/preferences.d" "$dir/debs"
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
}

private_apt_extract() {
    local dir=$1 root=$2 deb
    shift 2
    rm -f "$dir"/debs/*.deb
    (cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "$@" >&2)
    rm -rf "$root"
    mkdir -p "$root"
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$root"
    done
}

#!/bin/bash
# Build a statically linked chunkfs (glibc, crt-static: zstd-sys needs a C compiler for the
# target, and the host's gcc + libc.a are all this takes) and print its stripped copy's path.
#
#   boot-build.sh OUT_DIR [debug|release]
#
# `cargo rustc` gives `-C target-feature=+crt-static` to the binary's own compilation only:
# with glibc the flag matters at the link, so the dependencies are the host build's that
# `cargo build`/`cargo test` already made, and the static binary costs one more link instead
# of a second build of the workspace for `--target` (minutes on 2 cores). The next plain
# `cargo build` relinks target/PROFILE/chunkfs without the flag.
#
# The result is reused while the sources are unchanged: OUT_DIR/chunkfs-PROFILE.key holds a
# sha256 of the profile, the toolchain and every file the binary is built from (tracked or
# not), so a repeated boot test skips cargo entirely.
set -euo pipefail

out=$(realpath -m "${1:?usage: boot-build.sh OUT_DIR [debug|release]}")
profile=${2:-debug}
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$out/chunkfs-$profile
target_dir=${CARGO_TARGET_DIR:-$repo/target}

key=$(
    cd "$repo"
    {
        echo "$profile cargo-rustc +crt-static"
        rustc -vV
        git ls-files -z --cached --others --exclude-standard -- \
            Cargo.toml Cargo.lock kernel-abi format reader helper |
            sort -z | xargs -0 -r sha256sum 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
)
if [[ -x $bin && -f $bin.key && $(cat "$bin.key") == "$key" ]]; then
    echo "$bin"
    exit 0
fi

cargo_profile=(--profile dev) profile_dir=debug
[[ $profile == release ]] && cargo_profile=(--release) profile_dir=release
cargo rustc --quiet --locked --manifest-path "$repo/Cargo.toml" -p chunkfs-helper --bin chunkfs \
    "${cargo_profile[@]}" -- -C target-feature=+crt-static >&2
built=$target_dir/$profile_dir/chunkfs
# Captured, not piped into `grep -q`: with pipefail, grep leaving early kills readelf (SIGPIPE)
# and the pipeline's failure would read as "static".
headers=$(LC_ALL=C readelf -lW "$built")
if [[ $headers == *'Requesting program interpreter'* ]]; then
    echo "boot-build: $built is not statically linked" >&2
    exit 1
fi
mkdir -p "$out"
strip -o "$bin.tmp" "$built"
mv "$bin.tmp" "$bin"
echo "$key" >"$bin.key"
echo "$bin"

#!/bin/bash
# Build a statically linked chunkfs (glibc, crt-static: zstd-sys needs a C compiler for the
# target, and the host's gcc + libc.a are all this takes) and print its stripped copy's path.
#
#   boot-build.sh OUT_DIR [debug|release]
#
# The result is reused while the sources are unchanged: OUT_DIR/chunkfs-PROFILE.key holds a
# sha256 of the profile, the toolchain and every file the binary is built from (tracked or
# not), so a repeated boot test skips cargo entirely.
set -euo pipefail

out=$(realpath -m "${1:?usage: boot-build.sh OUT_DIR [debug|release]}")
profile=${2:-debug}
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=x86_64-unknown-linux-gnu
bin=$out/chunkfs-$profile

key=$(
    cd "$repo"
    {
        echo "$profile $target"
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

cargo_profile=(--profile dev)
[[ $profile == release ]] && cargo_profile=(--release)
# Only the target's flags: build scripts and proc macros stay dynamic host programs.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --locked --manifest-path "$repo/Cargo.toml" -p chunkfs-helper --bin chunkfs \
    --target "$target" "${cargo_profile[@]}" >&2
mkdir -p "$out"
strip -o "$bin.tmp" "$repo/target/$target/$profile/chunkfs"
mv "$bin.tmp" "$bin"
echo "$key" >"$bin.key"
echo "$bin"

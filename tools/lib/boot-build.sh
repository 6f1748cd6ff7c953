#!/bin/bash
# Build a statically linked chunkfs (glibc, crt-static: zstd-sys needs a C compiler for the
# target, and the host's gcc + libc.a are all this takes) and print its stripped copy's path.
#
#   boot-build.sh OUT_DIR [debug|release]
set -euo pipefail

out=$(realpath -m "${1:?usage: boot-build.sh OUT_DIR [debug|release]}")
profile=${2:-debug}
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=x86_64-unknown-linux-gnu

cargo_profile=(--profile dev)
[[ $profile == release ]] && cargo_profile=(--release)
# Only the target's flags: build scripts and proc macros stay dynamic host programs.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --manifest-path "$repo/Cargo.toml" -p chunkfs-helper --bin chunkfs \
    --target "$target" "${cargo_profile[@]}" >&2
mkdir -p "$out"
strip -o "$out/chunkfs" "$repo/target/$target/$profile/chunkfs"
echo "$out/chunkfs"

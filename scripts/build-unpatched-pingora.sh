#!/usr/bin/env bash
# Builds examples/bare_pingora.rs against Pingora 0.9.1 as published on
# crates.io, without the patches in vendor/ (the same allocator and release
# profile as hothot), and prints the binary's path: Pingora alone as it was
# before this project patched it, for the benches' BARE_PINGORA=.
#
#   BARE_PINGORA=$(scripts/build-unpatched-pingora.sh) scripts/bench.sh 10s 3
#   BARE_PINGORA=$(scripts/build-unpatched-pingora.sh) scripts/bench-instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps.sh >&2
crate=target/unpatched-pingora
mkdir -p "$crate/src"
cat >"$crate/Cargo.toml" <<'EOF'
[package]
name = "bare_pingora_unpatched"
version = "0.1.0"
edition = "2021"
publish = false

# Not a member of hothot's workspace: no [patch.crates-io] applies.
[workspace]

[dependencies]
pingora-core = { version = "=0.9.1", features = ["connection_filter"] }
pingora-proxy = "=0.9.1"
pingora-error = "=0.9.1"
async-trait = "0.1"
libc = "0.2"
libmimalloc-sys = { version = "0.1.49", default-features = false, features = ["v2"] }

[profile.release]
lto = "fat"
codegen-units = 1
panic = "abort"
EOF
cp src/alloc.rs "$crate/src/alloc.rs"
# hothot's allocator module, as a module of this binary.
sed -e 's/hothot::alloc::/alloc::/g' -e '/#\[cfg(feature = "mimalloc")\]/d' \
  -e '0,/^use async_trait/s//mod alloc;\nuse async_trait/' \
  examples/bare_pingora.rs >"$crate/src/main.rs"
(cd "$crate" && CARGO_TARGET_DIR=target cargo build --release >&2)
echo "$crate/target/release/bare_pingora_unpatched"

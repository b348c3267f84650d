#!/usr/bin/env bash
# Runs the tests of the patched Pingora crates (see README.md here): each is
# copied to a scratch directory (the crates' own Cargo.lock pins versions a
# registry mirror may lack) and its library tests that cover the patches run.
set -euo pipefail
cd "$(dirname "$0")"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
run() { # crate test-filters...
  cp -r "$1" "$scratch/$1"
  rm -f "$scratch/$1/Cargo.lock"
  local crate=$1
  shift
  (cd "$scratch/$crate" && CARGO_TARGET_DIR="$scratch/target" cargo test --lib -- "$@")
}
run pingora-core has_pipelined_prefix content_length a_body_read_with_its_header test_stream_fill_read_buf stream_matches_peer shared_pool_tests local_pool grace_period_end_cuts_the_wait_short read_leaves_room_for_proxy_added_headers upgraded_read_timeout_replaces_read_timeout_after_101
run pingora-proxy an_upgrade_survives_its_request_body_ending_after_the_101 a_bodiless_request a_request_whose_body_was_read_for_a_retry h1_sanitizing_removes_hop_by_hop_and_upgrade_fields
run pingora-runtime no_steal
run pingora-http test_reserve_then_insert_typed_names test_into_header_names test_single_header
# pingora-openssl: OpenSSL built from source only when `vendored` is asked
# for; by default the system's libssl is linked (hothot's
# tests/startup.rs checks the binary with ldd).
cp -r pingora-openssl "$scratch/pingora-openssl"
rm -f "$scratch/pingora-openssl/Cargo.lock"
(
  cd "$scratch/pingora-openssl"
  if CARGO_TARGET_DIR="$scratch/target" cargo tree -e features -i openssl-src >/dev/null 2>&1; then
    echo "pingora-openssl: openssl-src (a vendored OpenSSL) is in the default build" >&2
    exit 1
  fi
  CARGO_TARGET_DIR="$scratch/target" cargo tree --features vendored -e features -i openssl-src >/dev/null
  echo "pingora-openssl: the system OpenSSL by default, openssl-src with --features vendored"
)

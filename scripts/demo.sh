#!/usr/bin/env bash
# Runs hothot on conf/hothot.yaml in front of three demo replicas
# (127.0.0.1:9001-9003, capacities 1000/800/600). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
# Built once: later starts skip the install and the build unless a source
# changed since (cargo would only say so, after a second or two).
built=target/release/hothot
if [ ! -x "$built" ] || [ ! -x target/release/examples/replica ] ||
  [ -n "$(find src examples vendor Cargo.toml Cargo.lock -newer "$built" -print -quit)" ]; then
  scripts/install-build-deps.sh
  cargo build --release --bin hothot --example replica
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
port=9001
for name in a b c; do
  target/release/examples/replica --name "$name" --listen "127.0.0.1:$port" &
  pids+=($!)
  port=$((port + 1))
done
echo "hothot on http://127.0.0.1:8080, metrics on http://127.0.0.1:9100/metrics" >&2
target/release/hothot -c conf/hothot.yaml

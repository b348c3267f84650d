#!/usr/bin/env bash
# The metrics, dashboard and alerting rules against a real Prometheus:
# installs Debian's prometheus (and promtool) when missing, then runs
# tests/observability.rs, which starts hothot and Prometheus (scraping every
# second) under a short scripted load with faults injected, runs every
# dashboard query (printing each panel's values), and runs
# `promtool check metrics`, `promtool check rules` and `promtool test rules`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends prometheus
fi
promtool check rules conf/prometheus/hothot-rules.yml
promtool test rules conf/prometheus/hothot-rules.test.yml
cargo test --test observability -- --nocapture

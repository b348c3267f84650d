#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to run the tests: nginx (Debian's
# nginx-core, which has the WebDAV module), started by tests/ordering.rs as a
# real origin that stores PUT bodies and applies DELETE; prometheus (with
# promtool), started by tests/observability.rs to scrape hothot; etcd, the
# cluster's shared log, started by tests/cluster/. Without
# recommended packages: Debian's prometheus recommends node-exporter, whose
# service would take port 9100, the demo's metrics port.
set -euo pipefail
# nginx: a real origin; openssl: test certificates; curl: a real HTTP/2 client.
missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# etcd: the cluster's shared log, started by the tests as three real members (#25).
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
if ! command -v nginx >/dev/null 2>&1; then
  echo "installing test dependencies: nginx-core ${missing[*]}" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends nginx-core "${missing[@]}" ||
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends nginx "${missing[@]}"
elif [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

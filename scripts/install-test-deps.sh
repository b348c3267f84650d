#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to run the tests: nginx (Debian's
# nginx-core, which has the WebDAV module), started by tests/ordering.rs as a
# real origin that stores PUT bodies and applies DELETE.
set -euo pipefail
command -v nginx >/dev/null 2>&1 && exit 0
echo "installing test dependencies: nginx-core" >&2
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq nginx-core ||
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq nginx

#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests against real origins, config checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps.sh
cargo test "$@"

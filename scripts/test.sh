#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests against real origins
# (in-process ones and nginx), config checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps.sh
scripts/install-test-deps.sh
cargo test "$@"

# Shared by the bench scripts (sourced, not run): tools, a scratch directory
# that is removed with every process started at exit, and small helpers.
# Loopback only.

bench_setup() { # tools the script needs (Debian package names)...
  scripts/install-build-deps.sh
  local tool missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]/nginx/nginx-light}"
  fi
  cargo build --release --bin hothot --example replica --example bare_pingora ${CARGO_FLAGS:-} >&2
  work=$(mktemp -d)
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # port: up to 20 s
  for _ in $(seq 2000); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.01; done
  echo "port $1 never opened" >&2
  return 1
}

metric() { # series -> value, from hothot's /metrics on $METRICS
  curl -s "http://127.0.0.1:$METRICS/metrics" | awk -v s="$1" '$1==s {print $2}'
}

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
  BARE_PINGORA=${BARE_PINGORA:-target/release/examples/bare_pingora}
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

address() { echo "127.0.$(($1 / 250)).$(($1 % 250 + 1))"; } # the i-th loopback origin address

# The bench origin: nginx, one worker, answering 200 to every path on the
# first COUNT loopback addresses (pinned to CORE if given); sets ORIGIN.
start_bench_origin() { # count [core]
  ORIGIN=$(free_port)
  {
    echo "worker_processes 1; pid $work/origin.pid; error_log $work/origin-error.log;"
    echo "events { worker_connections 20000; }"
    echo "http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s; server {"
    for i in $(seq 0 $(($1 - 1))); do echo "listen $(address "$i"):$ORIGIN;"; done
    echo 'location / { return 200 "hello from the bench origin\n"; } } }'
  } >"$work/origin.conf"
  ${2:+taskset -c "$2"} nginx -c "$work/origin.conf" -g 'daemon off;' &
  pids+=($!)
  wait_port "$ORIGIN"
}

# nginx as the reference proxy, on stdout: one worker listening on PORT,
# proxying to the first COUNT bench origin addresses with upstream
# keep-alive, EXTRA directives added to `location /`.
nginx_proxy_config() { # port count [extra]
  local servers="" i
  for i in $(seq 0 $(($2 - 1))); do servers+="server $(address "$i"):$ORIGIN; "; done
  cat <<CONF
worker_processes 1;
worker_rlimit_nofile 65536;
pid $work/nginx-$1.pid;
error_log $work/nginx-error.log;
events { worker_connections 30000; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  upstream origin {
    $servers
    keepalive $((64 > 2 * $2 ? 64 : 2 * $2)); keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:$1;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; ${3:-} }
  }
}
CONF
}

# hothot's configuration for a read bench, on stdout: listening on $PROXY and
# $METRICS, COUNT origins of the bench origin (capacity 100 each),
# replication MODE with its journal in DIR, SERVER settings if given, then
# $EXTRA_YAML.
bench_hothot_config() { # count mode dir [server]
  [ -z "${4:-}" ] || echo "server: $4"
  echo "listen: [\"127.0.0.1:$PROXY\"]"
  echo "metrics: {listen: \"127.0.0.1:$METRICS\"}"
  echo "origins:"
  for i in $(seq 0 $(($1 - 1))); do
    echo "  - {name: o$i, address: \"$(address "$i"):$ORIGIN\", capacity: 100}"
  done
  echo "replication:"
  echo "  mode: $2"
  echo "  journal: {dir: \"$3/journal\"}"
  # ROUTES=N: N rules of replication.routes, none of which GET / matches
  # (prefixes, exact paths and regexes in turn): every read tries them all.
  local i
  [ "${ROUTES:-0}" -gt 0 ] && echo "  routes:"
  for i in $(seq 0 $((${ROUTES:-0} - 1))); do
    case $((i % 3)) in
      0) echo "    - {match: {path_prefix: /api/v$i/}, as: primary}" ;;
      1) echo "    - {match: {path: /v$i/kv/range}, as: read}" ;;
      2) echo "    - {match: {path_regex: \"^/svc$i/[a-z]+/notify\"}, as: primary}" ;;
    esac
  done
  echo "${EXTRA_YAML:-}"
}

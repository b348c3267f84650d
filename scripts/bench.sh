#!/usr/bin/env bash
# Throughput of hothot against a direct connection to one origin, with nginx as
# a reference proxy, and the memory each proxy holds per idle keep-alive client
# connection. Loopback only; every process is stopped at the end.
#
#   scripts/bench.sh [DURATION=15s] [CONNECTIONS=32] [IDLE_CONNECTIONS=10000]
#   CARGO_FLAGS=--no-default-features scripts/bench.sh   # the same with glibc malloc instead of mimalloc
#
# Layout on a 2-core machine: the proxy (one worker thread) on core 1, the
# origin and wrk on core 0.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15s}
CONNECTIONS=${2:-32}
IDLE=${3:-10000}
source scripts/bench-lib.sh
bench_setup wrk nginx bc
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # the idle-connection test needs IDLE + a few fds

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

ORIGIN=$(free_port); PROXY=$(free_port); METRICS=$(free_port); NGINX=$(free_port)
taskset -c 0 target/release/examples/replica --name a --listen "127.0.0.1:$ORIGIN" 2>/dev/null &
pids+=($!)
cat >"$work/hothot.yaml" <<YAML
server: {threads: 1}
listen: ["127.0.0.1:$PROXY"]
metrics: {listen: "127.0.0.1:$METRICS"}
origins: [{name: a, address: "127.0.0.1:$ORIGIN", capacity: 1000}]
replication: {mode: off}
YAML
start_hothot() {
  RUST_LOG=error taskset -c 1 target/release/hothot -c "$work/hothot.yaml" &
  HOTHOT_PID=$!; pids+=($HOTHOT_PID)
  wait_port "$PROXY"
}
stop_hothot() { kill -INT "$HOTHOT_PID" 2>/dev/null || true; wait "$HOTHOT_PID" 2>/dev/null || true; }
start_hothot
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
worker_cpu_affinity 10;
worker_rlimit_nofile 19000;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_port "$ORIGIN"; wait_port "$PROXY"; wait_port "$NGINX"
NGINX_WORKER=$(pgrep -P "$!" | head -1)

run_wrk() { # name port -> "requests/s p50 p99"
  taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$2/" >"$work/$1.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/$1.txt")
  echo "$rps $p50 $p99"
}
read -r direct_rps direct_p50 direct_p99 < <(run_wrk direct "$ORIGIN")
read -r hothot_rps hothot_p50 hothot_p99 < <(run_wrk hothot "$PROXY")
read -r nginx_rps nginx_p50 nginx_p99 < <(run_wrk nginx "$NGINX")

idle_memory() { # pid port mode -> KiB per connection (each on a fresh process: allocators keep what they got)
  local before after holder
  before=$(rss_kib "$1")
  python3 scripts/hold_connections.py --port "$2" --count "$IDLE" $3 >"$work/hold.out" &
  holder=$!
  for _ in $(seq 600); do grep -q ready "$work/hold.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  after=$(rss_kib "$1")
  kill "$holder"; wait "$holder" 2>/dev/null || true
  sleep 1
  echo "scale=1; ($after - $before) / $IDLE" | bc
}
stop_hothot; start_hothot
hothot_burst=$(idle_memory "$HOTHOT_PID" "$PROXY" "")
stop_hothot; start_hothot
hothot_seq=$(idle_memory "$HOTHOT_PID" "$PROXY" --sequential)
nginx_burst=$(idle_memory "$NGINX_WORKER" "$NGINX" "")

echo
allocator=mimalloc
case "${CARGO_FLAGS:-}" in *no-default-features*) allocator=glibc ;; esac
echo "wrk -t1 -c$CONNECTIONS -d$DURATION on loopback (allocator: $allocator)"
printf '%-8s %12s %10s %10s %8s\n' target requests/s p50 p99 ratio
printf '%-8s %12s %10s %10s %8s\n' direct "$direct_rps" "$direct_p50" "$direct_p99" 1.00
printf '%-8s %12s %10s %10s %8.2f\n' hothot "$hothot_rps" "$hothot_p50" "$hothot_p99" "$(echo "$hothot_rps / $direct_rps" | bc -l)"
printf '%-8s %12s %10s %10s %8.2f\n' nginx "$nginx_rps" "$nginx_p50" "$nginx_p99" "$(echo "$nginx_rps / $direct_rps" | bc -l)"
printf 'hothot/nginx throughput: %.2f\n' "$(echo "$hothot_rps / $nginx_rps" | bc -l)"
echo
echo "memory per idle keep-alive client connection ($IDLE connections, one request each)"
echo "hothot, requests at once:         ${hothot_burst} KiB"
echo "hothot, requests one after other: ${hothot_seq} KiB"
echo "nginx,  requests at once:         ${nginx_burst} KiB"

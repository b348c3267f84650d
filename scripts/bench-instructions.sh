#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: hothot (every
# default on), Pingora alone (examples/bare_pingora.rs) and nginx (one
# process, master_process off, proxying with upstream keep-alive as in
# scripts/bench.sh), small GETs from
# wrk -c32 through each to the same origin (one nginx worker on three
# loopback addresses). Unlike CPU time, the count does not drift with a
# shared machine's speed: a change that saves 1% shows as 1%, where the
# CPU-time rounds of scripts/bench.sh need many rounds to see 5%. It counts
# user-space work only (no kernel time, no cache misses). Loopback only;
# every process stops at the end.
#
#   scripts/bench-instructions.sh [SECONDS=3]
#   HOTHOT=path/to/hothot   # count another build (default: target/release/hothot)
#   BARE_PINGORA=path       # another Pingora alone (default: target/release/examples/bare_pingora;
#                           # scripts/build-unpatched-pingora.sh builds it without vendor/'s patches)
#   ROUTES=20               # hothot with 20 replication.routes rules no request matches (#26)
#   RUNS="hothot pingora"   # count only these (default: hothot pingora nginx)
#                           # hothot-idle: hothot with 1,000 origins and no
#                           # traffic, instructions per second (probes, ticks)
#   PROFILES=dir            # keep callgrind's profiles there, one per run, for
#                           # `callgrind_annotate --inclusive=yes dir/hothot.out`
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_COUNTED=${1:-3}
source scripts/bench-lib.sh
bench_setup wrk nginx valgrind
HOTHOT=${HOTHOT:-target/release/hothot}

runs=" ${RUNS:-hothot pingora nginx} "
if [[ $runs != *" hothot "* && $runs != *" pingora "* && $runs != *" nginx "* && $runs != *" hothot-idle "* ]]; then
  echo "RUNS=\"${RUNS:-}\" names none of hothot, pingora, nginx, hothot-idle" >&2
  exit 2
fi
# 1,000 loopback addresses when the idle run needs them (the others use 3).
if [[ $runs == *" hothot-idle "* ]]; then start_bench_origin 1000; else start_bench_origin 3; fi

# Starts `command...` under callgrind, instrumentation off (start-up is not
# counted: `callgrind_control -i on` starts the measured window), and waits
# for `port`; sets CALLGRIND_PID. Not in $(...): a subshell's processes
# would escape the exit trap.
callgrind_start() { # name port command...
  local name=$1 port=$2
  shift 2
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/$name.out" "$@" \
    >"$work/$name.log" 2>&1 &
  CALLGRIND_PID=$!; pids+=($CALLGRIND_PID)
  wait_port "$port"
}

# Ends the measured window of the process callgrind_start started, stops
# it, keeps its profile in PROFILES if set, and prints the instructions
# counted.
callgrind_finish() { # name
  local name=$1 pid=$CALLGRIND_PID profile
  callgrind_control -d "$pid" >/dev/null 2>&1
  callgrind_control -i off "$pid" >/dev/null 2>&1
  profile=$(ls -S "$work/$name.out"* | head -1)
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  if [[ -n ${PROFILES:-} ]]; then
    mkdir -p "$PROFILES" && cp "$profile" "$PROFILES/$name.out"
  fi
  callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

count() { # name port command... -> "name: N instructions per request (R requests)"
  local name=$1 port=$2 requests total
  callgrind_start "$@"
  sleep 2
  wrk -t1 -c32 -d1s "http://127.0.0.1:$port/" >/dev/null # warm-up: connections, pools
  callgrind_control -i on "$CALLGRIND_PID" >/dev/null 2>&1
  requests=$(wrk -t1 -c32 -d"${SECONDS_COUNTED}s" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
  total=$(callgrind_finish "$name")
  echo "$name: $((total / requests)) instructions per request ($requests requests)"
}
if [[ $runs == *" hothot "* ]]; then
  PROXY=$(free_port)
  METRICS=$(free_port)
  mkdir -p "$work/hothot"
  bench_hothot_config 3 async "$work/hothot" >"$work/hothot/hothot.yaml"
  # Not in $(...): a subshell's processes would escape the exit trap.
  RUST_LOG=error count hothot "$PROXY" "$HOTHOT" -c "$work/hothot/hothot.yaml" >"$work/hothot.result"
fi
if [[ $runs == *" pingora "* ]]; then
  PINGORA=$(free_port)
  count pingora "$PINGORA" "$BARE_PINGORA" "127.0.0.1:$PINGORA" \
    "$(address 0):$ORIGIN" "$(address 1):$ORIGIN" "$(address 2):$ORIGIN" >"$work/pingora.result"
fi
if [[ $runs == *" nginx "* ]]; then
  NGINX=$(free_port)
  # One process (no master) so that callgrind follows the worker.
  { echo "master_process off;"; nginx_proxy_config "$NGINX" 3; } >"$work/nginx.conf"
  count nginx "$NGINX" nginx -c "$work/nginx.conf" -g 'daemon off;' >"$work/nginx.result"
fi
if [[ $runs == *" hothot-idle "* ]]; then
  # As scripts/bench.sh's idle CPU: hothot-1000's configuration, counted
  # for 20 s after the first probe rounds and start-up.
  PROXY=$(free_port)
  METRICS=$(free_port)
  mkdir -p "$work/idle"
  bench_hothot_config 1000 async "$work/idle" >"$work/idle/hothot.yaml"
  RUST_LOG=error callgrind_start hothot-idle "$PROXY" "$HOTHOT" -c "$work/idle/hothot.yaml"
  sleep 10
  callgrind_control -i on "$CALLGRIND_PID" >/dev/null 2>&1
  sleep 20
  total=$(callgrind_finish hothot-idle)
  echo "hothot-idle: $((total / 20)) instructions per second, 1,000 origins and no traffic" >"$work/idle.result"
fi
results=()
for name in hothot pingora nginx; do
  [[ -f $work/$name.result ]] && results+=("$work/$name.result")
done
((${#results[@]} == 0)) || cat "${results[@]}"
[[ ! -f $work/idle.result ]] || cat "$work/idle.result"
if ((${#results[@]} == 3)); then
  awk '{n[NR] = $2} END {printf "hothot / Pingora alone: %.2f, hothot / nginx: %.2f, Pingora alone / nginx: %.2f\n", n[1] / n[2], n[1] / n[3], n[2] / n[3]}' \
    "${results[@]}"
fi

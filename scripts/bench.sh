#!/usr/bin/env bash
# Reads through hothot, nginx and HAProxy, compared the way users compare
# proxies: CPU time per request, requests/s, p99, and memory per idle
# keep-alive client connection. Then how hothot's cost grows with the work:
# 100 and 1,000 origins, 2 worker threads, replication off (reads must not
# pay for replication). Loopback only; every process stops at the end.
#
#   scripts/bench.sh [DURATION=10s] [ROUNDS=3] [IDLE_CONNECTIONS=10000] [CONNECTIONS=32]
#   RUNS="hothot nginx nginx-xff haproxy pingora hothot-100 hothot-1000 nginx-1000 pingora-1000 hothot-2t hothot-norepl"
#   (nginx-xff: nginx also doing the header work hothot does by default,
#   X-Forwarded-For/-Proto/-Host and the client's Host passed on, as a
#   typical nginx reverse-proxy configuration does; pingora: Pingora itself
#   with no hooks beyond a round robin, examples/bare_pingora.rs, the floor
#   under hothot's cost; nginx-1000: nginx with the same 1,000 origins, the
#   reference for what 1,000 upstream sockets cost the kernel and the caches
#   of any proxy; pingora-1000: Pingora alone with them, the floor under
#   hothot-1000; hothot-steal, not run by default: server.work_stealing true;
#   hothot-routes, not run by default: 20 replication.routes rules that no
#   request of the bench matches, a third of them regexes, #26)
#   HOTHOT=path/to/hothot   # compare another build (default: target/release/hothot)
#   BARE_PINGORA=path       # another Pingora alone for the `pingora` runs (default:
#                           # target/release/examples/bare_pingora, with vendor/'s patches;
#                           # scripts/build-unpatched-pingora.sh builds it without them)
#   BASELINE=path/to/hothot # also run `hothot-baseline`: that build, hothot's defaults,
#                           # interleaved with the others (a change against the build before it)
#   MEMORY=0                # skip the idle-connection measurement
#   IDLE_CPU=0              # skip hothot's idle CPU with 1,000 origins (20 s)
#   INSTRUCTIONS=0          # skip the instruction counts of hothot, pingora and nginx
#                           # (those in RUNS; scripts/bench-instructions.sh, about a minute)
#   EXTRA_YAML="health: {interval: 5s}"   # top-level keys added to hothot's config
#
# Layout on a 2-core machine: every proxy has one worker (thread or process)
# pinned to core 1 (hothot-2t: two threads, still on core 1); the origin (one
# nginx worker answering 200 to every path on up to 1,000 loopback
# addresses) and wrk on core 0. Rounds interleave the proxies, so that the
# machine's drift hits them alike. CPU per request is the proxy process's
# utime + stime (/proc/PID/stat) over the requests wrk completed, which on a
# shared VM is far steadier than requests/s. hothot runs with its defaults
# (health probes every second, metrics, replication async with the journal);
# nginx and HAProxy proxy with upstream keep-alive and no health checks.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
ROUNDS=${2:-3}
IDLE=${3:-10000}
CONNECTIONS=${4:-32}
RUNS=${RUNS:-hothot nginx nginx-xff haproxy pingora hothot-100 hothot-1000 nginx-1000 pingora-1000 hothot-2t hothot-norepl}
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ] && [[ " $RUNS " != *" hothot-baseline "* ]]; then RUNS="hothot-baseline $RUNS"; fi
MEMORY=${MEMORY:-1}
source scripts/bench-lib.sh
bench_setup wrk nginx haproxy bc
HOTHOT=${HOTHOT:-target/release/hothot}
# 10,000 idle clients need 10,000 descriptors in the client and in each proxy
# (hothot: three per connection, see limits.max_connections); as root, raise
# the hard limit too.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
TICK=$(getconf CLK_TCK)
# hothot budgets three descriptors per client connection (its own, the origin
# connection serving it, one accepted but not yet admitted) after a reserve
# for the upstream pool, probes and replication; on a machine whose hard limit
# is lower than that needs, every proxy gets the number hothot can hold.
FITS=$(( ($(ulimit -n) - 64 - 128 - 3 * 8 - 100) / 3 ))
if [ "$IDLE" -gt "$FITS" ]; then
  echo "note: $IDLE idle connections need more descriptors than ulimit -n $(ulimit -n) allows: measuring $FITS" >&2
  IDLE=$FITS
fi

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # user sys
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# The origin: nginx, one worker on core 0, on 1,000 loopback addresses.
start_bench_origin 1000 0

PROXY=0 METRICS=0 PROXY_PID=0 WORKER_PID=0 STOP_SIGNAL=INT
start_hothot() { # origins threads replication [work_stealing] [binary]
  PROXY=$(free_port); METRICS=$(free_port)
  local dir="$work/hothot-$PROXY" binary
  binary=$(realpath "${5:-$HOTHOT}")
  mkdir -p "$dir"
  bench_hothot_config "$1" "$3" "$dir" "{threads: $2${4:+, work_stealing: $4}}" >"$dir/hothot.yaml"
  (cd "$dir" && RUST_LOG=error exec taskset -c 1 "$binary" -c hothot.yaml) &
  PROXY_PID=$!; WORKER_PID=$PROXY_PID; pids+=($!); STOP_SIGNAL=INT
  wait_port "$PROXY"
}
start_nginx() { # origins [extra directives for location /]
  PROXY=$(free_port)
  nginx_proxy_config "$PROXY" "$1" "${2:-}" >"$work/nginx-$PROXY.conf"
  taskset -c 1 nginx -c "$work/nginx-$PROXY.conf" -g 'daemon off;' &
  PROXY_PID=$!; pids+=($!); STOP_SIGNAL=TERM
  wait_port "$PROXY"
  WORKER_PID=$(pgrep -P "$PROXY_PID" | head -1)
}
start_haproxy() {
  PROXY=$(free_port)
  cat >"$work/haproxy-$PROXY.cfg" <<CONF
global
  nbthread 1
  maxconn $((IDLE + 100))
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 1s
  timeout client 75s
  timeout server 30s
  timeout http-keep-alive 75s
frontend bench
  bind 127.0.0.1:$PROXY
  default_backend origin
backend origin
  balance roundrobin
  server a 127.0.0.1:$ORIGIN
  server b 127.0.0.2:$ORIGIN
  server c 127.0.0.3:$ORIGIN
CONF
  taskset -c 1 haproxy -db -f "$work/haproxy-$PROXY.cfg" 2>>"$work/haproxy.log" &
  PROXY_PID=$!; WORKER_PID=$PROXY_PID; pids+=($!); STOP_SIGNAL=TERM
  wait_port "$PROXY"
}
start_pingora() { # origins
  PROXY=$(free_port)
  local origins=() i
  for i in $(seq 0 $(($1 - 1))); do origins+=("$(address "$i"):$ORIGIN"); done
  taskset -c 1 "$BARE_PINGORA" "127.0.0.1:$PROXY" "${origins[@]}" 2>>"$work/pingora.log" &
  PROXY_PID=$!; WORKER_PID=$PROXY_PID; pids+=($!); STOP_SIGNAL=INT
  wait_port "$PROXY"
}
# What hothot does to every request by default, in nginx's words.
NGINX_AS_HOTHOT='proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $http_host;'
start() { # run name
  case "$1" in
    hothot) start_hothot 3 1 async ;;
    hothot-baseline) start_hothot 3 1 async "" "$BASELINE" ;;
    hothot-100) start_hothot 100 1 async ;;
    hothot-1000) start_hothot 1000 1 async ;;
    hothot-2t) start_hothot 3 2 async ;;
    hothot-norepl) start_hothot 3 1 off ;;
    hothot-routes) ROUTES=20 start_hothot 3 1 async ;;
    hothot-steal) start_hothot 3 1 async true ;;
    nginx) start_nginx 3 ;;
    nginx-xff) start_nginx 3 "$NGINX_AS_HOTHOT" ;;
    pingora) start_pingora 3 ;;
    pingora-1000) start_pingora 1000 ;;
    nginx-1000) start_nginx 1000 ;;
    haproxy) start_haproxy ;;
    *) echo "unknown run $1" >&2; return 1 ;;
  esac
}
stop() { # hothot: SIGINT is its fast exit; nginx and HAProxy: SIGTERM
  kill -"$STOP_SIGNAL" "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true
}

# One measured run: "requests/s user_us sys_us p99" on stdout.
measure() { # name
  taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$PROXY/" >/dev/null # warm-up: connections, pools
  local before after out n
  before=$(cpu_ticks "$WORKER_PID")
  out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PROXY/")
  after=$(cpu_ticks "$WORKER_PID")
  if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
    echo "warning: $1: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ')" >&2
  fi
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  printf '%s %s %s %s\n' \
    "$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")" \
    "$(echo "scale=1; ($u1 - $u0) * 1000000 / $TICK / $n" | bc)" \
    "$(echo "scale=1; ($s1 - $s0) * 1000000 / $TICK / $n" | bc)" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")"
}

declare -A RESULTS STARTED_KIB
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS interleaved rounds; CPU = proxy utime+stime per request" >&2
for round in $(seq "$ROUNDS"); do
  for run in $RUNS; do
    start "$run"
    sleep 1 # hothot: first probe round done, start-up settled
    [ -n "${STARTED_KIB[$run]:-}" ] || STARTED_KIB[$run]=$(rss_kib "$WORKER_PID")
    result=$(measure "$run")
    stop
    RESULTS[$run]+="$result;"
    read -r rps user sys p99 <<<"$result"
    printf 'round %d %-14s %8s req/s  %6s + %6s = %6s us/req  p99 %s\n' "$round" "$run" "$rps" "$user" "$sys" \
      "$(echo "$user + $sys" | bc)" "$p99" >&2
  done
done

range() { # values... -> "min-max" (or the value)
  printf '%s\n' "$@" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {if (lo==hi) print lo; else print lo "-" hi}'
}
column_of() { # run field(1-4) -> values
  tr ';' '\n' <<<"${RESULTS[$1]}" | awk -v f="$2" 'NF {print $f}'
}
totals_of() { tr ';' '\n' <<<"${RESULTS[$1]}" | awk 'NF {print $2 + $3}'; }

echo
echo "Reads: $ROUNDS rounds of wrk -t1 -c$CONNECTIONS -d$DURATION (ranges over the rounds)"
printf '| %-14s | %-15s | %-11s | %-11s | %-13s | %-14s | %-9s |\n' run requests/s "user us/req" "sys us/req" "CPU us/req" "CPU / nginx's" "p99"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' ---------------- ----------------- ------------- ------------- --------------- ---------------- -----------
for run in $RUNS; do
  ratio="-"
  if [[ " $RUNS " == *" nginx "* ]]; then
    # Per round: this run's CPU per request over nginx's in the same round.
    ratio=$(range $(paste -d' ' <(totals_of "$run") <(totals_of nginx) | awk '{printf "%.2f\n", $1 / $2}'))
  fi
  printf '| %-14s | %-15s | %-11s | %-11s | %-13s | %-14s | %-9s |\n' "$run" \
    "$(range $(column_of "$run" 1))" "$(range $(column_of "$run" 2))" "$(range $(column_of "$run" 3))" \
    "$(range $(totals_of "$run"))" "$ratio" "$(range $(column_of "$run" 4))"
done
if [[ " $RUNS " == *" nginx-1000 "* && " $RUNS " == *" nginx "* ]]; then
  echo "nginx-1000 / nginx, CPU per request, per round: $(paste -d' ' <(totals_of nginx-1000) <(totals_of nginx) | awk '{printf "%.2f ", $1 / $2}')"
fi
if [[ " $RUNS " == *" pingora-1000 "* && " $RUNS " == *" pingora "* ]]; then
  echo "pingora-1000 / pingora, CPU per request, per round: $(paste -d' ' <(totals_of pingora-1000) <(totals_of pingora) | awk '{printf "%.2f ", $1 / $2}')"
fi
if [[ " $RUNS " == *" pingora-1000 "* && " $RUNS " == *" hothot-1000 "* ]]; then
  echo "hothot-1000 / pingora-1000, CPU per request, per round: $(paste -d' ' <(totals_of hothot-1000) <(totals_of pingora-1000) | awk '{printf "%.2f ", $1 / $2}')"
fi
if [[ " $RUNS " == *" nginx-xff "* && " $RUNS " == *" hothot "* ]]; then
  echo "hothot / nginx-xff (the same header work), CPU per request, per round: $(paste -d' ' <(totals_of hothot) <(totals_of nginx-xff) | awk '{printf "%.2f ", $1 / $2}')"
fi
if [[ " $RUNS " == *" hothot "* ]]; then
  for run in pingora hothot-100 hothot-1000 hothot-2t hothot-norepl hothot-steal; do
    [[ " $RUNS " == *" $run "* ]] || continue
    echo "$run / hothot, CPU per request, per round: $(paste -d' ' <(totals_of "$run") <(totals_of hothot) | awk '{printf "%.2f ", $1 / $2}')"
  done
fi

echo "Resident memory after start-up, before any client (first round, MiB):$(for run in $RUNS; do echo -n " $run $((STARTED_KIB[$run] / 1024));"; done)"

# The same builds' instructions per request, counted by callgrind: unlike
# the CPU above, a figure any machine agrees on (user space only).
instruction_runs=""
for run in hothot pingora nginx; do
  if [[ " $RUNS " == *" $run "* ]]; then instruction_runs+="$run "; fi
done
if [ "${INSTRUCTIONS:-1}" = 1 ] && [ -n "$instruction_runs" ]; then
  echo "Instructions per request (scripts/bench-instructions.sh, wrk -c32, 3 s each):"
  RUNS="$instruction_runs" HOTHOT="$HOTHOT" BARE_PINGORA="$BARE_PINGORA" \
    scripts/bench-instructions.sh 2>/dev/null | sed 's/^/  /' ||
    echo "  not counted: scripts/bench-instructions.sh failed (run it alone to see why)"
fi

# CPU of hothot idle with 1,000 origins (probes, the adaptive tick,
# replication housekeeping, the journal): nothing but its background work.
if [ "${IDLE_CPU:-1}" = 1 ]; then
  start hothot-1000
  sleep 4 # the first probe round and start-up done
  read -r u0 s0 <<<"$(cpu_ticks "$WORKER_PID")"
  sleep 20
  read -r u1 s1 <<<"$(cpu_ticks "$WORKER_PID")"
  stop
  echo "hothot idle with 1,000 origins: $(( (u1 - u0 + s1 - s0) * 1000 / TICK / 20 )) ms of CPU per second" \
    "(user $(( (u1 - u0) * 1000 / TICK / 20 )), sys $(( (s1 - s0) * 1000 / TICK / 20 )))"
fi

[ "$MEMORY" = 1 ] || exit 0
# Memory per idle keep-alive client connection: a fresh proxy, IDLE clients
# that each made one request and stay connected; the proxy's RSS growth over
# the connections. "at once": 512 requests in flight at a time; "one by one":
# one after another, as clients arrive over time.
idle_memory() { # run mode -> KiB per connection
  local holder before after
  start "$1"
  sleep 1
  before=$(rss_kib "$WORKER_PID")
  python3 scripts/hold_connections.py --port "$PROXY" --count "$IDLE" $2 >"$work/hold.out" &
  holder=$!
  for _ in $(seq 1200); do grep -q ready "$work/hold.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  after=$(rss_kib "$WORKER_PID")
  grep -q "ready $IDLE" "$work/hold.out" || echo "warning: $1: not every connection was made: $(cat "$work/hold.out")" >&2
  kill "$holder"; wait "$holder" 2>/dev/null || true
  stop
  echo "scale=1; ($after - $before) / $IDLE" | bc
}
echo
echo "Memory per idle keep-alive client connection ($IDLE connections, one request each; RSS growth)"
printf '| %-8s | %-14s | %-14s |\n' proxy "at once (KiB)" "one by one (KiB)"
printf '|%s|%s|%s|\n' ---------- ---------------- ----------------
for run in hothot nginx haproxy; do
  printf '| %-8s | %-14s | %-14s |\n' "$run" "$(idle_memory "$run" "")" "$(idle_memory "$run" --sequential)"
done

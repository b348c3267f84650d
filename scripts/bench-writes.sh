#!/usr/bin/env bash
# Write benchmark: PUTs through hothot to three replica origins (capacities
# 1000/800/600), for each configuration in MODES: first as many as
# CONNECTIONS clients can send (wrk: throughput, and latency at saturation),
# then at a fixed RATE of writes/s (oha: latency at equal load, which is what
# each configuration adds); then the time an origin takes to drain a backlog
# of BACKLOG writes after it comes back (order: total, async; hothot is
# restarted with the backlog pending, which stays on disk), with hothot's RSS.
# Loopback only; every process is stopped at the end.
#
#   scripts/bench-writes.sh [DURATION=10s] [CONNECTIONS=32] [BACKLOG=10000]
#   RATE=5000 (0 skips the fixed-rate runs; they need oha, installed if missing)
#   MODES="off version key total total-sync": replication off; async with
#   order version, key and total; total with sync quorum 1. (`async` and
#   `sync` are also accepted: order total.) `total-1down`: order total with
#   origin c killed for the whole run (restarted after it), the case of #24:
#   writes refused once c's backlog is full show as non-2xx.
#   `cluster1` and `cluster3`: two hothot instances in a cluster (#25) on an
#   etcd of one or three members (loopback, data under the scratch
#   directory), the clients split between them; order total, async. Their
#   CPU column is both instances' CPU per write; after the tables: etcd's
#   CPU per write over its members, writes per batch (one etcd transaction
#   each) and the mean append time, per run, and etcd's mean WAL fsync time.
#   `cluster1-linger2ms` (any duration after -linger): the same with
#   `cluster.linger` set.
#   A cluster is latency-bound at few connections (each write waits for
#   etcd's commit): compare at CONNECTIONS=128 too for its capacity.
#   HOTHOT=path/to/hothot (default target/release/hothot): the build measured.
#   The throughput table gives hothot's CPU time (utime + stime) per write.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNECTIONS=${2:-32}
BACKLOG=${3:-10000}
EXTRA_YAML=${EXTRA_YAML:-}     # appended under `replication:`, e.g. journal settings
MODES=${MODES:-off version key total total-sync}
THREADS=${THREADS:-2}           # hothot worker threads
RATE=${RATE:-5000}
BINARY=$(realpath "${HOTHOT:-target/release/hothot}")
source scripts/bench-lib.sh
bench_setup wrk curl
case " $MODES " in *" cluster"*) command -v etcd >/dev/null || scripts/install-test-deps.sh >&2 ;; esac
if [ "$RATE" != 0 ] && ! command -v oha >/dev/null; then
  cargo install oha --locked >&2
  export PATH="$HOME/.cargo/bin:$PATH"
fi

declare -A PORT REPLICA_PID
start_replica() {
  target/release/examples/replica --name "$1" --listen "127.0.0.1:${PORT[$1]}" 2>/dev/null &
  REPLICA_PID[$1]=$!; pids+=($!)
  wait_port "${PORT[$1]}"
}
for name in a b c; do PORT[$name]=$(free_port); start_replica "$name"; done

# etcd for the cluster modes: `size` members on loopback; sets ETCD_SERVERS.
declare -A ETCD_UP ETCD_PIDS ETCD_METRICS_OF
start_etcd() { # size
  [ -n "${ETCD_UP[$1]:-}" ] && { ETCD_SERVERS=${ETCD_UP[$1]}; ETCD_METRICS=${ETCD_METRICS_OF[$1]}; return 0; }
  local i cluster="" servers="" client peer
  declare -a clients peers
  for i in $(seq 0 $(($1 - 1))); do
    clients[$i]=$(free_port); peers[$i]=$(free_port)
    cluster+="${cluster:+,}m$i=http://127.0.0.1:${peers[$i]}"
    servers+="${servers:+, }\"http://127.0.0.1:${clients[$i]}\""
  done
  for i in $(seq 0 $(($1 - 1))); do
    client=${clients[$i]}; peer=${peers[$i]}
    etcd --name "m$i" --data-dir "$work/etcd-$1/m$i" --log-level error \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$cluster" --initial-cluster-token "bench-$1" --initial-cluster-state new \
      2>"$work/etcd-$1-m$i.log" &
    pids+=($!); ETCD_PIDS[$1]+="$! "
  done
  for i in $(seq 0 $(($1 - 1))); do wait_port "${clients[$i]}"; done
  ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:${clients[0]}" endpoint health >/dev/null 2>&1 ||
    sleep 2
  ETCD_METRICS="http://127.0.0.1:${clients[0]}/metrics"; ETCD_METRICS_OF[$1]=$ETCD_METRICS
  ETCD_UP[$1]=$servers; ETCD_SERVERS=$servers
}

# One hothot instance on a fresh config named $2 in $work (ports in PROXY,
# METRICS; pid in HOTHOT_PID); $3: more YAML at the top level.
launch_hothot() { # mode order name [extra]
  PROXY=$(free_port); METRICS=$(free_port)
  cat >"$work/$3.yaml" <<YAML
server: {threads: $THREADS}
listen: ["127.0.0.1:$PROXY"]
metrics: {listen: "127.0.0.1:$METRICS"}
origins:
  - {name: a, address: "127.0.0.1:${PORT[a]}", capacity: 1000}
  - {name: b, address: "127.0.0.1:${PORT[b]}", capacity: 800}
  - {name: c, address: "127.0.0.1:${PORT[c]}", capacity: 600}
health: {interval: 200ms, timeout: 200ms, rise: 1, fall: 1}
replication:
  mode: $1
  order: $2
  quorum: 1
  timeout: 2s
  retry: {initial: 10ms, max: 200ms}
$EXTRA_YAML
${4:-}
YAML
  (cd "$work" && RUST_LOG=warn exec "$BINARY" -c "$work/$3.yaml") &
  HOTHOT_PID=$!; pids+=($!)
  wait_port "$PROXY"
}

start_hothot() { # configuration name, see MODES
  local mode=async order=total
  INSTANCES=1; SECOND_PID=""
  case "$1" in
    off) mode=off ;;
    version | key | total) order=$1 ;;
    total-1down) ;;
    total-sync | sync) mode=sync ;;
    async) ;;
    cluster1 | cluster3 | cluster1-linger* | cluster3-linger*) INSTANCES=2 ;;
    *) echo "unknown configuration $1" >&2; return 1 ;;
  esac
  if [ "$INSTANCES" = 1 ]; then
    launch_hothot "$mode" "$order" hothot
    return
  fi
  local size=${1:7:1} linger=""
  case "$1" in *-linger*) linger=", linger: ${1#*-linger}" ;; esac
  start_etcd "$size"
  local name=run$RANDOM
  launch_hothot "$mode" "$order" "$name-hh1" \
    "cluster: {servers: [$ETCD_SERVERS], name: $name, instance: hh1, listen: \"127.0.0.1:$(free_port)\", lease: 2s$linger}"
  SECOND_PID=$HOTHOT_PID; SECOND_PROXY=$PROXY; SECOND_METRICS=$METRICS
  launch_hothot "$mode" "$order" "$name-hh2" \
    "cluster: {servers: [$ETCD_SERVERS], name: $name, instance: hh2, listen: \"127.0.0.1:$(free_port)\", lease: 2s$linger}"
  # Both hold their share of the origins before the load starts.
  for _ in $(seq 100); do
    [ "$(curl -s "http://127.0.0.1:$METRICS/metrics" | grep -c '^hothot_cluster_leases.* 1$')" -ge 1 ] &&
      [ "$(curl -s "http://127.0.0.1:$SECOND_METRICS/metrics" | grep -c '^hothot_cluster_leases.* 1$')" -ge 1 ] && break
    sleep 0.1
  done
}
stop_hothot() {
  local pid
  for pid in "$HOTHOT_PID" ${SECOND_PID:-}; do kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
cpu_ticks() { # every instance's
  local pid t=0
  for pid in "$HOTHOT_PID" ${SECOND_PID:-}; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo $t
}
TICK=$(getconf CLK_TCK)
# Where a cluster's time goes (#25): etcd's CPU ticks over its members,
# the batches it stored (one key each; every member applies each), and
# the instances' appends (count, seconds).
cluster_snapshot() { # mode -> "etcd_ticks batches appends append_seconds"
  local size=${1:7:1} pid t=0 port
  for pid in ${ETCD_PIDS[$size]}; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  local batches
  batches=$(curl -s "$ETCD_METRICS" | awk '$1=="etcd_mvcc_put_total" {print $2}')
  local appends
  appends=$(for port in "$METRICS" "$SECOND_METRICS"; do curl -s "http://127.0.0.1:$port/metrics"; done |
    awk '$1=="hothot_cluster_append_seconds_count" {n += $2} $1=="hothot_cluster_append_seconds_sum" {s += $2}
      END {printf "%d %.6f", n, s}')
  echo "$t ${batches:-0} $appends"
}
cluster_costs() { # mode before after -> one line
  read -r t0 b0 n0 s0 <<<"$2"; read -r t1 b1 n1 s1 <<<"$3"
  local n=$((n1 - n0)) b=$((b1 - b0))
  [ "$n" -gt 0 ] && [ "$b" -gt 0 ] || return 0
  printf '%-10s etcd CPU %s us/write (all members), %s writes per batch, append %s ms on average\n' "$1" \
    "$(echo "scale=1; ($t1 - $t0) * 1000000 / $TICK / $n" | bc)" "$(echo "scale=1; $n / $b" | bc)" \
    "$(echo "scale=2; ($s1 - $s0) * 1000 / $n" | bc)"
}
costs=()
pending_total() { # every instance's
  local t=0 v p port
  for port in "$METRICS" ${SECOND_PID:+$SECOND_METRICS}; do
    for p in a b c; do
      v=$(curl -s "http://127.0.0.1:$port/metrics" | awk -v s="hothot_replication_pending{peer=\"$p\"}" '$1==s {print $2}')
      t=$((t + ${v:-0}))
    done
  done
  echo $t
}

# One peer round trip: a single connection writing straight to a replica.
wrk -t1 -c1 -d3s --latency -s scripts/put.lua "http://127.0.0.1:${PORT[a]}/" >"$work/rtt.txt"
rtt=$(awk '$1=="50%" {print $2}' "$work/rtt.txt")

# total-1down runs with c down; it comes back after the run.
before_run() {
  [ "$1" = total-1down ] || return 0
  kill "${REPLICA_PID[c]}"; wait "${REPLICA_PID[c]}" 2>/dev/null || true
  sleep 0.5
}
after_run() { [ "$1" = total-1down ] && start_replica c || true; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$HOTHOT_PID/status"; }

results=()
for mode in $MODES; do
  start_hothot "$mode"
  before_run "$mode"
  [ -n "${SECOND_PID:-}" ] && etcd_before=$(cluster_snapshot "$mode")
  before=$(cpu_ticks)
  if [ -z "${SECOND_PID:-}" ]; then
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s scripts/put.lua "http://127.0.0.1:$PROXY/" >"$work/$mode.txt"
    writes=$(awk '/requests in/ {print $1}' "$work/$mode.txt")
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/$mode.txt")
    p50=$(awk '$1=="50%" {print $2}' "$work/$mode.txt")
    p99=$(awk '$1=="99%" {print $2}' "$work/$mode.txt")
    errors=$(awk '/Non-2xx/ {print $5}' "$work/$mode.txt")
  else # half the clients through each instance; the worse latency of the two
    wrk -t1 -c$((CONNECTIONS / 2)) -d"$DURATION" --latency -s scripts/put.lua "http://127.0.0.1:$PROXY/" >"$work/$mode.txt" &
    first=$!
    wrk -t1 -c$((CONNECTIONS / 2)) -d"$DURATION" --latency -s scripts/put.lua "http://127.0.0.1:$SECOND_PROXY/" >"$work/$mode-2.txt"
    wait "$first"
    writes=$(cat "$work/$mode.txt" "$work/$mode-2.txt" | awk '/requests in/ {n += $1} END {print n}')
    rps=$(cat "$work/$mode.txt" "$work/$mode-2.txt" | awk '/Requests\/sec/ {n += $2} END {printf "%.2f", n}')
    p50=$(awk '$1=="50%" {print $2}' "$work/$mode.txt" "$work/$mode-2.txt" | sort -h | tail -1)
    p99=$(awk '$1=="99%" {print $2}' "$work/$mode.txt" "$work/$mode-2.txt" | sort -h | tail -1)
    errors=$(cat "$work/$mode.txt" "$work/$mode-2.txt" | awk '/Non-2xx/ {n += $5} END {print n + 0}')
  fi
  after=$(cpu_ticks)
  [ -n "${SECOND_PID:-}" ] && costs+=("$(cluster_costs "$mode" "$etcd_before" "$(cluster_snapshot "$mode")")")
  cpu=$(echo "scale=1; ($after - $before) * 1000000 / $TICK / $writes" | bc)
  left=$(pending_total)
  rss=$(rss_mib)
  after_run "$mode"
  results+=("$(printf '%-11s %12s %10s %10s %10s %14s %10s %8s' "$mode" "$rps" "$p50" "$p99" "${errors:-0}" "$left" "$cpu" "$rss")")
  for _ in $(seq 600); do [ "$(pending_total)" -eq 0 ] && break; sleep 0.1; done
  stop_hothot
done

# The same modes at a fixed rate (latency corrected for coordinated omission).
fixed=()
if [ "$RATE" != 0 ]; then
  for mode in $MODES; do
    start_hothot "$mode"
    before_run "$mode"
    outputs=("$work/$mode.json")
    before=$(cpu_ticks)
    if [ -z "${SECOND_PID:-}" ]; then
      oha -z "$DURATION" -c "$CONNECTIONS" -q "$RATE" --latency-correction --no-tui --output-format json \
        -m PUT -d value --rand-regex-url "http://127.0.0.1:$PROXY/kv/key[0-9]{3}" >"$work/$mode.json"
    else # half the rate through each instance
      etcd_before=$(cluster_snapshot "$mode")
      loads=()
      for port in "$PROXY" "$SECOND_PROXY"; do
        oha -z "$DURATION" -c $((CONNECTIONS / 2)) -q $((RATE / 2)) --latency-correction --no-tui --output-format json \
          -m PUT -d value --rand-regex-url "http://127.0.0.1:$port/kv/key[0-9]{3}" >"$work/$mode-$port.json" &
        loads+=($!)
      done
      wait "${loads[@]}"
      outputs=("$work/$mode-$PROXY.json" "$work/$mode-$SECOND_PROXY.json")
      costs+=("$(cluster_costs "$mode@$RATE" "$etcd_before" "$(cluster_snapshot "$mode")")")
    fi
    cpu_seconds=$(echo "scale=6; ($(cpu_ticks) - $before) / $TICK" | bc)
    fixed+=("$(python3 - "$mode" "$cpu_seconds" "${outputs[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[3:]]
rate = sum(d["summary"]["requestsPerSec"] for d in runs)
answered = sum(d["summary"]["requestsPerSec"] * d["summary"]["total"] for d in runs)
worst = lambda q: max(d["latencyPercentiles"][q] for d in runs)
other = sum(n for d in runs for c, n in d.get("statusCodeDistribution", {}).items() if not c.startswith("2"))
cpu = float(sys.argv[2]) * 1e6 / answered if answered else 0
print("%-10s %12.0f %10s %10s %10s %10d %10.1f" % (sys.argv[1], rate,
      "%.2fms" % (worst("p50") * 1e3), "%.2fms" % (worst("p99") * 1e3), "%.2fms" % (worst("p99.9") * 1e3), other, cpu))
PY
)")
    after_run "$mode"
    for _ in $(seq 600); do [ "$(pending_total)" -eq 0 ] && break; sleep 0.1; done
    stop_hothot
  done
fi

# Backlog drain: c is down while BACKLOG writes arrive; hothot restarts
# (the backlog stays on disk, not in memory); then c comes back.
start_hothot total
kill "${REPLICA_PID[c]}"; wait "${REPLICA_PID[c]}" 2>/dev/null || true
sleep 0.5
idle_rss=$(rss_mib)
python3 scripts/write_burst.py --port "$PROXY" --count "$BACKLOG"
backlog=$(metric 'hothot_replication_pending{peer="c"}')
behind_rss=$(rss_mib)
stop_hothot
start_hothot total
sleep 1
restart_rss=$(rss_mib)
start=$(date +%s.%N)
start_replica c
until [ "$(metric 'hothot_replication_pending{peer="c"}')" = "0" ]; do sleep 0.01; done
drain=$(echo "$(date +%s.%N) - $start" | bc)
stop_hothot

echo
echo "PUT throughput through hothot to 3 replicas, wrk -t2 -c$CONNECTIONS -d$DURATION ${EXTRA_YAML:+($EXTRA_YAML)}"
printf '%-11s %12s %10s %10s %10s %14s %10s %8s\n' mode requests/s p50 p99 non-2xx "pending at end" "CPU us/w" "RSS MiB"
printf '%s\n' "${results[@]}"
if [ ${#fixed[@]} -gt 0 ]; then
  echo
  echo "The same at a fixed $RATE writes/s, oha -c$CONNECTIONS -z$DURATION --latency-correction"
  printf '%-10s %12s %10s %10s %10s %10s %10s\n' mode requests/s p50 p99 p99.9 non-2xx "CPU us/w"
  printf '%s\n' "${fixed[@]}"
fi
echo "peer round trip (one connection, PUT straight to a replica, p50): $rtt"
if [ ${#costs[@]} -gt 0 ]; then
  echo "Where a cluster's time goes (throughput runs, then fixed-rate runs as mode@rate):"
  printf '%s\n' "${costs[@]}"
fi
if [ -n "${ETCD_METRICS:-}" ]; then
  curl -s "$ETCD_METRICS" | awk '/^etcd_disk_wal_fsync_duration_seconds_(sum|count)/ {v[$1] = $2}
    END {if (v["etcd_disk_wal_fsync_duration_seconds_count"] > 0)
      printf "etcd (the last cluster started): %d WAL fsyncs, %.2f ms each on average\n",
        v["etcd_disk_wal_fsync_duration_seconds_count"],
        1000 * v["etcd_disk_wal_fsync_duration_seconds_sum"] / v["etcd_disk_wal_fsync_duration_seconds_count"]}'
fi
printf 'backlog of %s writes to a recovered peer drained in %.2f s (%.0f writes/s), after a restart\n' \
  "$backlog" "$drain" "$(echo "$backlog / $drain" | bc)"
printf 'hothot RSS: %s MiB with c down and nothing pending, %s MiB with the backlog pending, %s MiB after a restart with it pending\n' \
  "$idle_rss" "$behind_rss" "$restart_rss"

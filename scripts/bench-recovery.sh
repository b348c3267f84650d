#!/usr/bin/env bash
# Recovery time of a journal holding PENDING undelivered writes: one peer is
# down while writes arrive, hothot is killed with SIGKILL, then started again;
# reports how long reading the journal took (from hothot's log) and how long
# until hothot listened again. Loopback only; everything is stopped at the end.
#
#   scripts/bench-recovery.sh [PENDING=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
PENDING=${1:-100000}
source scripts/bench-lib.sh
bench_setup wrk curl

A=$(free_port); B=$(free_port); PROXY=$(free_port); METRICS=$(free_port)
target/release/examples/replica --name a --listen "127.0.0.1:$A" 2>/dev/null &
pids+=($!)
wait_port "$A"
cat >"$work/hothot.yaml" <<YAML
server: {threads: 2}
listen: ["127.0.0.1:$PROXY"]
metrics: {listen: "127.0.0.1:$METRICS"}
origins:
  - {name: a, address: "127.0.0.1:$A", capacity: 1}
  - {name: b, address: "127.0.0.1:$B", capacity: 0}
replication:
  max_pending: $((PENDING * 2))
  journal: {dir: $work/journal, fsync: interval}
YAML
start() { (cd "$work" && RUST_LOG=info exec "$OLDPWD/target/release/hothot" -c "$work/hothot.yaml" 2>>"$work/hothot.log") & HOTHOT=$!; pids+=($HOTHOT); }
start
wait_port "$PROXY"
# b never comes up: every write stays pending for it.
until [ "$(metric 'hothot_replication_pending{peer="b"}')" -ge "$PENDING" ] 2>/dev/null; do
  wrk -t2 -c32 -d2s -s scripts/put.lua "http://127.0.0.1:$PROXY/" >/dev/null
done
pending=$(metric 'hothot_replication_pending{peer="b"}')
bytes=$(metric 'hothot_journal_bytes')
kill -KILL "$HOTHOT"; wait "$HOTHOT" 2>/dev/null || true
began=$(date +%s.%N)
start
wait_port "$PROXY"
listening=$(echo "$(date +%s.%N) - $began" | bc)
recovered=$(metric 'hothot_replication_pending{peer="b"}')
echo
grep 'journal: read' "$work/hothot.log" | tail -1
printf 'journal of %s pending writes (%s bytes) after SIGKILL: %s pending again; listening %.2f s after restart\n' \
  "$pending" "$bytes" "$recovered" "$listening"

#!/usr/bin/env bash
# Throughput and p99 of the same bench servers built from two trees, interleaved in one run: each
# server alone on CPU 0 (one runtime thread), wrk -t1 -c16 on CPU 1, 2 s warm-up then 8 s
# measured, ROUNDS rounds (default 3) in the order before/after per server. Loopback only; every
# wrk run is bounded by -d and `timeout`, every server killed after its run.
#
#   BEFORE=/path/to/old/target/release AFTER=benches/http/target/release \
#     SERVERS="axum-gpe actix-gpe" bash benches/http/before_after.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
need_tools before_after.sh wrk taskset python3 curl
: "${BEFORE:?the old tree's release directory}" "${AFTER:?the new tree's release directory}"
SERVERS="${SERVERS:-axum-gpe actix-gpe}"
ROUNDS="${ROUNDS:-3}"
echo "round server tree req/s p99"
for round in $(seq 1 "$ROUNDS"); do
  for s in $SERVERS; do
    for tree in before after; do
      dir="$BEFORE"; [ "$tree" = after ] && dir="$AFTER"
      port="$(free_port)"
      store="$(mktemp -d)"
      BIND="127.0.0.1:$port" PROMETHEUS_MULTIPROC_DIR="$store" RUST_LOG=warn \
        taskset -c 0 "$dir/$s" --workers-threads 1 >/dev/null 2>&1 &
      server_pid=$!
      wait_ready "$port"
      timeout 12 taskset -c "$(wrk_cpus)" wrk -t1 -c16 -d2s "http://127.0.0.1:$port/" >/dev/null
      out="$(timeout 20 taskset -c "$(wrk_cpus)" wrk -t1 -c16 -d8s --latency "http://127.0.0.1:$port/")"
      echo "$round $s $tree $(awk '/Requests\/sec/ { print $2 }' <<<"$out") $(awk '$1 == "99%" { print $2 }' <<<"$out")"
      kill -KILL "$server_pid"; wait "$server_pid" 2>/dev/null || true
      server_pid=""
      rm -rf "$store"
    done
  done
done

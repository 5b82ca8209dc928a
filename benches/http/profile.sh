#!/usr/bin/env bash
# Where a gpe server's CPU goes under load: each server of benches/http on one pinned core
# (CPU 0), loaded by wrk on the other core(s), sampled with `perf record -e cpu-clock` (a
# software clock: this kind of VM exposes no hardware counters) for PERF_SECONDS; the report
# splits the samples into kernel, gpe's own code (gpe_core, gpe_tower, gpe_actix and the quanta
# clock, self time: code inlined into framework functions is not counted, so this is a lower
# bound) and other user code. Unlike a throughput ratio, that share does not move with the
# machine's noise from round to round.
#
#   bash benches/http/profile.sh            # needs perf (Debian: linux-perf), wrk
#
# Environment: SERVERS (default "axum-gpe actix-gpe"), PATHS (default "/ /users/42"),
# SYMBOLS=1 (also list gpe's largest symbols, on stderr),
# PERF_SECONDS (default 4), CONNECTIONS (default 32). Network: loopback only; every run is
# bounded by timeouts and the server is killed after it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SERVERS="${SERVERS:-axum-gpe actix-gpe}"
PATHS="${PATHS:-/ /users/42}"
PERF_SECONDS="${PERF_SECONDS:-4}"
CONNECTIONS="${CONNECTIONS:-32}"
# shellcheck source=lib.sh
source "$here/lib.sh"
need_tools profile.sh perf wrk taskset python3 curl
[ "$(nproc)" -ge 2 ] || { echo "profile.sh needs 2 cores (server and wrk apart)" >&2; exit 1; }

(cd "$here" && cargo build --release -q)
bin="$here/target/release"
work="$(mktemp -d /tmp/gpe-profile.XXXXXX)"
server_pid=""
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
port="$(free_port)"

echo "| server | path | kernel | gpe + quanta (self) | other user code |"
echo "|---|---|---:|---:|---:|"
for srv in $SERVERS; do
  for path in $PATHS; do
    mkdir -p "$work/store"
    BIND="127.0.0.1:$port" PROMETHEUS_MULTIPROC_DIR="$work/store" RUST_LOG=warn \
      taskset -c 0 "$bin/$srv" --workers-threads 1 >"$work/server.log" 2>&1 &
    server_pid=$!
    wait_ready "$port" || { cat "$work/server.log" >&2; exit 1; }
    taskset -c "$(wrk_cpus)" timeout $((PERF_SECONDS + 20)) \
      wrk -t2 -c"$CONNECTIONS" -d"$((PERF_SECONDS + 3))s" "http://127.0.0.1:$port$path" >"$work/wrk.txt" &
    wrk_pid=$!
    sleep 1.5
    timeout $((PERF_SECONDS + 10)) perf record -q -e cpu-clock -F 4000 -p "$server_pid" -o "$work/perf.data" \
      -- sleep "$PERF_SECONDS" >/dev/null 2>&1
    wait "$wrk_pid"
    stop_server
    perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
      awk -v srv="$srv" -v path="$path" '
        /^ +[0-9.]+%/ {
          pct = $1; sub("%", "", pct); dso = $2
          if (dso ~ /kallsyms/) k += pct
          else if ($0 ~ /gpe_core|gpe_tower|gpe_actix|quanta::/) g += pct
          else u += pct
        }
        END { printf "| %s | %s | %.1f %% | %.1f %% | %.1f %% |\n", srv, path, k, g, u }'
    if [ "${SYMBOLS:-0}" = 1 ]; then
      # gpe's own symbols at 0.3 % of the samples or more, largest first.
      perf report -i "$work/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
        awk '/^ +[0-9.]+%/ && /gpe_core|gpe_tower|gpe_actix|quanta::/ && $1 + 0 >= 0.3 {
          pct = $1; $1 = ""; $2 = ""; printf "    %s %s\n", pct, substr($0, 1, 110) }' >&2
    fi
    rm -rf "$work/store" "$work/perf.data"
  done
done

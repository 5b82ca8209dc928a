#!/usr/bin/env bash
# Instructions per request: each server of benches/http under valgrind's callgrind, which counts
# the user-space instructions the server executes (not time: the count is the same whatever else
# the machine is doing, so an A/B of two servers does not move with the VM's noise as wrk does).
# Per server: start it under callgrind, warm it up with WARM_REQUESTS, zero the counters, send
# exactly REQUESTS keep-alive GETs over CONNECTIONS connections (fixed_load.py), dump, and divide.
# The report gives each pair's extra instructions per request and their share of the bare
# server's; the kernel's part of a request (loopback TCP, 55-65 % of a server's CPU samples in
# profile.sh) is not counted by callgrind and is the same with and without gpe.
#
#   bash benches/http/instructions.sh            # needs valgrind, python3, curl
#
# Environment: SERVERS (default: the bare/gpe/prom servers of axum and actix-web), PATHS
# (default "/ /users/42"), REQUESTS (default 4000), WARM_REQUESTS (default 500), CONNECTIONS
# (default 1: one request at a time makes the count repeatable to a few instructions; with 4,
# how requests batch in the event loop moves it by about 0.5 %), TOP=N (also list the N
# functions with the most self instructions per request in each gpe server, on stderr),
# KEEP_DUMPS=DIR (keep each server's callgrind dump there, as SERVER_PATH.callgrind, for
# callgrind_annotate or a function-by-function diff). Network: loopback only; every server is
# killed after its run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SERVERS="${SERVERS:-axum-bare axum-gpe axum-prom actix-bare actix-gpe actix-prom}"
PATHS="${PATHS:-/ /users/42}"
REQUESTS="${REQUESTS:-4000}"
WARM_REQUESTS="${WARM_REQUESTS:-500}"
CONNECTIONS="${CONNECTIONS:-1}"
TOP="${TOP:-0}"
KEEP_DUMPS="${KEEP_DUMPS:-}"
# shellcheck source=lib.sh
source "$here/lib.sh"
need_tools instructions.sh valgrind callgrind_control callgrind_annotate python3 curl

(cd "$here" && cargo build --release -q)
bin="$here/target/release"
work="$(mktemp -d /tmp/gpe-instructions.XXXXXX)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

results="$work/results.tsv"
: >"$results"
echo "valgrind $(valgrind --version | sed 's/valgrind-//'), $REQUESTS requests per server over $CONNECTIONS keep-alive connections after $WARM_REQUESTS warm-up requests" >&2
for path in $PATHS; do
  for srv in $SERVERS; do
    port="$(free_port)"
    store="$work/store-$srv"
    mkdir -p "$store"
    out="$work/cg-$srv.out"
    BIND="127.0.0.1:$port" PROMETHEUS_MULTIPROC_DIR="$store" RUST_LOG=warn \
      valgrind -q --tool=callgrind --callgrind-out-file="$out" --dump-instr=no \
      "$bin/$srv" --workers-threads 1 >"$work/$srv.log" 2>&1 &
    server_pid=$!
    wait_ready "$port" 120 || { cat "$work/$srv.log" >&2; exit 1; }
    timeout 600 python3 "$here/fixed_load.py" "$port" "$path" "$WARM_REQUESTS" "$CONNECTIONS"
    callgrind_control -z "$server_pid" >/dev/null 2>&1
    timeout 1200 python3 "$here/fixed_load.py" "$port" "$path" "$REQUESTS" "$CONNECTIONS"
    callgrind_control -d "$server_pid" >/dev/null 2>&1
    # The dump is written asynchronously; wait (bounded) for it.
    dump=""
    for _ in $(seq 1 300); do
      dump="$(ls "$out".* 2>/dev/null | head -n1 || true)"
      [ -n "$dump" ] && grep -q '^totals:' "$dump" 2>/dev/null && break
      sleep 0.1
    done
    [ -n "$dump" ] || { echo "no callgrind dump from $srv" >&2; exit 1; }
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    total="$(awk '/^totals:/ { print $2 }' "$dump")"
    per="$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", t / n }')"
    printf '%s\t%s\t%s\n' "$srv" "$path" "$per" >>"$results"
    printf '  %-12s %-10s %8s instructions per request\n' "$srv" "$path" "$per" >&2
    if [ "$TOP" -gt 0 ] && [[ "$srv" == *-gpe ]]; then
      # callgrind_annotate also lists the thread's entry frames (the runtime's block_on and the
      # functions around it) at their inclusive cost, 99-100 %; they are skipped.
      callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null |
        awk -v n="$REQUESTS" -v top="$TOP" '
          /^ *[0-9,]+ \( *[0-9.]+%\)/ && shown < top && !/PROGRAM TOTALS/ {
            pct = $0; sub(/^[^(]*\( */, "", pct); sub(/%.*/, "", pct)
            if (pct + 0 > 50) next
            ir = $1; gsub(",", "", ir)
            name = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, "", name)
            printf "    %8.1f  %s\n", ir / n, substr(name, 1, 120); shown++ }' >&2
    fi
    if [ -n "$KEEP_DUMPS" ]; then
      mkdir -p "$KEEP_DUMPS"
      cp "$dump" "$KEEP_DUMPS/$srv$(echo "$path" | tr '/' '_').callgrind"
    fi
    rm -rf "$store" "$out" "$out".*
  done
done

python3 - "$results" <<'PY'
import sys
per = {}
for line in open(sys.argv[1]):
    srv, path, n = line.rstrip("\n").split("\t")
    per[(srv, path)] = int(n)
print()
print("| server | path | instructions per request | over bare | share of bare |")
print("|---|---|---:|---:|---:|")
for (srv, path), n in per.items():
    bare = per.get((srv.rsplit("-", 1)[0] + "-bare", path))
    if bare is None or srv.endswith("-bare"):
        print(f"| {srv} | `{path}` | {n:,} | | |")
    else:
        print(f"| {srv} | `{path}` | {n:,} | {n - bare:+,} | {100 * (n - bare) / bare:+.1f} % |")
PY

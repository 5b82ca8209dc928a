#!/usr/bin/env bash
# Whole-server benchmarks: hello-world axum and actix-web servers, bare / with gpe / with the usual
# Prometheus middleware (axum-prometheus, actix-web-prom), loaded with wrk on loopback; then 4
# axum-gpe workers under gpe-master against one axum-gpe process with 4 runtime threads, and
# (issue 5) 4 workers under gpe-master with Redis sync on against 4 bare workers without metrics
# (a private redis-server on a free loopback port).
#
#   bash benches/http/run.sh            # from the repository root (or from anywhere)
#
# Environment: ROUNDS (default 2: every server is run ROUNDS times, interleaved, and the median
# round is reported), DURATION (wrk seconds, default 10), WARMUP (seconds, default 2),
# CONNECTIONS (default 32), PIN (default 1 on 2+ cores: the one-thread servers run on CPU 0 and
# wrk on the others, so that load generator and server do not take each other's core),
# ONLY (space-separated server names, e.g. ONLY="actix-bare actix-gpe": run just those),
# BENCH_TARGET_DIR (where the main workspace's gpe-master is built,
# default <root>/target-bench). Every wrk run is bounded by -d and by `timeout`; every server is
# killed after its run. Network: loopback only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
PIN="${PIN:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}"
BENCH_TARGET_DIR="${BENCH_TARGET_DIR:-$root/target-bench}"

# shellcheck source=lib.sh
source "$here/lib.sh"

# --- tools -----------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian)" >&2
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
need_tools run.sh curl python3 redis-server redis-cli

# --- build -----------------------------------------------------------------------------------
echo "building the servers (benches/http) and gpe-master (release)..." >&2
(cd "$here" && cargo build --release -q)
(cd "$root" && CARGO_TARGET_DIR="$BENCH_TARGET_DIR" cargo build --release -q -p gpe-master)
bin="$here/target/release"
master="$BENCH_TARGET_DIR/release/gpe-master"

# --- helpers ---------------------------------------------------------------------------------
work="$(mktemp -d /tmp/gpe-http-bench.XXXXXX)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -INT "$server_pid" 2>/dev/null || true
    sleep 0.3
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A private redis-server for the Redis-sync run (loopback, free port, nothing on disk).
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; cleanup' EXIT
for i in $(seq 1 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$redis_port" ping >/dev/null || { echo "redis-server did not start" >&2; exit 1; }


# wrk's latency text (e.g. 812.00us, 1.23ms, 2.01s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n = n / 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n = n * 60000; else if (v ~ /s$/) n = n * 1000
    printf "%.3f", n }'
}

# Sum of gunicorn_worker_requests_total in a text exposition on stdin.
sum_exposition() {
  awk '/^gunicorn_worker_requests_total[{ ]/ { s += $NF } END { printf "%.0f", s + 0 }'
}

# gpe's request count right now, for the server being measured: $1 = "dir:PATH" (read the store
# files) or "url:URL" (scrape gpe-master's /metrics).
gpe_count() {
  case "$1" in
    dir:*) "$bin/gpe-sum" "${1#dir:}" | awk '{ printf "%.0f", $1 }' ;;
    url:*) curl -fsS --max-time 5 "${1#url:}" | sum_exposition ;;
  esac
}

declare -A RPS P99 REQS CHECK
clk_tck="$(getconf CLK_TCK)"

results="$work/results.tsv"
: >"$results"

# run_one NAME ROUND CHECK_SOURCE -- COMMAND... : start, warm up, measure, verify, stop.
# URL_PATH (default /) is the path loaded; PIN_SERVER=1 pins the server to CPU 0 (see PIN).
run_one() {
  local name="$1" round="$2" source="$3"
  shift 4
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local path="${URL_PATH:-/}"
  local server_cpu=() wrk_cpu=()
  if [ "$PIN" = 1 ] && [ "${PIN_SERVER:-0}" = 1 ]; then
    server_cpu=(taskset -c 0)
    wrk_cpu=(taskset -c "$(wrk_cpus)")
  fi
  local port
  port="$(free_port)"
  local store="$work/store-$name-$round"
  mkdir -p "$store"
  local mport
  mport="$(free_port)"
  # The command may use @PORT@, @MPORT@ and @STORE@.
  local cmd=() a
  for a in "$@"; do
    a="${a//@PORT@/$port}"
    a="${a//@MPORT@/$mport}"
    a="${a//@STORE@/$store}"
    cmd+=("$a")
  done
  source="${source//@MPORT@/$mport}"
  source="${source//@STORE@/$store}"
  BIND="127.0.0.1:$port" PROMETHEUS_MULTIPROC_DIR="$store" RUST_LOG=warn \
    "${server_cpu[@]}" "${cmd[@]}" >"$work/$name-$round.log" 2>&1 &
  server_pid=$!
  if ! wait_ready "$port"; then
    cat "$work/$name-$round.log" >&2
    stop_server
    return 1
  fi
  timeout $((WARMUP + 10)) "${wrk_cpu[@]}" wrk -t2 -c"$CONNECTIONS" -d"${WARMUP}s" "http://127.0.0.1:$port$path" >/dev/null
  local before=0
  [ "$source" = "-" ] || before="$(gpe_count "$source")"
  local out="$work/$name-$round.wrk"
  local cpu_before cpu_after
  cpu_before="$(cpu_ticks "$server_pid")"
  timeout $((DURATION + 20)) "${wrk_cpu[@]}" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    "http://127.0.0.1:$port$path" >"$out"
  cpu_after="$(cpu_ticks "$server_pid")"
  local rps reqs p99 errors
  rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
  reqs="$(awk '/requests in/ { print $1 }' "$out")"
  p99="$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
  errors="$(awk '/Non-2xx|Socket errors/ { print }' "$out" | tr '\n' ' ')"
  # Server CPU time per request in microseconds: what the server spent, whatever else ran.
  local cpu_us
  cpu_us="$(awk -v t=$((cpu_after - cpu_before)) -v hz="$clk_tck" -v n="$reqs" 'BEGIN { printf "%.3f", t * 1e6 / hz / n }')"
  local check="-"
  if [ "$source" != "-" ]; then
    sleep 0.2 # let the last in-flight responses finish
    local after recorded
    after="$(gpe_count "$source")"
    recorded=$((after - before))
    if [ "$recorded" -ge "$reqs" ]; then check="ok: gpe counted $recorded ≥ wrk $reqs"
    else check="MISMATCH: gpe counted $recorded < wrk $reqs"; fi
  fi
  stop_server
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$rps" "$p99" "$reqs" "$check" "$cpu_us" >>"$results"
  printf '  %-22s round %s: %10s req/s  p99 %8s ms  %7s us CPU/req  %s %s\n' "$name" "$round" "$rps" "$p99" "$cpu_us" "$check" "$errors" >&2
}

# --- the runs --------------------------------------------------------------------------------
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2/1048576 }' /proc/meminfo); load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "wrk -t2 -c$CONNECTIONS -d${DURATION}s --latency, warm-up ${WARMUP}s, $ROUNDS round(s), order interleaved, PIN=$PIN" >&2
started=$SECONDS
for round in $(seq 1 "$ROUNDS"); do
  export PIN_SERVER=1
  run_one axum-bare "$round" - -- "$bin/axum-bare" --workers-threads 1
  run_one axum-gpe "$round" "dir:@STORE@" -- "$bin/axum-gpe" --workers-threads 1
  run_one axum-prom "$round" - -- "$bin/axum-prom" --workers-threads 1
  run_one actix-bare "$round" - -- "$bin/actix-bare" --workers-threads 1
  run_one actix-gpe "$round" "dir:@STORE@" -- "$bin/actix-gpe" --workers-threads 1
  run_one actix-prom "$round" - -- "$bin/actix-prom" --workers-threads 1
  # A route with a parameter, where a middleware that matches the route itself pays for it.
  export URL_PATH=/users/42
  run_one actix-bare-param "$round" - -- "$bin/actix-bare" --workers-threads 1
  run_one actix-gpe-param "$round" "dir:@STORE@" -- "$bin/actix-gpe" --workers-threads 1
  run_one actix-prom-param "$round" - -- "$bin/actix-prom" --workers-threads 1
  export URL_PATH=/ PIN_SERVER=0
  run_one axum-gpe-4threads "$round" "dir:@STORE@" -- "$bin/axum-gpe" --workers-threads 4
  run_one master-4x-axum-gpe "$round" "url:http://127.0.0.1:@MPORT@/metrics" -- \
    "$master" --workers 4 --bind "127.0.0.1:@PORT@" --metrics-bind "127.0.0.1:@MPORT@" \
    --log-level warning "$bin/axum-gpe" --workers-threads 1
  # Issue 5: the same with the master syncing to Redis, against no metrics at all.
  run_one master-4x-axum-bare "$round" - -- \
    "$master" --workers 4 --bind "127.0.0.1:@PORT@" --no-metrics \
    --log-level warning "$bin/axum-bare" --workers-threads 1
  run_one master-4x-axum-gpe-redis "$round" "url:http://127.0.0.1:@MPORT@/metrics" -- \
    env REDIS_ENABLED=true REDIS_URL="redis://127.0.0.1:$redis_port/0" GPE_HOST_ID="bench-$round" \
    "$master" --workers 4 --bind "127.0.0.1:@PORT@" --metrics-bind "127.0.0.1:@MPORT@" \
    --log-level warning "$bin/axum-gpe" --workers-threads 1
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- the report ------------------------------------------------------------------------------
python3 - "$results" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$load_after" "$((SECONDS - started))" <<'PY'
import statistics, sys
path, rounds, duration, conns, load_after, elapsed = sys.argv[1:]
rows = {}
checks = []
cpu = {}
for line in open(path):
    name, rnd, rps, p99, reqs, check, cpu_us = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((float(rps), float(p99)))
    cpu.setdefault(name, []).append(float(cpu_us))
    if check != "-":
        checks.append(f"{name} round {rnd}: {check}")
med = {n: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for n, v in rows.items()}
mcpu = {n: statistics.median(v) for n, v in cpu.items()}
print()
print(f"wrk -t2 -c{conns} -d{duration}s --latency, GET / (the -param rows: GET /users/42), median of {rounds} interleaved round(s); "
      f"load average after: {load_after}; {elapsed} s of runs")
print()
print("| server (1 thread) | req/s | p99 (ms) | server CPU per request (µs) |")
print("|---|---:|---:|---:|")
for n in ["axum-bare", "axum-gpe", "axum-prom", "actix-bare", "actix-gpe", "actix-prom",
          "actix-bare-param", "actix-gpe-param", "actix-prom-param"]:
    if n in med:
        print(f"| {n} | {med[n][0]:,.0f} | {med[n][1]:.2f} | {mcpu[n]:.2f} |")
print()
print("| ratio | throughput (wrk) | throughput from CPU per request | p99 ratio | target |")
print("|---|---:|---:|---:|---|")
def ratio(a, b, target):
    if a in med and b in med:
        r = med[a][0] / med[b][0]
        ok = "✔" if r >= target else "✘"
        # A server saturating its one core serves 1 / (CPU per request): the CPU ratio is the
        # throughput ratio with the machine's noise (steal, wrk, other work) taken out.
        c = mcpu[b] / mcpu[a] if mcpu[a] > 0 else float("nan")
        okc = "✔" if c >= target else "✘"
        print(f"| {a} / {b} | {r:.3f} {ok} | {c:.3f} {okc} | {med[a][1] / med[b][1]:.2f} | ≥ {target:g} |")
ratio("axum-gpe", "axum-bare", 0.95)
ratio("axum-gpe", "axum-prom", 1.0)
ratio("actix-gpe", "actix-bare", 0.95)
ratio("actix-gpe", "actix-prom", 1.0)
ratio("actix-gpe-param", "actix-bare-param", 0.95)
ratio("actix-gpe-param", "actix-prom-param", 1.0)
print()
a, b = "master-4x-axum-gpe", "axum-gpe-4threads"
if a in med and b in med:
    print("| axum-gpe, 4-way | req/s | p99 (ms) | CPU per request (µs) |")
    print("|---|---:|---:|---:|")
    print(f"| 4 workers under gpe-master (1 thread each) | {med[a][0]:,.0f} | {med[a][1]:.2f} | {mcpu[a]:.2f} |")
    print(f"| one process, 4 runtime threads | {med[b][0]:,.0f} | {med[b][1]:.2f} | {mcpu[b]:.2f} |")
    print(f"| ratio master / one process | {med[a][0] / med[b][0]:.3f} | {med[a][1] / med[b][1]:.2f} | {mcpu[a] / mcpu[b]:.2f} |")
c, d = "master-4x-axum-gpe-redis", "master-4x-axum-bare"
if c in med and d in med:
    print()
    print("| 4 workers under gpe-master | req/s | p99 (ms) | CPU per request (µs, master + workers) |")
    print("|---|---:|---:|---:|")
    for n, label in [(d, "axum-bare, no metrics (--no-metrics)"), (a, "axum-gpe, file store"), (c, "axum-gpe, file store + Redis sync")]:
        if n in med:
            print(f"| {label} | {med[n][0]:,.0f} | {med[n][1]:.2f} | {mcpu[n]:.2f} |")
    print()
    print("| ratio | throughput (wrk) | throughput from CPU per request | p99 ratio | target |")
    print("|---|---:|---:|---:|---|")
    ratio(c, d, 0.95)
    ratio(a, d, 0.95)
print()
print("per round:")
for n, v in rows.items():
    print(f"  {n}: " + ", ".join(f"{r:,.0f} req/s p99 {p:.2f} ms {u:.2f} µs CPU/req" for (r, p), u in zip(v, cpu[n])))
print()
print("metrics check (gpe's gunicorn_worker_requests_total delta over the wrk run vs wrk's count):")
for c in checks:
    print("  " + c)
bad = [c for c in checks if "MISMATCH" in c]
sys.exit(1 if bad else 0)
PY

#!/usr/bin/env bash
# A baseline server and another (bare and gpe, say) measured so that the VM's drift cancels:
# both are pinned to CPU 0 and started side by side, with wrk on the other core(s). Run one
# after the other, as in run.sh, single rounds of one server spread by +-25 % on this kind of
# 2-core VM; here both see the same seconds of the machine.
#
# MODE=concurrent (default): both are loaded at the same time, each by its own wrk, for
#   DURATION. They share the core, so they also evict each other's caches between requests, as
#   several workers on one core do: the stricter of the two modes for a server whose requests
#   touch more memory.
# MODE=alternate: one server is loaded at a time (the other idles), by SLICES slices of wrk of
#   SLICE seconds each, in the order AB BA AB ...: each runs alone on its core, as the 1-worker
#   target is stated, and drift slower than a slice cancels.
#
# Per pair and round: requests/s of each, and each server's CPU time per request (user + system
# from /proc over the measured time, divided by wrk's count). The CPU-per-request ratio is the
# throughput ratio of the two servers each given a whole core; the wrk ratio is also reported,
# with each server's CPU use over the measured time (near 50 % each when both share the core
# saturated, near 100 % in alternate mode). The order in which the two are started and loaded
# alternates between rounds. gpe's own count of requests is checked against wrk's, as in run.sh,
# for a server named *-gpe.
#
#   bash benches/http/pair.sh            # needs wrk, taskset, python3, curl; 2+ cores
#   MODE=alternate bash benches/http/pair.sh
#
# Environment: PAIRS (default: gpe against bare, against the usual middleware, and the
# reference servers below; BASELINE:SERVER[:PATH] each), ROUNDS (default 5), DURATION (wrk
# seconds, concurrent mode, default 10), SLICES and SLICE (alternate mode, default 10 and 1),
# WARMUP (seconds, default 2), CONNECTIONS (per server, default 16). Every wrk run is bounded by
# -d and by `timeout`; every server is killed after its round. Loopback only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# axum-noop: Router::layer with a layer that does nothing (axum's own cost of any layer);
# *-inflight: the smallest middleware of gpe's shape (wraps the future and the body, one atomic
# at each end: tower-http's InFlightRequestsLayer in axum, its like written out for actix-web);
# *-gpe-off: gpe's layer/middleware with every path excluded (its wrappers, no recording).
PAIRS="${PAIRS:-axum-bare:axum-gpe axum-prom:axum-gpe axum-bare:axum-noop axum-bare:axum-inflight
axum-inflight:axum-gpe axum-bare:axum-gpe-off actix-bare:actix-gpe actix-prom:actix-gpe
actix-bare:actix-inflight actix-inflight:actix-gpe actix-bare:actix-gpe-off
actix-bare:actix-gpe:/users/42 actix-prom:actix-gpe:/users/42}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-16}"
MODE="${MODE:-concurrent}"
SLICES="${SLICES:-10}"
SLICE="${SLICE:-1}"
case "$MODE" in
  concurrent) measured="$DURATION" ;;
  alternate) measured=$((SLICES * SLICE)) ;;
  *) echo "MODE must be concurrent or alternate, not $MODE" >&2; exit 2 ;;
esac
# shellcheck source=lib.sh
source "$here/lib.sh"
need_tools pair.sh wrk taskset python3 curl
[ "$(nproc)" -ge 2 ] || { echo "pair.sh needs 2 cores (servers and wrk apart)" >&2; exit 1; }

(cd "$here" && cargo build --release -q)
bin="$here/target/release"
work="$(mktemp -d /tmp/gpe-pair.XXXXXX)"
server_pid=""
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
clk_tck="$(getconf CLK_TCK)"

# wrk's request count in the output file $1; wrk's errors (non-2xx, socket errors) stop the run.
wrk_count() {
  local errs
  errs="$(awk '/Non-2xx|Socket errors/ { printf "%s ", $0 }' "$1")"
  [ -z "$errs" ] || { echo "wrk reported errors: $errs" >&2; exit 1; }
  awk '/requests in/ { print $1 }' "$1"
}

results="$work/results.tsv"
: >"$results"
echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ "$MODE" = concurrent ]; then
  echo "per server: wrk -t1 -c$CONNECTIONS -d${DURATION}s, both servers on CPU 0 at once, wrk on CPU $(wrk_cpus); $ROUNDS round(s)" >&2
else
  echo "both servers on CPU 0, loaded one at a time: $SLICES slices of wrk -t2 -c$CONNECTIONS -d${SLICE}s each, order AB BA ..., wrk on CPU $(wrk_cpus); $ROUNDS round(s)" >&2
fi
for round in $(seq 1 "$ROUNDS"); do
  for pair in $PAIRS; do
    IFS=: read -r bare gpe path <<<"$pair"
    path="${path:-/}"
    names=("$bare" "$gpe")
    # Alternate which server starts and is loaded first.
    [ $((round % 2)) -eq 0 ] && names=("$gpe" "$bare")
    declare -A port=() pid=() store=()
    for n in "${names[@]}"; do
      port[$n]="$(free_port)"
      store[$n]="$work/store-$n-$round"
      mkdir -p "${store[$n]}"
      BIND="127.0.0.1:${port[$n]}" PROMETHEUS_MULTIPROC_DIR="${store[$n]}" RUST_LOG=warn \
        taskset -c 0 "$bin/$n" --workers-threads 1 >"$work/$n.log" 2>&1 &
      pid[$n]=$!
      pids+=("${pid[$n]}")
      server_pid="${pid[$n]}"
      wait_ready "${port[$n]}" || { cat "$work/$n.log" >&2; exit 1; }
    done
    wrks=()
    for n in "${names[@]}"; do
      timeout $((WARMUP + 10)) taskset -c "$(wrk_cpus)" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" \
        "http://127.0.0.1:${port[$n]}$path" >/dev/null &
      wrks+=($!)
    done
    wait "${wrks[@]}"
    before_count="$("$bin/gpe-sum" "${store[$gpe]}" | awk '{ printf "%.0f", $1 }')"
    declare -A reqs=() used=()
    if [ "$MODE" = concurrent ]; then
      declare -A t0=()
      for n in "${names[@]}"; do t0[$n]="$(cpu_ticks "${pid[$n]}")"; done
      wrks=()
      for n in "${names[@]}"; do
        timeout $((DURATION + 20)) taskset -c "$(wrk_cpus)" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
          "http://127.0.0.1:${port[$n]}$path" >"$work/$n.wrk" &
        wrks+=($!)
      done
      wait "${wrks[@]}"
      for n in "${names[@]}"; do
        used[$n]=$(($(cpu_ticks "${pid[$n]}") - t0[$n]))
        reqs[$n]="$(wrk_count "$work/$n.wrk")"
      done
    else
      # One server loaded at a time, SLICE seconds each, in the order AB BA AB ...
      for n in "${names[@]}"; do reqs[$n]=0; used[$n]=0; done
      for s in $(seq 1 "$SLICES"); do
        order=("${names[@]}")
        [ $((s % 2)) -eq 0 ] && order=("${names[1]}" "${names[0]}")
        for n in "${order[@]}"; do
          a="$(cpu_ticks "${pid[$n]}")"
          timeout $((SLICE + 10)) taskset -c "$(wrk_cpus)" wrk -t2 -c"$CONNECTIONS" -d"${SLICE}s" \
            "http://127.0.0.1:${port[$n]}$path" >"$work/slice.wrk"
          used[$n]=$((used[$n] + $(cpu_ticks "${pid[$n]}") - a))
          reqs[$n]=$((reqs[$n] + $(wrk_count "$work/slice.wrk")))
        done
      done
    fi
    sleep 0.2 # the last in-flight responses
    after_count="$("$bin/gpe-sum" "${store[$gpe]}" | awk '{ printf "%.0f", $1 }')"
    for n in "${names[@]}"; do
      server_pid="${pid[$n]}"
      stop_server
    done
    pids=()
    line="$pair\t$round"
    for n in "$bare" "$gpe"; do
      rps="$(awk -v n="${reqs[$n]}" -v d="$measured" 'BEGIN { printf "%.0f", n / d }')"
      line="$line\t$rps\t${reqs[$n]}\t${used[$n]}"
    done
    recorded=$((after_count - before_count))
    gpe_reqs="${reqs[$gpe]}"
    # Only the servers that record (named *-gpe) are checked; the others count nothing.
    if [[ "$gpe" == *-gpe ]] && [ "$recorded" -lt "$gpe_reqs" ]; then
      echo "MISMATCH: $gpe counted $recorded < wrk $gpe_reqs" >&2
      exit 1
    fi
    printf "$line\t%s\n" "$recorded" >>"$results"
    tail -n1 "$results" | awk -F'\t' -v hz="$clk_tck" '{
      printf "  %-40s round %s: %9.0f vs %9.0f req/s, CPU/req %.2f vs %.2f us, gpe counted %s (wrk %s)\n",
        $1, $2, $3, $6, $5 * 1e6 / hz / $4, $8 * 1e6 / hz / $7, $9, $7 }' >&2
    rm -rf "${store[$bare]}" "${store[$gpe]}"
    unset port pid store t0 reqs used
  done
done

python3 - "$results" "$clk_tck" "$ROUNDS" "$measured" "$CONNECTIONS" "$(cut -d' ' -f1-3 /proc/loadavg)" "$MODE" "$SLICES" "$SLICE" <<'PY'
import statistics, sys
path, hz, rounds, duration, conns, load, mode, slices, slice_s = sys.argv[1:]
hz = float(hz)
by = {}
for line in open(path):
    pair, rnd, rps_a, n_a, t_a, rps_b, n_b, t_b, counted = line.rstrip("\n").split("\t")
    cpu_a = float(t_a) / hz / int(n_a) * 1e6
    cpu_b = float(t_b) / hz / int(n_b) * 1e6
    share_a = float(t_a) / hz / float(duration)
    share_b = float(t_b) / hz / float(duration)
    by.setdefault(pair, []).append((float(rps_b) / float(rps_a), cpu_a / cpu_b, cpu_a, cpu_b, share_a, share_b))
print()
if mode == "concurrent":
    print(f"Both servers of a pair on CPU 0 at once, each loaded by wrk -t1 -c{conns} -d{duration}s; "
          f"medians of {rounds} rounds (min-max in brackets); load average after: {load}")
else:
    print(f"Both servers of a pair on CPU 0, loaded one at a time ({slices} slices of wrk -t2 -c{conns} -d{slice_s}s "
          f"each, order AB BA ...); medians of {rounds} rounds (min-max in brackets); load average after: {load}")
print()
print("| baseline : server [: path] | CPU per request, baseline / server (µs) | server / baseline throughput, from CPU per request | wrk ratio | CPU use, baseline / server |")
print("|---|---:|---:|---:|---:|")
for pair, rows in by.items():
    col = list(zip(*rows))
    med = [statistics.median(c) for c in col]
    lo = [min(c) for c in col]
    hi = [max(c) for c in col]
    print(f"| {pair} | {med[2]:.2f} / {med[3]:.2f} | **{med[1]:.3f}** [{lo[1]:.3f}–{hi[1]:.3f}] | "
          f"{med[0]:.3f} [{lo[0]:.3f}–{hi[0]:.3f}] | {100 * med[4]:.0f} % / {100 * med[5]:.0f} % |")
PY

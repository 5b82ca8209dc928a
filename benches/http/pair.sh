#!/usr/bin/env bash
# A bare server and its gpe twin measured at the same time: both pinned to CPU 0, each loaded by
# its own wrk (both wrks on the other cores) for the same DURATION. The two servers share one
# core, so whatever the VM does to that core in those seconds (steal, frequency, a noisy
# neighbour) it does to both, and the ratio of their costs survives it; run one after the other,
# as in run.sh, single rounds of one server spread by +-25 % on this kind of 2-core VM.
#
# Per pair and round: requests/s of each (wrk), and each server's CPU time per request (user +
# system from /proc over the wrk run, divided by wrk's count). The CPU-per-request ratio is the
# throughput ratio of the two servers each given a whole core; the wrk ratio is also reported,
# with each server's share of CPU 0 (near 50 % each when both stay saturated). The order in
# which the two are started and loaded alternates between rounds. gpe's own count of requests is
# checked against wrk's, as in run.sh.
#
#   bash benches/http/pair.sh            # needs wrk, taskset, python3, curl; 2+ cores
#
# Environment: PAIRS (default "axum-bare:axum-gpe actix-bare:actix-gpe
# actix-bare:actix-gpe:/users/42", BARE:GPE[:PATH]), ROUNDS (default 5), DURATION (wrk seconds,
# default 10), WARMUP (seconds, default 2), CONNECTIONS (per server, default 16). Every wrk run
# is bounded by -d and by `timeout`; every server is killed after its round. Loopback only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PAIRS="${PAIRS:-axum-bare:axum-gpe actix-bare:actix-gpe actix-bare:actix-gpe:/users/42}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNECTIONS="${CONNECTIONS:-16}"
for tool in wrk taskset python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "pair.sh needs $tool" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "pair.sh needs 2 cores (servers and wrk apart)" >&2; exit 1; }

(cd "$here" && cargo build --release -q)
bin="$here/target/release"
# shellcheck source=lib.sh
source "$here/lib.sh"
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

# The CPU time (clock ticks, user + system) of process $1 so far.
ticks() {
  sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

results="$work/results.tsv"
: >"$results"
echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "per server: wrk -t1 -c$CONNECTIONS -d${DURATION}s, both servers on CPU 0 at once, wrk on CPU $(wrk_cpus); $ROUNDS round(s)" >&2
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
    declare -A t0=() t1=()
    for n in "${names[@]}"; do t0[$n]="$(ticks "${pid[$n]}")"; done
    wrks=()
    for n in "${names[@]}"; do
      timeout $((DURATION + 20)) taskset -c "$(wrk_cpus)" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
        "http://127.0.0.1:${port[$n]}$path" >"$work/$n.wrk" &
      wrks+=($!)
    done
    wait "${wrks[@]}"
    for n in "${names[@]}"; do t1[$n]="$(ticks "${pid[$n]}")"; done
    sleep 0.2 # the last in-flight responses
    after_count="$("$bin/gpe-sum" "${store[$gpe]}" | awk '{ printf "%.0f", $1 }')"
    for n in "${names[@]}"; do
      server_pid="${pid[$n]}"
      stop_server
    done
    pids=()
    line="$pair\t$round"
    for n in "$bare" "$gpe"; do
      rps="$(awk '/^Requests\/sec:/ { print $2 }' "$work/$n.wrk")"
      reqs="$(awk '/requests in/ { print $1 }' "$work/$n.wrk")"
      errs="$(awk '/Non-2xx|Socket errors/ { printf "%s ", $0 }' "$work/$n.wrk")"
      [ -z "$errs" ] || { echo "$n: wrk reported errors: $errs" >&2; exit 1; }
      line="$line\t$rps\t$reqs\t$((t1[$n] - t0[$n]))"
    done
    recorded=$((after_count - before_count))
    gpe_reqs="$(awk '/requests in/ { print $1 }' "$work/$gpe.wrk")"
    if [ "$recorded" -lt "$gpe_reqs" ]; then
      echo "MISMATCH: $gpe counted $recorded < wrk $gpe_reqs" >&2
      exit 1
    fi
    printf "$line\t%s\n" "$recorded" >>"$results"
    tail -n1 "$results" | awk -F'\t' -v hz="$clk_tck" '{
      printf "  %-40s round %s: %9.0f vs %9.0f req/s, CPU/req %.2f vs %.2f us, gpe counted %s >= wrk %s\n",
        $1, $2, $3, $6, $5 * 1e6 / hz / $4, $8 * 1e6 / hz / $7, $9, $7 }' >&2
    rm -rf "${store[$bare]}" "${store[$gpe]}"
    unset port pid store t0 t1
  done
done

python3 - "$results" "$clk_tck" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import statistics, sys
path, hz, rounds, duration, conns, load = sys.argv[1:]
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
print(f"Both servers of a pair on CPU 0 at once, each loaded by wrk -t1 -c{conns} -d{duration}s; "
      f"medians of {rounds} rounds (min-max in brackets); load average after: {load}")
print()
print("| pair (bare : gpe [: path]) | CPU per request, bare / gpe (µs) | throughput ratio from CPU per request | wrk ratio (shared core) | CPU 0 share, bare / gpe |")
print("|---|---:|---:|---:|---:|")
for pair, rows in by.items():
    col = list(zip(*rows))
    med = [statistics.median(c) for c in col]
    lo = [min(c) for c in col]
    hi = [max(c) for c in col]
    print(f"| {pair} | {med[2]:.2f} / {med[3]:.2f} | **{med[1]:.3f}** [{lo[1]:.3f}–{hi[1]:.3f}] | "
          f"{med[0]:.3f} [{lo[0]:.3f}–{hi[0]:.3f}] | {100 * med[4]:.0f} % / {100 * med[5]:.0f} % |")
PY

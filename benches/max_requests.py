#!/usr/bin/env python3
"""`--max-requests` under wrk load: gpe-master recycling its workers against the same master
without recycling, same machine, same run (issue 11).

    python3 benches/max_requests.py              # from the repository root (or from anywhere)
    python3 benches/max_requests.py --no-build --rounds 5

Two pairs of variants, each run on a fresh master (gpe-master running the release `example-axum`
on a fresh loopback port, its /metrics on another), loaded with
`wrk -t1 -c8 -d6s --latency http://127.0.0.1:PORT/` (under `timeout`):

* 4 workers without --max-requests, and 4 workers with `--max-requests 1000
  --max-requests-jitter 100`;
* 2 workers without, and 2 workers with `--max-requests 100` (a worker is replaced every few
  milliseconds: the issue's other figure).

The rounds alternate (without, with; the next round with, without; --rounds of each, default 3).
Before each load the master is waited for (bounded polling: all workers alive, `GET /` answered,
/metrics answered); after it, the master's /metrics is read once (worker exits by reason,
spawns, the sum of `gunicorn_worker_requests_total`) and the master is stopped (INT, then KILL
what is left after 10 s).

Reported per variant: requests/s and total requests (median of the rounds), p50/p99/max latency
(median of the rounds, and the worst max), wrk errors (socket errors + non-2xx, summed), workers
recycled (`gunicorn_master_worker_exits_total{reason="max_requests"}`, median), requests served
per worker process (sum of `gunicorn_worker_requests_total` / `gunicorn_master_worker_spawns_total`:
a retiring worker serves on until its replacement is up, so it exceeds --max-requests), the
server's CPU per request (user + system of the master and all its children, reaped or not, over
the load, divided by wrk's requests: less sensitive than req/s to what else runs on the machine),
other exit reasons if any; and per pair the ratio throughput(with)/throughput(without) and
p99(with)/p99(without), against the targets (≥ 0.9 and ≤ 3), and the CPU-per-request ratio.
Exit status 1 if a target is missed.

Needs only the Python standard library and wrk; gpe-master + example-axum are built in release
into $BENCH_TARGET_DIR (default <root>/target-bench) unless --no-build; --bin-dir points at
another directory holding both binaries (default $BENCH_TARGET_DIR/release).
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import (
    TICK, add_build_args, built_binaries, command_line, environ_without, free_port, interrupt,
    kill_group, label, live_children, loadavg, log, parse_wrk, reap_or_kill, samples, scrape,
    stat_fields, status_200, wrk_argv,
)

BOOT_WAIT = 20.0  # bound on a master's boot (all workers alive, GET / and /metrics answered)
STOP_WAIT = 10.0  # bound on each stop step
WRK_SLACK = 15  # wrk runs under `timeout` -d + this many seconds

# (name, workers, extra gpe-master flags, pair, is the "with" side)
VARIANTS = [
    ("4w", 4, [], "4 workers", False),
    ("4w-mr1000", 4, ["--max-requests", "1000", "--max-requests-jitter", "100"], "4 workers", True),
    ("2w", 2, [], "2 workers", False),
    ("2w-mr100", 2, ["--max-requests", "100"], "2 workers", True),
    ("4w-10k", 4, [], "4 workers at 10k", False),
    ("4w-mr10000", 4, ["--max-requests", "10000", "--max-requests-jitter", "1000"], "4 workers at 10k", True),
]


def tree_cpu(master):
    """CPU seconds (user + system) of the master, its reaped children (cutime + cstime) and its
    children still there (zombies included: not reaped yet, so not in the master's cutime)."""
    f = stat_fields(master)
    if f is None:
        return None
    total = sum(int(x) for x in f[11:15])
    for name in os.listdir("/proc"):
        if name.isdigit():
            c = stat_fields(int(name))
            if c is not None and int(c[1]) == master:
                total += int(c[11]) + int(c[12])
    return total / TICK


def answers_200(port, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            return status_200(s)
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# one run


def master_argv(master_bin, worker_bin, workers, port, extra):
    return [master_bin, "--workers", str(workers), "--bind", f"127.0.0.1:{port}", *extra, worker_bin]


def run_one(variant, args, master_bin, worker_bin, work, n):
    name, workers, extra, _, _ = variant
    d = os.path.join(work, f"{n}-{name}")
    os.mkdir(d)
    store = os.path.join(d, "store")
    os.mkdir(store)
    port, mport = free_port(), free_port()
    env = environ_without(("GPE_", "LISTEN_", "GUNICORN_", "PROMETHEUS_", "REDIS_", "RUST_LOG",
                           "NOTIFY_SOCKET"))
    env.update(PROMETHEUS_MULTIPROC_DIR=store, PROMETHEUS_BIND_ADDRESS="127.0.0.1",
               PROMETHEUS_METRICS_PORT=str(mport))
    argv = master_argv(master_bin, worker_bin, workers, port, extra)
    logfile = os.path.join(d, "master.log")
    result = {"variant": name}
    out = open(logfile, "wb")
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wrk = None
    try:
        deadline = time.monotonic() + BOOT_WAIT
        for _ in range(100_000):
            if proc.poll() is not None:
                raise RuntimeError(f"gpe-master exited with {proc.returncode}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"not ready within {BOOT_WAIT:g} s")
            if len(live_children(proc.pid)) == workers and answers_200(port):
                try:
                    scrape(mport, timeout=1.0)
                    break
                except OSError:
                    pass
            time.sleep(0.05)
        cpu0 = tree_cpu(proc.pid)
        wrk = subprocess.Popen(wrk_argv(args, port, args.duration, WRK_SLACK), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
        wrk_out, _ = wrk.communicate(timeout=args.duration + 30)
        cpu1 = tree_cpu(proc.pid)
        w = parse_wrk(wrk_out)
        if w["rps"] is None:
            raise RuntimeError(f"wrk printed no result (exit {wrk.returncode}):\n{wrk_out}")
        result["wrk"] = w
        if cpu0 is not None and cpu1 is not None and w["requests"]:
            result["cpu_us"] = (cpu1 - cpu0) / w["requests"] * 1e6
        if proc.poll() is not None:
            raise RuntimeError(f"gpe-master exited with {proc.returncode} under load")
        time.sleep(0.3)  # let a last replacement finish booting (not needed for the figures)
        text = scrape(mport)
        exits = {label(l, "reason"): v for l, v in samples(text, "gunicorn_master_worker_exits_total")}
        result["exits"] = {k: int(v) for k, v in exits.items() if v}
        result["recycled"] = int(exits.get("max_requests", 0))
        result["spawns"] = int(sum(v for _, v in samples(text, "gunicorn_master_worker_spawns_total")))
        result["gpe_requests"] = int(sum(v for _, v in samples(text, "gunicorn_worker_requests_total")))
        result["workers_now"] = len(live_children(proc.pid))
    except Exception as e:  # one failed run does not stop the others
        result["error"] = str(e)
        log(f"  ERROR ({name}): {e}")
    finally:
        kill_group(wrk, STOP_WAIT)
        stop(proc)
        out.close()
    with open(logfile, errors="replace") as f:
        lines = f.read().splitlines()
    result["log_warnings"] = [l for l in lines if re.search(r"\b(WARN|ERROR)\b", l)]
    if "error" in result:
        log("\n".join(lines[-20:]))
    return result, argv


def stop(proc):
    workers = live_children(proc.pid)
    interrupt(proc, STOP_WAIT)
    reap_or_kill(proc, workers, STOP_WAIT)


# ---------------------------------------------------------------------------------------------


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_ms(x):
    return "—" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.2f}")


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    add_build_args(ap)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each variant (default 3)")
    ap.add_argument("--duration", type=float, default=6.0, help="wrk -d, seconds (default 6)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--pairs", default="4 workers,2 workers",
                    help="which pairs: '4 workers', '2 workers', '4 workers at 10k' (default the first two)")
    args = ap.parse_args()
    if not (1 <= args.rounds <= 20 and 2 <= args.duration <= 60 and 1 <= args.threads <= 16
            and args.threads <= args.connections <= 1000):
        ap.error("need 1 <= --rounds <= 20, 2 <= --duration <= 60, sane --threads/--connections")
    pairs = [p for p in args.pairs.split(",") if p]
    variants = [v for v in VARIANTS if v[3] in pairs]
    if not variants:
        ap.error("--pairs from '4 workers', '2 workers', '4 workers at 10k'")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found on PATH")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    master_bin, worker_bin = built_binaries(args)

    load_before = loadavg()
    log(f"machine: {os.cpu_count()} cores; load average before: {load_before}")
    work = tempfile.mkdtemp(prefix="gpe-maxreq.")
    results = {v[0]: [] for v in variants}
    commands = {}
    n = 0
    try:
        for rnd in range(args.rounds):
            for pair in pairs:
                pv = [v for v in variants if v[3] == pair]
                if rnd % 2:
                    pv.reverse()  # without, with; then with, without
                for v in pv:
                    log(f"--- round {rnd + 1}/{args.rounds}: {v[0]}")
                    r, argv = run_one(v, args, master_bin, worker_bin, work, n)
                    n += 1
                    commands.setdefault(v[0], argv)
                    results[v[0]].append(r)
                    if "wrk" in r:
                        w = r["wrk"]
                        log(f"    {w['rps']:,.0f} req/s, {w['requests']:,} requests, p99 "
                            f"{fmt_ms(w['p99_ms'])} ms, max {fmt_ms(w['max_ms'])} ms, errors "
                            f"{w['errors']}, recycled {r['recycled']}, exits {r['exits']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = loadavg()

    summary = {}
    for v in variants:
        ok = [r for r in results[v[0]] if "wrk" in r]
        ws = [r["wrk"] for r in ok]
        exits = {}
        for r in ok:
            for k, c in r["exits"].items():
                if k != "max_requests":
                    exits[k] = exits.get(k, 0) + c
        summary[v[0]] = {
            "rounds": len(ok), "failed_rounds": len(results[v[0]]) - len(ok),
            "rps": med([w["rps"] for w in ws]), "requests": med([w["requests"] for w in ws]),
            "p50": med([w["p50_ms"] for w in ws]), "p99": med([w["p99_ms"] for w in ws]),
            "max": med([w["max_ms"] for w in ws]), "worst_max": max((w["max_ms"] for w in ws), default=None),
            "errors": sum(w["errors"] for w in ws),
            "recycled": med([r["recycled"] for r in ok]),
            # requests served per worker process (spawned ones and the first ones alike)
            "per_worker": med([r["gpe_requests"] / r["spawns"] for r in ok if r["spawns"]]),
            "cpu_us": med([r.get("cpu_us") for r in ok]),
            "gpe_vs_wrk": [r["gpe_requests"] - r["wrk"]["requests"] for r in ok],
            "other_exits": exits,
            "rps_rounds": [w["rps"] for w in ws], "p99_rounds": [w["p99_ms"] for w in ws],
            "recycled_rounds": [r["recycled"] for r in ok],
            "warnings": sum(len(r["log_warnings"]) for r in results[v[0]]),
        }

    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, {args.rounds} "
          f"rounds per variant (fresh master each), medians; {os.cpu_count()} cores; load average "
          f"before {load_before}, after {load_after}")
    print()
    print("| variant | req/s | requests | p50 (ms) | p99 (ms) | max (ms), worst round | wrk errors "
          "| server CPU per request (µs) | workers recycled | requests per worker process | other exits | req/s per round | p99 per round (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for v in variants:
        s = summary[v[0]]
        flags = " ".join(v[2]) or "no --max-requests"
        if s["rps"] is None:
            print(f"| {v[1]} workers, {flags} | no successful round | | | | | | | | | | | |")
            continue
        other = ", ".join(f"{k} {c}" for k, c in s["other_exits"].items()) or "—"
        print(f"| {v[1]} workers, {flags} | {s['rps']:,.0f} | {s['requests']:,.0f} | {fmt_ms(s['p50'])} "
              f"| {fmt_ms(s['p99'])} | {fmt_ms(s['max'])}, {fmt_ms(s['worst_max'])} | {s['errors']} "
              f"| {fmt_ms(s['cpu_us'])} | {s['recycled']:,.0f} | {s['per_worker']:,.0f} | {other} | {' / '.join(f'{x:,.0f}' for x in s['rps_rounds'])} "
              f"| {' / '.join(fmt_ms(x) for x in s['p99_rounds'])} |")
    print()
    print("| pair | throughput with / without | target | p99 with / without | target "
          "| server CPU per request with / without |")
    print("|---|---:|---|---:|---|---:|")
    verdict = True
    for pair in pairs:
        without = next(summary[v[0]] for v in variants if v[3] == pair and not v[4])
        with_ = next(summary[v[0]] for v in variants if v[3] == pair and v[4])
        if without["rps"] is None or with_["rps"] is None:
            print(f"| {pair} | — | ≥ 0.9 | — | ≤ 3 | — |")
            verdict = False
            continue
        tr = with_["rps"] / without["rps"]
        pr = with_["p99"] / without["p99"]
        ok_t, ok_p = tr >= 0.9, pr <= 3.0
        verdict &= ok_t and ok_p
        cr = (f"{with_['cpu_us'] / without['cpu_us']:.2f}" if with_["cpu_us"] and without["cpu_us"] else "—")
        print(f"| {pair} | {tr:.3f} | ≥ 0.9 {'✔' if ok_t else '✘'} | {pr:.2f} | ≤ 3 {'✔' if ok_p else '✘'} | {cr} |")
    print()
    for v in variants:
        s = summary[v[0]]
        if s["failed_rounds"]:
            errs = [r["error"].splitlines()[0] for r in results[v[0]] if "error" in r]
            print(f"- {v[0]}: {s['failed_rounds']} failed round(s): {'; '.join(errs)}")
        if s["warnings"]:
            first = next(l for r in results[v[0]] for l in r["log_warnings"])
            print(f"- {v[0]}: {s['warnings']} WARN/ERROR lines in the master's logs, e.g.: {first}")
    for v in variants:
        print(f"- {v[0]}: gunicorn_worker_requests_total minus wrk's count per round (readiness probes and "
              f"requests in flight at wrk's deadline): {summary[v[0]]['gpe_vs_wrk']}")
    print()
    print("Commands (ports and temp paths vary per run):")
    print()
    print(f"    {command_line(__file__)}")
    for v in variants:
        if v[0] in commands:
            print("    PROMETHEUS_MULTIPROC_DIR=<fresh dir> PROMETHEUS_BIND_ADDRESS=127.0.0.1 "
                  "PROMETHEUS_METRICS_PORT=<port> "
                  + re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", " ".join(shlex.quote(a) for a in commands[v[0]])))
    wrk_cmd = " ".join(shlex.quote(a) for a in wrk_argv(args, 0, args.duration, WRK_SLACK))
    print(f"    {wrk_cmd.replace(':0/', ':PORT/')}")
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()

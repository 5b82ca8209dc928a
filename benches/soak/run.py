#!/usr/bin/env python3
"""Soak: gpe-master recycling its workers (--max-requests) under wrk load for minutes, with HUP,
TTIN/TTOU, /metrics scraped every second and Redis sync on; checks that nothing leaks and that
the request totals add up (issue 11).

    python3 benches/soak/run.py                     # 10 minutes (from anywhere)
    python3 benches/soak/run.py --duration 120 --no-build

What it does, every step bounded in time:

1. starts a private `redis-server --port <free port> --save '' --appendonly no` on 127.0.0.1
   (never 6379), waits for PING;
2. calibration (unless --max-requests is given): a master with 4 workers and no --max-requests
   under `wrk -t1 -c8 -d4s`; --max-requests = (req/s / 4) * --recycle-every (default 4 s, so each
   worker is recycled every ~4 s), jitter 10 % of that; that master is then stopped;
3. starts gpe-master --workers 4 --max-requests N --max-requests-jitter J running the release
   `example-axum`, with PROMETHEUS_MULTIPROC_DIR (a fresh directory), its /metrics on a free port,
   REDIS_ENABLED=true, REDIS_HOST=127.0.0.1, REDIS_PORT=<that port>, GPE_HOST_ID=soak; waits
   until 4 workers answer `GET /` (every probe answered 200 is one request the workers count);
4. runs `wrk -t1 -c8 -d<duration>s --latency` (under `timeout`) and meanwhile, once a second:
   scrapes the master's /metrics (timing each scrape), samples the master's RSS (VmRSS) and open
   fds (/proc/PID/fd), the files in the store directory and the number of live workers; sends HUP
   every --hup-every s (30), TTIN at 45 s then TTOU 60 s later, every --ttin-every s (180; a pair
   is sent only if its TTOU falls before the end, so the run ends with 4 workers). The "start"
   sample is taken --warmup s (20) into the load, the "end" sample 2 s before wrk's end;
5. after wrk ends, waits 4 s (the last replacements boot, the Redis sync runs at 1 s) and reads
   the request totals three ways: sum(gunicorn_worker_requests_total) on the master's /metrics;
   the same sum computed by Python prometheus_client's MultiProcessCollector over the store
   directory (a subprocess); and the same sum from Redis (every `soak:proc:*` hash plus the
   `archive:counter` hash; no exporter involved). Also Redis DBSIZE and the keys by prefix;
6. stops the master (TERM, then INT/KILL if it lingers), then redis-server.

Checks (exit status 1 if one fails):
* each of the three totals equals wrk's request count + the readiness probes, within a
  tolerance of wrk's connections (a request in flight at wrk's deadline is counted by the server,
  not by wrk) + wrk's socket errors (a request the server counted whose answer wrk lost) + probes
  that failed after their request was sent;
* the master's RSS grew by at most --max-rss-growth-kib (default 2048 KiB) and its open fds by at
  most --max-fd-growth (default 4) between the start and end samples;
* no wrk error, no non-2xx answer, every scrape answered.
The store's file count, the files left by processes that are not live workers after the load,
and the Redis key count are reported, not a failure.

Needs the Python standard library, wrk, redis-server, and Python prometheus_client (0.26.0 was
used) for the cross-check. gpe-master + example-axum are built in release into
$BENCH_TARGET_DIR (default <root>/target-bench) unless --no-build; --bin-dir points at another
directory holding both binaries (default $BENCH_TARGET_DIR/release).
"""

import argparse
import json
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import (  # noqa: E402  (benches/, one level up)
    TICK, add_build_args, built_binaries, command_line, environ_without, free_port, interrupt,
    kill_group, kill_quietly, label, live_children, loadavg, log, parse_wrk, reap_or_kill, samples,
    scrape, stat_fields, status_200, wrk_argv,
)

WORKERS = 4
BOOT_WAIT = 20.0
STOP_WAIT = 10.0
WRK_SLACK = 30  # wrk runs under `timeout` -d + this many seconds
SETTLE = 4.0  # after the load: replacements boot, Redis syncs (REDIS_SYNC_INTERVAL 1 s)
HOST_ID = "soak"
PREFIX = "gunicorn"
REQUESTS = "gunicorn_worker_requests_total"

PY_SUM = r"""
import sys
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
reg = CollectorRegistry()
MultiProcessCollector(reg, path=sys.argv[1])
total = 0.0
n = 0
for fam in reg.collect():
    for s in fam.samples:
        if s.name == sys.argv[2]:
            total += s.value
            n += 1
print(repr(total), n)
"""


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_s(pid):
    """User + system CPU seconds of pid itself."""
    f = stat_fields(pid)
    return None if f is None else (int(f[11]) + int(f[12])) / TICK


def nfds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def probe(port, timeout=1.0):
    """GET / on a fresh connection: 'ok' (200), 'sent' (request sent, no 200 read: the server
    may have counted it) or 'no' (not sent)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return "no"
    with s:
        try:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        except OSError:
            return "sent"  # maybe partly
        try:
            if not status_200(s):
                return "sent"
            while s.recv(4096):  # HTTP/1.0: the server closes after the answer
                pass
            return "ok"
        except OSError:
            return "sent"


def store_files(store):
    try:
        return sorted(os.listdir(store))
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# Redis, through redis-cli (installed with redis-server)


class Redis:
    def __init__(self, port):
        self.port = port

    def close(self):
        pass

    def lines(self, *args):
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--raw", *map(str, args)],
                             capture_output=True, timeout=60, check=True).stdout
        return out.split(b"\n")[:-1]

    def keys(self):
        return self.lines("--scan")

    def dbsize(self):
        return int(self.lines("DBSIZE")[0])

    def hgetall(self, key):
        flat = self.lines("HGETALL", key.decode() if isinstance(key, bytes) else key)
        return list(zip(flat[::2], flat[1::2]))


def redis_requests_total(r, keys):
    """sum of REQUESTS over every process hash of our host and the counter archive."""
    total, n = 0.0, 0
    proc_prefix = f"{PREFIX}:proc:".encode()
    for k in keys:
        if k.startswith(proc_prefix):
            for field, value in r.hgetall(k):
                kind, _, series = field.partition(b"\t")
                if kind == b"counter" and json.loads(series)[1] == REQUESTS:
                    total += float(value.split()[0])
                    n += 1
    for field, value in r.hgetall(f"{PREFIX}:archive:counter"):
        host, _, series = field.partition(b"\t")
        if host == HOST_ID.encode() and json.loads(series)[1] == REQUESTS:
            total += float(value.split()[0])
            n += 1
    return total, n


def key_groups(keys):
    groups = {}
    for k in keys:
        k = k.decode(errors="replace")
        parts = k.split(":")
        g = ":".join(parts[:2]) + (":*" if len(parts) > 2 else "")
        if parts[1:2] == ["archive"]:
            g = k  # one per kind: show them
        groups[g] = groups.get(g, 0) + 1
    return dict(sorted(groups.items()))


# ---------------------------------------------------------------------------------------------


def base_env():
    return environ_without(("GPE_", "LISTEN_", "GUNICORN_", "PROMETHEUS_", "REDIS_", "RUST_LOG",
                            "NOTIFY_SOCKET", "WEB_CONCURRENCY"))


class Master:
    def __init__(self, argv, env, port, mport, logfile):
        self.argv, self.env, self.port, self.mport, self.logfile = argv, env, port, mport, logfile
        self.out = open(logfile, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.probes = {"ok": 0, "sent": 0, "no": 0}

    def wait_ready(self):
        deadline = time.monotonic() + BOOT_WAIT
        for _ in range(100_000):
            if self.proc.poll() is not None:
                raise RuntimeError(f"gpe-master exited with {self.proc.returncode}; see {self.logfile}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"gpe-master not ready within {BOOT_WAIT:g} s; see {self.logfile}")
            if len(live_children(self.proc.pid)) == WORKERS:
                p = probe(self.port)
                self.probes[p] += 1
                if p == "ok":
                    try:
                        scrape(self.mport, timeout=1.0)
                        return
                    except OSError:
                        pass
            time.sleep(0.05)

    def stop(self):
        proc = self.proc
        if proc.poll() is None:
            workers = live_children(proc.pid)
            kill_quietly(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                log("  master still there 10 s after TERM: INT")
                interrupt(proc, STOP_WAIT)
            reap_or_kill(proc, workers, STOP_WAIT)
        self.out.close()
        return proc.returncode


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    add_build_args(ap)
    ap.add_argument("--max-requests", type=int, default=0,
                    help="--max-requests for the workers (default: calibrated, see --recycle-every)")
    ap.add_argument("--max-requests-jitter", type=int, default=None, help="default 10 %% of --max-requests")
    ap.add_argument("--recycle-every", type=float, default=4.0,
                    help="calibration target: seconds between two recycles of one worker (default 4)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the start sample")
    ap.add_argument("--hup-every", type=float, default=30.0)
    ap.add_argument("--ttin-every", type=float, default=180.0)
    ap.add_argument("--ttin-at", type=float, default=45.0, help="first TTIN (seconds into the load)")
    ap.add_argument("--ttou-after", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--max-rss-growth-kib", type=int, default=2048)
    ap.add_argument("--max-fd-growth", type=int, default=4)
    args = ap.parse_args()
    if not (60 <= args.duration <= 3600 and 5 <= args.warmup <= args.duration - 10
            and args.hup_every >= 5 and args.ttou_after >= 1 and args.ttin_every > args.ttou_after
            and 1 <= args.threads <= args.connections <= 1000):
        ap.error("need 60 <= --duration <= 3600, 5 <= --warmup <= duration - 10, --hup-every >= 5, "
                 "--ttin-every > --ttou-after >= 1, sane --threads/--connections")
    for tool in ("wrk", "redis-server", "timeout"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH")
    if subprocess.run([sys.executable, "-c", "import prometheus_client"], capture_output=True).returncode:
        sys.exit("Python prometheus_client missing (pip install prometheus_client==0.26.0)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    master_bin, worker_bin = built_binaries(args)

    # the schedule of signals, in seconds into the load
    schedule = []
    t = args.hup_every
    while t <= args.duration - 5:
        schedule.append((t, "HUP"))
        t += args.hup_every
    t = args.ttin_at
    while t + args.ttou_after <= args.duration - 5:
        schedule += [(t, "TTIN"), (t + args.ttou_after, "TTOU")]
        t += args.ttin_every
    schedule.sort()
    # as gunicorn, a reload (HUP) restores the configured count: a HUP between a TTIN and its
    # TTOU undoes the TTIN, so the count at the end follows from the schedule
    expected_workers = WORKERS
    for _, sig in schedule:
        if sig == "HUP":
            expected_workers = WORKERS
        elif sig == "TTIN":
            expected_workers += 1
        elif expected_workers > 1:
            expected_workers -= 1

    work = tempfile.mkdtemp(prefix="gpe-soak.")
    log(f"work directory {work} (removed at the end); load average {loadavg()}")
    redis_proc = master = wrk = None
    failures, notes = [], []
    report = {}
    try:
        # 1. Redis
        rport = free_port()
        while rport == 6379:
            rport = free_port()
        redis_log = open(os.path.join(work, "redis.log"), "wb")
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", work], stdout=redis_log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        for _ in range(10_000):
            if redis_proc.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server on port {rport} did not start; see {work}/redis.log")
            try:
                if Redis(rport).lines("PING") == [b"PONG"]:
                    break
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.05)
        log(f"redis-server {redis_proc.pid} on 127.0.0.1:{rport}")

        # 2. calibration
        if args.max_requests <= 0:
            store = os.path.join(work, "calib-store")
            os.mkdir(store)
            port, mport = free_port(), free_port()
            env = base_env()
            env.update(PROMETHEUS_MULTIPROC_DIR=store, PROMETHEUS_BIND_ADDRESS="127.0.0.1",
                       PROMETHEUS_METRICS_PORT=str(mport))
            m = Master([master_bin, "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}", worker_bin],
                       env, port, mport, os.path.join(work, "calib.log"))
            try:
                m.wait_ready()
                out = subprocess.run(wrk_argv(args, port, 4, WRK_SLACK), capture_output=True, text=True,
                                     timeout=60).stdout
                rps = parse_wrk(out)["rps"]
            finally:
                m.stop()
            if not rps:
                raise RuntimeError(f"calibration: wrk printed no result:\n{out}")
            args.max_requests = max(100, int(rps / WORKERS * args.recycle_every))
            log(f"calibration: {rps:,.0f} req/s with {WORKERS} workers -> --max-requests {args.max_requests}")
            report["calibration_rps"] = rps
        if args.max_requests_jitter is None:
            args.max_requests_jitter = args.max_requests // 10

        # 3. the master
        store = os.path.join(work, "store")
        os.mkdir(store)
        port, mport = free_port(), free_port()
        pidfile = os.path.join(work, "gpe.pid")
        env = base_env()
        env.update(PROMETHEUS_MULTIPROC_DIR=store, PROMETHEUS_BIND_ADDRESS="127.0.0.1",
                   PROMETHEUS_METRICS_PORT=str(mport), REDIS_ENABLED="true", REDIS_HOST="127.0.0.1",
                   REDIS_PORT=str(rport), REDIS_KEY_PREFIX=PREFIX, GPE_HOST_ID=HOST_ID)
        argv = [master_bin, "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}", "--pid", pidfile,
                "--max-requests", str(args.max_requests), "--max-requests-jitter",
                str(args.max_requests_jitter), worker_bin]
        report["argv"] = argv
        master_log = os.path.join(work, "master.log")
        master = Master(argv, env, port, mport, master_log)
        master.wait_ready()
        mpid = master.proc.pid
        log(f"gpe-master {mpid} ready ({master.probes['ok']} probe requests answered); load for {args.duration:g} s")

        # 4. the load, and what runs alongside
        wargv = wrk_argv(args, port, args.duration, WRK_SLACK)
        report["wrk_argv"] = wargv
        wrk = subprocess.Popen(wargv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
        t0 = time.monotonic()
        scrape_ms, scrape_fail, trend, workers_seen = [], [], [], []
        start = end = None
        sent = []
        pending = list(schedule)
        tick = 0
        for _ in range(int(args.duration) + 120):
            tick += 1
            next_at = t0 + tick
            now = time.monotonic() - t0
            while pending and pending[0][0] <= now:
                at, sig = pending.pop(0)
                kill_quietly(mpid, getattr(signal, "SIG" + sig))
                sent.append((round(now, 2), sig))
                log(f"  +{now:6.1f} s  {sig}")
            ts = time.monotonic()
            try:
                text = scrape(mport)
                scrape_ms.append((time.monotonic() - ts) * 1000)
                if REQUESTS not in text:
                    scrape_fail.append((round(now, 1), f"no {REQUESTS} in the answer"))
            except Exception as e:  # noqa: BLE001 - any failure is recorded
                scrape_fail.append((round(now, 1), f"{type(e).__name__}: {e}"))
            workers_seen.append(len(live_children(mpid)))
            sample = {"t": round(now, 1), "rss_kib": rss_kib(mpid), "fds": nfds(mpid),
                      "files": len(store_files(store)), "workers": workers_seen[-1],
                      "cpu_s": cpu_s(mpid), "scrape_ms": scrape_ms[-1] if scrape_ms else None,
                      "series": text.count("\n") if "text" in locals() else None}
            if tick % 10 == 0:
                trend.append(sample)
            if start is None and now >= args.warmup:
                start = sample
                log(f"  start sample: {start}")
            if end is None and now >= args.duration - 2:
                end = sample
                log(f"  end sample: {end}")
            if wrk.poll() is not None:
                break
            if master.proc.poll() is not None:
                raise RuntimeError(f"gpe-master exited with {master.proc.returncode} under load")
            time.sleep(max(0.0, next_at - time.monotonic()))
        wrk_out, _ = wrk.communicate(timeout=args.duration + 60)
        w = parse_wrk(wrk_out)
        if w["requests"] is None:
            raise RuntimeError(f"wrk printed no result (exit {wrk.returncode}):\n{wrk_out}")
        report["wrk"] = w
        report["wrk_raw"] = wrk_out

        # 5. totals, after the load and before the master stops
        time.sleep(SETTLE)
        text = scrape(mport)
        after = {"rss_kib": rss_kib(mpid), "fds": nfds(mpid), "files": len(store_files(store)),
                 "workers": len(live_children(mpid))}
        gpe_total = sum(v for _, v in samples(text, REQUESTS))
        exits = {label(l, "reason"): int(v) for l, v in samples(text, "gunicorn_master_worker_exits_total") if v}
        restarts = {label(l, "reason"): int(v) for l, v in samples(text, "gunicorn_master_worker_restart_total") if v}
        sigs = {label(l, "signal"): int(v) for l, v in samples(text, "gunicorn_master_signals_total") if v}
        spawns = int(sum(v for _, v in samples(text, "gunicorn_master_worker_spawns_total")))
        py = subprocess.run([sys.executable, "-c", PY_SUM, store, REQUESTS], capture_output=True, text=True,
                            timeout=120)
        if py.returncode:
            raise RuntimeError(f"prometheus_client failed: {py.stderr}")
        py_total, py_series = float(py.stdout.split()[0]), int(py.stdout.split()[1])
        r = Redis(rport)
        keys = r.keys()
        dbsize = r.dbsize()
        redis_total, redis_series = redis_requests_total(r, keys)
        groups = key_groups(keys)
        r.close()
        files_end = store_files(store)
        # after the load every file but the archives and the lock should belong to a live worker
        live = set(live_children(mpid))
        stale = [f for f in files_end if re.fullmatch(r"[a-z_]+_(\d+)\.db", f)
                 and int(re.fullmatch(r"[a-z_]+_(\d+)\.db", f).group(1)) not in live]
        if stale:
            notes.append(f"files of processes that are not live workers after the load: {stale}")
        # no new series any more: does the master's RSS still grow scrape after scrape?
        rss_rescrape = [rss_kib(mpid)]
        for _ in range(10):
            scrape(mport)
            rss_rescrape.append(rss_kib(mpid))
            time.sleep(0.2)
        if after["workers"] != expected_workers:
            failures.append(f"{after['workers']} live workers after the load, expected {expected_workers} "
                            "(the configured 4, HUP restoring it, TTIN +1, TTOU -1)")

        expected = w["requests"] + master.probes["ok"]
        tol = args.connections + sum(w["sock"].values()) + master.probes["sent"]
        totals = {"master /metrics": gpe_total, "prometheus_client MultiProcessCollector": py_total,
                  "Redis (proc hashes + archive)": redis_total}
        for what, v in totals.items():
            if abs(v - expected) > tol:
                failures.append(f"{what}: {v:,.0f} requests, expected {expected:,} ± {tol}")
        if start is None or end is None:
            failures.append("no start or end sample (the load ended early?)")
        else:
            if start["rss_kib"] is not None and end["rss_kib"] - start["rss_kib"] > args.max_rss_growth_kib:
                failures.append(f"master RSS grew from {start['rss_kib']} KiB to {end['rss_kib']} KiB "
                                f"(bound +{args.max_rss_growth_kib} KiB)")
            if end["fds"] - start["fds"] > args.max_fd_growth:
                failures.append(f"master fds grew from {start['fds']} to {end['fds']} (bound +{args.max_fd_growth})")
        if sum(w["sock"].values()) or w["non2xx"]:
            failures.append(f"wrk errors: {w['sock']}, non-2xx {w['non2xx']}")
        if scrape_fail:
            failures.append(f"{len(scrape_fail)} failed scrapes, first {scrape_fail[:3]}")
        report.update(
            expected=expected, tol=tol, totals=totals, py_series=py_series, redis_series=redis_series,
            dbsize=dbsize, groups=groups, start=start, end=end, after=after, trend=trend,
            scrape_ms=scrape_ms, exits=exits, restarts=restarts, sigs=sigs, spawns=spawns, sent=sent,
            probes=dict(master.probes), files_end=files_end, rss_rescrape=rss_rescrape, stale=len(stale),
            expected_workers=expected_workers, workers_min=min(workers_seen),
            workers_max=max(workers_seen), mpid=mpid, rport=rport)
    except Exception as e:
        failures.append(f"run failed: {e}")
        log(f"ERROR: {e}")
    finally:
        kill_group(wrk, STOP_WAIT)
        if master is not None:
            rc = master.stop()
            report["master_rc"] = rc
            with open(master.logfile, errors="replace") as f:
                lines = f.read().splitlines()
            report["log_lines"] = len(lines)
            report["log_problems"] = [l for l in lines if re.search(r"\b(WARN|ERROR)\b", l)]
            if failures:
                kept = os.path.join(tempfile.gettempdir(), f"gpe-soak-master-{int(time.time())}.log")
                shutil.copyfile(master.logfile, kept)
                report["log_kept"] = kept
        if redis_proc is not None:
            kill_quietly(redis_proc.pid, signal.SIGTERM)
            try:
                redis_proc.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                kill_quietly(redis_proc.pid, signal.SIGKILL)
                redis_proc.wait(timeout=STOP_WAIT)
        if args_keep := os.environ.get("SOAK_KEEP"):
            log(f"SOAK_KEEP={args_keep}: {work} kept")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # report
    print()
    print(f"soak: {args.duration:g} s of wrk -t{args.threads} -c{args.connections} against gpe-master "
          f"--workers {WORKERS} --max-requests {args.max_requests} --max-requests-jitter "
          f"{args.max_requests_jitter} (example-axum), Redis sync on; {os.cpu_count()} cores; load "
          f"average at the end {loadavg()}")
    if "calibration_rps" in report:
        print(f"calibration: {report['calibration_rps']:,.0f} req/s with {WORKERS} workers, no --max-requests")
    if "wrk" in report:
        w = report["wrk"]
        print(f"wrk: {w['requests']:,} requests, {w['rps']:,.0f} req/s, p50 {w['p50_ms']:.2f} ms, "
              f"p99 {w['p99_ms']:.2f} ms, max {w['max_ms']:.1f} ms, socket errors {w['sock']}, non-2xx {w['non2xx']}")
    if "totals" in report:
        print(f"signals sent: {len(report['sent'])} ({', '.join(f'+{t:g} s {s}' for t, s in report['sent'])})")
        print(f"master counted: exits {report['exits']}, restarts {report['restarts']}, spawns "
              f"{report['spawns']}, signals {report['sigs']}; live workers per second min "
              f"{report['workers_min']}, max {report['workers_max']}")
        print()
        print("| | start (+{:g} s, under load) | end (−2 s, under load) | after the load (+{:g} s) |"
              .format(args.warmup, SETTLE))
        print("|---|---:|---:|---:|")
        s, e, a = report["start"] or {}, report["end"] or {}, report["after"]
        print(f"| master RSS (KiB) | {s.get('rss_kib')} | {e.get('rss_kib')} | {a['rss_kib']} |")
        print(f"| master open fds | {s.get('fds')} | {e.get('fds')} | {a['fds']} |")
        print(f"| files in PROMETHEUS_MULTIPROC_DIR | {s.get('files')} | {e.get('files')} | {a['files']} |")
        print(f"| live workers | {s.get('workers')} | {e.get('workers')} | {a['workers']} |")
        print()
        print()
        print("every 10 s: t (s), master RSS (KiB), fds, store files, live workers, master CPU since start "
              "(s), that second's scrape (ms), lines in that scrape:")
        print()
        print("    " + "\n    ".join(
            f"{x['t']:6.1f} {x['rss_kib']:7} {x['fds']:4} {x['files']:4} {x['workers']:2} "
            f"{x['cpu_s']:7.2f} {x['scrape_ms'] or 0:8.2f} {x['series'] or 0:7}" for x in report["trend"]))
        print()
        print(f"store files after the load: {' '.join(report['files_end'])} ({report['stale']} of processes "
              "that are not live workers)")
        print(f"master RSS (KiB) over 10 more scrapes after the load (no new series): "
              f"{' '.join(map(str, report['rss_rescrape']))}")
        print(f"live workers after the load: {report['after']['workers']} (expected from the schedule: "
              f"{report['expected_workers']})")
        sm = report["scrape_ms"]
        if sm:
            print(f"scrapes: {len(sm)} answered, p50 {pct(sm, 0.5):.2f} ms, p99 {pct(sm, 0.99):.2f} ms, "
                  f"max {max(sm):.2f} ms, mean {statistics.mean(sm):.2f} ms")
        print(f"Redis: DBSIZE {report['dbsize']}; keys by prefix: "
              + ", ".join(f"{k} {v}" for k, v in report["groups"].items()))
        print()
        print(f"requests: wrk {report['wrk']['requests']:,} + readiness probes {report['probes']['ok']} = "
              f"{report['expected']:,} expected, tolerance ± {report['tol']} (connections + socket errors "
              f"+ probes sent but not answered)")
        for what, v in report["totals"].items():
            print(f"  {what}: {v:,.0f} (difference {v - report['expected']:+,.0f})")
        print(f"  (series summed: prometheus_client {report['py_series']}, Redis {report['redis_series']})")
    if "log_lines" in report:
        print(f"master log: {report['log_lines']} lines, {len(report['log_problems'])} WARN/ERROR; master exit "
              f"status {report.get('master_rc')}")
        for l in report["log_problems"][:10]:
            print("    " + re.sub("\x1b\\[[0-9;]*m", "", l))
        if "log_kept" in report:
            print(f"master log kept at {report['log_kept']}")
    for n in notes:
        print(f"note: {n}")
    print()
    if "argv" in report:
        print("Commands (ports and temp paths vary per run):")
        print(f"    {command_line(__file__)}")
        print(f"    PROMETHEUS_MULTIPROC_DIR=<fresh dir> PROMETHEUS_BIND_ADDRESS=127.0.0.1 "
              f"PROMETHEUS_METRICS_PORT=<port> REDIS_ENABLED=true REDIS_HOST=127.0.0.1 "
              f"REDIS_PORT=<port> GPE_HOST_ID={HOST_ID} {' '.join(shlex.quote(a) for a in report['argv'])}")
        print(f"    {' '.join(shlex.quote(a) for a in report['wrk_argv'])}")
    if failures:
        print()
        for f in failures:
            print(f"FAIL: {f}")
        sys.exit(1)
    print("OK: totals agree, RSS and fds within bounds")


if __name__ == "__main__":
    main()

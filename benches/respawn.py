#!/usr/bin/env python3
"""Respawn latency and master footprint: gpe-master against gunicorn, same machine, same run.

    python3 benches/respawn.py              # from the repository root (or from anywhere)

For each master (gpe-master running example-socket-activated, gunicorn running a one-line WSGI
app), both with --workers 2 on a free loopback port:

* master RSS (VmRSS of /proc/<pid>/status) and master CPU over IDLE_SECONDS (default 10) of
  idleness (on-CPU time of all its threads, from /proc/<pid>/task/*/schedstat);
* KILLS (default 20) times: SIGKILL one worker, then
  (a) time until a new child process of the master exists (a tight loop over new /proc entries,
      checking their parent pid), and
  (b) time until that new worker has answered a request (GET / answers with the worker's pid, sent while an idle connection is held so that a busy sync worker does not win every accept;
      polled with one fresh connection at a time, only after (a), so (a) is not disturbed).
  Every wait is bounded (10 s), and the next kill waits until both workers are serving again.

Needs only the Python standard library; gunicorn (latest on PyPI) is installed into a venv under
/tmp if missing, and gpe-master + example-socket-activated are built in release into
$BENCH_TARGET_DIR (default <root>/target-bench). --no-build skips the cargo step.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

from benchlib import (
    PID_WSGI_APP, TARGET, cargo_build, ensure_gunicorn, environ_without, free_port, live_children,
    loadavg, log, log_tails, stat_fields,
)

WAIT = 10.0  # every wait is bounded by this many seconds


def ppid_of(pid):
    f = stat_fields(pid)
    return None if f is None else int(f[1])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ns(pid):
    """On-CPU time of every thread of pid, in ns (schedstat), and utime+stime in ticks."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    fields = stat_fields(pid)
    return total, int(fields[11]) + int(fields[12])


def get_pid(port, timeout=0.5):
    """GET / on a fresh connection; the pid in the answer, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")  # 1.0: no chunked body
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
                if len(data) > 65536:
                    break
    except OSError:
        return None
    body = data.partition(b"\r\n\r\n")[2].split()
    if not body:
        return None
    try:
        return int(body[-1])
    except ValueError:
        return None


def get_pid_spread(port, timeout=0.05):
    """GET / while an idle connection is held open: a sync worker (gunicorn's) that accepted the
    idle one is busy with it, so the request goes to another worker. Without this, one worker of
    a pre-fork server can win every accept and the other is never seen."""
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return None
    try:
        return get_pid(port, timeout)
    finally:
        idle.close()


def wait_serving(port, pids, deadline):
    """Until every pid of `pids` has answered (bounded); returns whether they all did."""
    seen = set()
    while time.monotonic() < deadline:
        p = get_pid_spread(port, 0.5)
        if p in pids:
            seen.add(p)
            if seen >= set(pids):
                return True
        elif p is None:
            time.sleep(0.01)
    return False


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def measure(name, argv, env, port, kills, idle_seconds, logfile):
    log(f"--- {name}: {' '.join(argv)}")
    out = open(logfile, "wb")
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    master = proc.pid
    result = {"name": name}
    try:
        deadline = time.monotonic() + WAIT
        kids = []
        while time.monotonic() < deadline:
            kids = live_children(master)
            if len(kids) == 2 and wait_serving(port, kids, min(deadline, time.monotonic() + 2)):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {logfile}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{name}: 2 serving workers not seen within {WAIT} s; see {logfile}")

        time.sleep(1.0)  # let the boot settle
        result["rss_kib"] = rss_kib(master)
        result["worker_rss_kib"] = sum(rss_kib(k) for k in live_children(master))
        ns0, t0 = cpu_ns(master)
        w0 = time.monotonic()
        time.sleep(idle_seconds)
        ns1, t1 = cpu_ns(master)
        wall = time.monotonic() - w0
        result["idle_cpu_ms"] = (ns1 - ns0) / 1e6
        result["idle_cpu_pct"] = (ns1 - ns0) / 1e9 / wall * 100
        result["idle_ticks"] = t1 - t0
        result["idle_wall"] = wall
        log(f"  master RSS {result['rss_kib']} KiB, workers {result['worker_rss_kib']} KiB, "
            f"idle CPU {result['idle_cpu_ms']:.2f} ms in {wall:.1f} s ({t1 - t0} ticks)")

        spawn, ready = [], []
        for i in range(kills):
            old = live_children(master)
            if len(old) != 2:
                raise RuntimeError(f"{name}: expected 2 workers, found {old}")
            victim = old[0]
            known = set(int(n) for n in os.listdir("/proc") if n.isdigit())
            t_kill = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            new = None
            limit = t_kill + WAIT
            # (a) tight loop: only /proc entries not seen before are read
            while new is None:
                now = time.perf_counter()
                if now > limit:
                    raise RuntimeError(f"{name}: no new worker {WAIT} s after kill #{i + 1}")
                for n in os.listdir("/proc"):
                    if not n.isdigit():
                        continue
                    p = int(n)
                    if p in known:
                        continue
                    if ppid_of(p) == master:
                        new = p
                        break
                    known.add(p)
            t_spawn = time.perf_counter()
            # (b) until the new worker answers a request
            answered = None
            while time.perf_counter() < limit:
                if get_pid_spread(port) == new:
                    answered = time.perf_counter()
                    break
            if answered is None:
                raise RuntimeError(f"{name}: new worker {new} did not answer within {WAIT} s")
            spawn.append((t_spawn - t_kill) * 1000)
            ready.append((answered - t_kill) * 1000)
            # both workers serving again before the next kill
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and len(live_children(master)) != 2:
                time.sleep(0.01)
            time.sleep(0.2)
        result["spawn_ms"] = spawn
        result["ready_ms"] = ready
        log(f"  new child after kill: median {statistics.median(spawn):.2f} ms, "
            f"p90 {percentile(spawn, 0.9):.2f} ms; answering: median {statistics.median(ready):.2f} ms, "
            f"p90 {percentile(ready, 0.9):.2f} ms")
    finally:
        try:
            os.killpg(master, signal.SIGINT)  # fast stop of the master and its workers
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(master, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(timeout=10)
        out.close()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=int(os.environ.get("KILLS", 20)))
    ap.add_argument("--idle-seconds", type=float, default=float(os.environ.get("IDLE_SECONDS", 10)))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.kills <= 1000 or not 0 < args.idle_seconds <= 120:
        ap.error("--kills must be in 1..1000 and --idle-seconds in (0, 120]")

    if not args.no_build:
        cargo_build("example-socket-activated")
    gunicorn, gversion = ensure_gunicorn()
    master_bin = os.path.join(TARGET, "release", "gpe-master")
    worker_bin = os.path.join(TARGET, "release", "example-socket-activated")

    load_before = loadavg()
    log(f"machine: {os.cpu_count()} cores; load average before: {load_before}; {gversion}")

    work = tempfile.mkdtemp(prefix="gpe-respawn.")
    try:
        store = os.path.join(work, "store")
        os.mkdir(store)
        env = environ_without(("GPE_", "LISTEN_", "GUNICORN_"))
        env["PROMETHEUS_MULTIPROC_DIR"] = store
        with open(os.path.join(work, "app.py"), "w") as f:
            f.write(PID_WSGI_APP)

        results = []
        port = free_port()
        results.append(measure(
            "gpe-master",
            [master_bin, "--workers", "2", "--bind", f"127.0.0.1:{port}", "--no-metrics", worker_bin],
            env, port, args.kills, args.idle_seconds, os.path.join(work, "gpe.log")))
        port = free_port()
        results.append(measure(
            "gunicorn",
            [gunicorn, "--workers", "2", "--bind", f"127.0.0.1:{port}", "--chdir", work, "app:app"],
            env, port, args.kills, args.idle_seconds, os.path.join(work, "gunicorn.log")))
    except Exception:
        log_tails(work, ("gpe.log", "gunicorn.log"), 20)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load_after = loadavg()
    g, u = results
    print()
    print(f"{args.kills} SIGKILLs of one of 2 workers per master; {gversion}; "
          f"load average before {load_before}, after {load_after}")
    print()
    print("| | gpe-master | gunicorn | ratio gpe/gunicorn |")
    print("|---|---:|---:|---:|")

    def row(label, a, b, fmt):
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f} |" if b else
              f"| {label} | {fmt.format(a)} | {fmt.format(b)} | — |")

    for key, label in (("spawn_ms", "kill → new child exists"), ("ready_ms", "kill → new worker answered")):
        row(f"{label}, median (ms)", statistics.median(g[key]), statistics.median(u[key]), "{:.2f}")
        row(f"{label}, p90 (ms)", percentile(g[key], 0.9), percentile(u[key], 0.9), "{:.2f}")
    row("master RSS (MiB)", g["rss_kib"] / 1024, u["rss_kib"] / 1024, "{:.1f}")
    row("workers' RSS, both (MiB)", g["worker_rss_kib"] / 1024, u["worker_rss_kib"] / 1024, "{:.1f}")
    row(f"master CPU over {args.idle_seconds:g} s idle (ms)", g["idle_cpu_ms"], u["idle_cpu_ms"], "{:.2f}")
    row("master CPU idle (% of one core)", g["idle_cpu_pct"], u["idle_cpu_pct"], "{:.3f}")
    print()
    for r in results:
        print(f"{r['name']} kill → new child (ms): " + " ".join(f"{x:.2f}" for x in r["spawn_ms"]))
        print(f"{r['name']} kill → answered (ms):  " + " ".join(f"{x:.2f}" for x in r["ready_ms"]))


if __name__ == "__main__":
    main()

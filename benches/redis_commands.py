#!/usr/bin/env python3
"""Redis commands per HTTP request: gpe (timer-driven sync) against gunicorn-prometheus-exporter.

    python3 benches/redis_commands.py              # from the repository root (or from anywhere)
    python3 benches/redis_commands.py --requests 5000 --concurrency 8 --no-build

Both systems run 4 workers in Redis mode against the same private redis-server (started by this
script on a free loopback port, `--save '' --appendonly no`, killed at the end), one after the
other, with FLUSHALL between them:

* gpe: `gpe-master --workers 4 ... example-axum` with PROMETHEUS_MULTIPROC_DIR=<fresh dir>,
  REDIS_ENABLED=true, REDIS_URL=redis://127.0.0.1:PORT/0: workers write to mmap files, the
  master syncs them to Redis on a timer (REDIS_SYNC_INTERVAL, default 1 s).
* gunicorn-prometheus-exporter (latest on PyPI, in a venv at /tmp/gpe-pyexp-venv with gunicorn
  23.*): gunicorn with 4 workers of its sync worker class
  `gunicorn_prometheus_exporter.PrometheusWorker`, hooks per its README (`redis_when_ready`),
  REDIS_ENABLED=true, REDIS_HOST/REDIS_PORT: every metric update is written to Redis.

For each: wait (bounded) until the workers answer, send WARMUP requests, then measure IDLE
seconds with no traffic (CONFIG RESETSTAT ... INFO commandstats), then CONFIG RESETSTAT, send
exactly REQUESTS requests from CONCURRENCY threads (http.client, keep-alive where the server
allows it), wait SETTLE seconds (one extra sync period) and read INFO commandstats. The script's
own CONFIG RESETSTAT is subtracted (the INFO that reads the stats is not in them). Counted window
= CONFIG RESETSTAT -> INFO; commands per worker per second = commands / (workers x that window).

gpe's totals are then checked: the sum of gunicorn_worker_requests_total on gpe-master's /metrics
and in Redis (the `counter\t...` fields of the `{prefix}:proc:*` hashes plus the archive) must be
>= REQUESTS.

Needs only the Python standard library (redis-server and cargo on PATH). gpe-master and
example-axum are built in release into $BENCH_TARGET_DIR (default <root>/target-bench) unless
--no-build. Every process started is killed on exit (process groups), also on errors.
"""

import argparse
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import (
    TARGET, cargo_build, environ_without, free_port, live_children, loadavg, log, log_tails,
)

VENV = "/tmp/gpe-pyexp-venv"
PY_PACKAGES = ["gunicorn==23.*", "gunicorn-prometheus-exporter[redis]"]
BOOT_WAIT = 30.0  # bound on every "until it answers" wait, seconds
PREFIX = "gunicorn"  # both systems' default key prefix

WSGI_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
"""

# Configured as the exporter's README says for Redis storage: its worker class, its hooks with
# `redis_when_ready` (sets up RedisStorageDict before the workers fork), settings from env vars.
GUNICORN_CONF = """\
from gunicorn_prometheus_exporter.hooks import (
    default_on_exit,
    default_on_starting,
    default_post_fork,
    default_worker_int,
    redis_when_ready,
)

workers = {workers}
worker_class = "gunicorn_prometheus_exporter.PrometheusWorker"
loglevel = "warning"
on_starting = default_on_starting
when_ready = redis_when_ready
worker_int = default_worker_int
on_exit = default_on_exit
post_fork = default_post_fork
"""


# --- a minimal RESP client -------------------------------------------------------------------


class RedisError(Exception):
    pass


class Resp:
    """One connection to redis, RESP2, blocking, with a timeout on every read."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")


def commandstats(r):
    """{command: calls} from INFO commandstats (subcommands spelled like config|resetstat)."""
    text = r.cmd("INFO", "commandstats").decode()
    stats = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            for kv in fields.split(","):
                k, _, v = kv.partition("=")
                if k == "calls":
                    stats[name] = int(v)
    return stats


class Window:
    """CONFIG RESETSTAT ... INFO commandstats, minus the script's own commands."""

    def __init__(self, port):
        self.port = port

    def __enter__(self):
        with Resp(self.port) as r:
            r.cmd("CONFIG", "RESETSTAT")
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        return False

    def read(self):
        with Resp(self.port) as r:
            stats = commandstats(r)
        self.seconds = time.monotonic() - self.t0
        # Ours: the CONFIG RESETSTAT (counted after it ran); the INFO reading the stats is not in
        # them. Nothing else of ours talks to redis inside a window.
        own = "config|resetstat" if "config|resetstat" in stats else "config"  # redis >= 7 / older
        stats[own] = stats.get(own, 0) - 1
        if stats[own] <= 0:
            del stats[own]
        self.stats = stats
        self.total = sum(stats.values())
        return self


# --- processes -------------------------------------------------------------------------------


class Procs:
    """Processes started in their own session; all killed (process group) by stop_all()."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, env, logfile, stop_signal, grace=10.0):
        """grace: seconds between stop_signal and SIGKILL to the whole group."""
        out = open(logfile, "wb")
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc, out, stop_signal, grace))
        return proc

    def stop(self, proc, what):
        """Stop proc, then warn about its children still alive (`what`: whose, in the warning)."""
        for i, (name, p, out, sig, grace) in enumerate(self.procs):
            if p is proc:
                del self.procs[i]
                self._stop(p, out, sig, grace)
                break
        left = live_children(proc.pid)
        if left:
            log(f"  warning: {what} children left: {left}")

    def stop_all(self):
        while self.procs:
            name, p, out, sig, grace = self.procs.pop()
            self._stop(p, out, sig, grace)

    @staticmethod
    def _stop(p, out, sig, grace):
        try:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                # Its children first, so that the master reaps them (no zombies left to init)...
                for child in live_children(p.pid):
                    try:
                        os.kill(child, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
            # ...then whatever is left in the group gets SIGKILL.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"warning: pid {p.pid} did not exit after SIGKILL")
        finally:
            out.close()


def http_get(port, path, timeout=2.0):
    """(status, body) of one GET on a fresh connection, or (None, error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)
    finally:
        conn.close()


def wait_until(what, pred, deadline, proc=None, logfile=None):
    """Poll pred() until true (bounded by deadline); fail early if proc died."""
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}; see {logfile}")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {BOOT_WAIT:g} s; see {logfile}")


def start_redis(procs, work):
    port = free_port()
    logfile = os.path.join(work, "redis.log")
    proc = procs.start("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no", "--dir", work],
                       os.environ.copy(), logfile, signal.SIGTERM)

    def pong():
        try:
            with Resp(port, timeout=0.5) as r:
                return r.cmd("PING") == "PONG"
        except (OSError, RedisError):
            return False

    wait_until("redis-server answering PING", pong, time.monotonic() + BOOT_WAIT, proc, logfile)
    with Resp(port) as r:
        version = r.cmd("INFO", "server").decode()
    version = next((l.split(":", 1)[1] for l in version.splitlines() if l.startswith("redis_version:")), "?")
    return port, version


# --- load ------------------------------------------------------------------------------------


def drive(port, path, n, concurrency, deadline_s):
    """Exactly n GETs (unless the deadline hits) from `concurrency` threads; returns a dict."""
    lock = threading.Lock()
    state = {"issued": 0, "ok": 0, "failed": 0, "retried": 0, "errors": {}}
    deadline = time.monotonic() + deadline_s

    stop = threading.Event()

    def take():
        with lock:
            if stop.is_set() or state["issued"] >= n or time.monotonic() > deadline:
                return False
            state["issued"] += 1
            return True

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            while take():
                status, err = None, None
                for attempt in range(2):
                    reused = conn.sock is not None
                    try:
                        conn.request("GET", path)
                        resp = conn.getresponse()
                        resp.read()
                        status = resp.status
                        if resp.will_close:
                            conn.close()
                        break
                    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                        # A keep-alive connection closed by the server before our request was
                        # read: retried once on a new connection, as HTTP clients do.
                        conn.close()
                        err = e
                        if attempt == 0 and reused:
                            with lock:
                                state["retried"] += 1
                            continue
                        break
                    except (OSError, http.client.HTTPException) as e:
                        conn.close()
                        err = e
                        break
                with lock:
                    if status == 200:
                        state["ok"] += 1
                    else:
                        state["failed"] += 1
                        key = f"HTTP {status}" if status is not None else type(err).__name__
                        state["errors"][key] = state["errors"].get(key, 0) + 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 15)  # bounded: 10 s per request at most
    except BaseException:  # e.g. SIGTERM: the threads stop after their current request
        stop.set()
        raise
    state["seconds"] = time.monotonic() - t0
    state["unsent"] = n - state["issued"]
    if any(t.is_alive() for t in threads):
        state["errors"]["driver thread stuck"] = 1
    return state


def measure(name, args, redis_port, port, master, logfile):
    """Warm-up, idle window, then the measured window. The system is already serving."""
    if args.warmup:
        w = drive(port, args.path, args.warmup, args.concurrency, args.deadline)
        if w["ok"] != args.warmup:
            raise RuntimeError(f"{name}: warm-up failed: {w}; see {logfile}")
    result = {"name": name}
    if args.idle_seconds > 0:
        with Window(redis_port) as win:
            time.sleep(args.idle_seconds)  # the idle measurement itself, not a synchronisation
            win.read()
        result["idle"] = win
        log(f"  idle {win.seconds:.2f} s: {win.total} commands {fmt_stats(win.stats)}")
    with Window(redis_port) as win:
        load = drive(port, args.path, args.requests, args.concurrency, args.deadline)
        time.sleep(args.settle)  # one extra sync period, so the last values reach redis
        win.read()
    result["win"] = win
    result["load"] = load
    log(f"  {load['ok']} ok, {load['failed']} failed, {load['unsent']} unsent in {load['seconds']:.2f} s "
        f"({load['ok'] / load['seconds']:.0f} req/s); window {win.seconds:.2f} s: {win.total} "
        f"commands {fmt_stats(win.stats)}")
    if load["errors"]:
        log(f"  errors: {load['errors']}")
    if len(live_children(master)) != args.workers:
        log(f"  warning: {name} has {len(live_children(master))} live workers, expected {args.workers}")
    return result


def fmt_stats(stats, top=None):
    items = sorted(stats.items(), key=lambda kv: (-kv[1], kv[0]))
    if top is not None and len(items) > top:
        rest = sum(v for _, v in items[top:])
        items = items[:top] + [("other", rest)]
    return ", ".join(f"{k} {v}" for k, v in items) if items else "none"


def requests_total_in_text(text):
    """Sum of gunicorn_worker_requests_total samples in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gunicorn_worker_requests_total"):
            rest = line[len("gunicorn_worker_requests_total"):]
            if rest[:1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
    return total


def requests_total_in_redis(redis_port):
    """Sum of gunicorn_worker_requests_total in gpe's Redis layout (live processes + archive)."""
    total = 0.0
    with Resp(redis_port) as r:
        keys, cursor = [], b"0"
        for _ in range(10000):  # bounded SCAN
            cursor, batch = r.cmd("SCAN", cursor, "MATCH", f"{PREFIX}:proc:*", "COUNT", 1000)
            keys += batch
            if cursor in (b"0", "0"):
                break
        # A process hash's fields are "{kind}\t{series key}"; the archive's "{host}\t{series key}".
        for key in keys + [f"{PREFIX}:archive:counter".encode()]:
            flat = r.cmd("HGETALL", key) or []
            archive = key.endswith(b":archive:counter")
            for field, value in zip(flat[0::2], flat[1::2]):
                head, _, series = field.partition(b"\t")
                if not archive and head != b"counter":
                    continue
                try:
                    parsed = json.loads(series)
                except ValueError:
                    continue
                if isinstance(parsed, list) and len(parsed) > 1 and parsed[1] == "gunicorn_worker_requests_total":
                    total += float(value.split()[0])
    return total


def clean_env():
    return environ_without(("GPE_", "LISTEN_", "GUNICORN_", "REDIS_", "PROMETHEUS_", "WEB_CONCURRENCY"))


def run_gpe(args, procs, work, redis_port):
    master_bin = os.path.join(TARGET, "release", "gpe-master")
    worker_bin = os.path.join(TARGET, "release", "example-axum")
    for b in (master_bin, worker_bin):
        if not os.access(b, os.X_OK):
            raise RuntimeError(f"{b} not found: build it (drop --no-build)")
    store = os.path.join(work, "gpe-store")
    os.mkdir(store)
    port, mport = free_port(), free_port()
    env = clean_env()
    env.update(PROMETHEUS_MULTIPROC_DIR=store, REDIS_ENABLED="true",
               REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", RUST_LOG="warn")
    if args.sync_interval is not None:
        env["REDIS_SYNC_INTERVAL"] = str(args.sync_interval)
    argv = [master_bin, "--workers", str(args.workers), "--bind", f"127.0.0.1:{port}",
            "--metrics-bind", f"127.0.0.1:{mport}", worker_bin]
    logfile = os.path.join(work, "gpe.log")
    log(f"--- gpe: {' '.join(argv)}")
    proc = procs.start("gpe-master", argv, env, logfile, signal.SIGINT)  # INT: fast stop
    try:
        deadline = time.monotonic() + BOOT_WAIT
        wait_until("gpe workers", lambda: len(live_children(proc.pid)) == args.workers, deadline, proc, logfile)
        wait_until("gpe answering /health", lambda: http_get(port, "/health")[0] == 200, deadline, proc, logfile)
        wait_until("gpe-master /metrics", lambda: http_get(mport, "/metrics")[0] == 200, deadline, proc, logfile)
        result = measure("gpe", args, redis_port, port, proc.pid, logfile)
        # Verification (after the window was read: these commands are not counted).
        status, body = http_get(mport, "/metrics", timeout=10)
        result["metrics_sum"] = requests_total_in_text(body.decode()) if status == 200 else float("nan")
        result["redis_sum"] = requests_total_in_redis(redis_port)
        want = args.requests
        ok_m = result["metrics_sum"] >= want
        ok_r = result["redis_sum"] >= want
        result["verified"] = ok_m and ok_r
        log(f"  check: sum of gunicorn_worker_requests_total on gpe-master /metrics = "
            f"{result['metrics_sum']:.0f}, in Redis = {result['redis_sum']:.0f} "
            f"(want >= {want}, = {want + args.warmup} with warm-up): "
            f"{'ok' if result['verified'] else 'MISMATCH'}")
        return result
    finally:
        procs.stop(proc, "gpe")


def ensure_venv():
    gunicorn = os.path.join(VENV, "bin", "gunicorn")
    py = os.path.join(VENV, "bin", "python")
    check = "import gunicorn_prometheus_exporter, redis, gunicorn; assert gunicorn.__version__.startswith('23.')"
    if not (os.path.exists(py) and subprocess.run([py, "-c", check], capture_output=True).returncode == 0):
        log(f"installing {' '.join(PY_PACKAGES)} into {VENV}")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-U"] + PY_PACKAGES,
                       check=True)
    versions = subprocess.run(
        [py, "-c", "from importlib.metadata import version as v; "
                   "print(v('gunicorn'), v('gunicorn-prometheus-exporter'), v('redis'), v('prometheus_client'))"],
        capture_output=True, text=True, check=True).stdout.split()
    return gunicorn, dict(zip(("gunicorn", "exporter", "redis-py", "prometheus_client"), versions))


def run_pyexp(args, procs, work, redis_port, gunicorn):
    app_dir = os.path.join(work, "pyapp")
    mp = os.path.join(work, "pyexp-multiproc")
    os.mkdir(app_dir)
    os.mkdir(mp)
    with open(os.path.join(app_dir, "app.py"), "w") as f:
        f.write(WSGI_APP)
    conf = os.path.join(app_dir, "gunicorn.conf.py")
    with open(conf, "w") as f:
        f.write(GUNICORN_CONF.format(workers=args.workers))
    port, mport = free_port(), free_port()
    env = clean_env()
    env.update(REDIS_ENABLED="true", REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis_port), REDIS_DB="0",
               PROMETHEUS_MULTIPROC_DIR=mp, PROMETHEUS_METRICS_PORT=str(mport),
               PROMETHEUS_BIND_ADDRESS="127.0.0.1", GUNICORN_WORKERS=str(args.workers))
    argv = [gunicorn, "-c", conf, "--bind", f"127.0.0.1:{port}", "--chdir", app_dir, "app:app"]
    logfile = os.path.join(work, "gunicorn.log")
    log(f"--- gunicorn-prometheus-exporter: {' '.join(argv)}")
    # INT: quick shutdown. Its workers do not exit on it (gunicorn kills them after
    # graceful_timeout, 30 s), so the group gets SIGKILL after 3 s.
    proc = procs.start("gunicorn", argv, env, logfile, signal.SIGINT, grace=3.0)
    try:
        deadline = time.monotonic() + BOOT_WAIT
        wait_until("gunicorn workers", lambda: len(live_children(proc.pid)) == args.workers, deadline, proc, logfile)
        wait_until("gunicorn answering /", lambda: http_get(port, args.path)[0] == 200, deadline, proc, logfile)
        wait_until("exporter /metrics", lambda: http_get(mport, "/metrics")[0] == 200, deadline, proc, logfile)
        result = measure("gunicorn-prometheus-exporter", args, redis_port, port, proc.pid, logfile)
        # Informational: its own /metrics (in Redis mode it reads Redis) after the window was read.
        status, body = http_get(mport, "/metrics", timeout=30)
        result["metrics_sum"] = requests_total_in_text(body.decode()) if status == 200 else float("nan")
        with Resp(redis_port) as r:
            result["keys"] = r.cmd("DBSIZE")
        if result["win"].total == 0 or not result["keys"]:
            raise RuntimeError("gunicorn-prometheus-exporter wrote nothing to Redis (fell back to files?); "
                               f"see {logfile}")
        log(f"  its /metrics: sum of gunicorn_worker_requests_total = {result['metrics_sum']:.0f}; "
            f"{result['keys']} keys in Redis")
        return result
    finally:
        procs.stop(proc, "gunicorn")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests in the measured window (default 2000)")
    ap.add_argument("--concurrency", type=int, default=4, help="driver threads (default 4)")
    ap.add_argument("--workers", type=int, default=4, help="worker processes per system (default 4)")
    ap.add_argument("--warmup", type=int, default=100, help="requests before the windows (default 100)")
    ap.add_argument("--idle-seconds", type=float, default=3.0,
                    help="idle window before the load, 0 to skip (default 3)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="wait after the last request before reading the stats (default 2 s)")
    ap.add_argument("--sync-interval", type=float, default=None,
                    help="REDIS_SYNC_INTERVAL for gpe-master (default: unset, gpe's default 1 s)")
    ap.add_argument("--path", default="/", help="request path (default /)")
    ap.add_argument("--deadline", type=float, default=90.0, help="bound on one load run, seconds (default 90)")
    ap.add_argument("--only", choices=("gpe", "pyexp"), help="run one system only")
    ap.add_argument("--no-build", action="store_true", help="skip the cargo build")
    args = ap.parse_args()
    if not (1 <= args.requests <= 1_000_000 and 1 <= args.concurrency <= 64 and 1 <= args.workers <= 32
            and 0 <= args.warmup <= 100_000 and 0 <= args.idle_seconds <= 60 and 0 <= args.settle <= 60
            and 1 <= args.deadline <= 600):
        ap.error("an argument is out of range")
    if not shutil.which("redis-server"):
        sys.exit("redis-server not found on PATH")

    # SIGTERM / SIGHUP: unwind through the finally blocks, which stop every process we started.
    def bail(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, bail)
    signal.signal(signal.SIGHUP, bail)

    if not args.no_build and args.only != "pyexp":
        cargo_build("example-axum", f" into {TARGET}")
    gunicorn, versions = (None, {}) if args.only == "gpe" else ensure_venv()

    load_before = loadavg()
    procs = Procs()
    work = tempfile.mkdtemp(prefix="gpe-redis-commands.")
    results = {}
    try:
        redis_port, redis_version = start_redis(procs, work)
        log(f"redis-server {redis_version} on 127.0.0.1:{redis_port}; {os.cpu_count()} cores, "
            f"load average {load_before}; {versions}")
        if args.only != "pyexp":
            results["gpe"] = run_gpe(args, procs, work, redis_port)
        if args.only != "gpe":
            with Resp(redis_port) as r:
                r.cmd("FLUSHALL")
            results["pyexp"] = run_pyexp(args, procs, work, redis_port, gunicorn)
    except BaseException:
        log_tails(work, ("gpe.log", "gunicorn.log", "redis.log"), 30)
        raise
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    load_after = loadavg()
    report(args, results, versions, redis_version, load_before, load_after)
    bad = [r for r in results.values() if r["load"]["failed"] or r["load"]["unsent"]]
    if "gpe" in results and not results["gpe"]["verified"]:
        bad.append(results["gpe"])
    return 1 if bad else 0


def report(args, results, versions, redis_version, load_before, load_after):
    cols = []
    if "gpe" in results:
        cols.append(("gpe (gpe-master + example-axum)", results["gpe"]))
    if "pyexp" in results:
        cols.append((f"gunicorn-prometheus-exporter {versions.get('exporter', '?')} "
                     f"(gunicorn {versions.get('gunicorn', '?')}, sync)", results["pyexp"]))
    ratio = len(cols) == 2

    def row(label, values, fmt, ratio_ok=True):
        cells = [fmt.format(v) if isinstance(v, (int, float)) else str(v) for v in values]
        if ratio:
            a, b = values
            if ratio_ok and isinstance(a, (int, float)) and isinstance(b, (int, float)) and a:
                cells.append(f"{b / a:,.0f}×" if b / a >= 10 else f"{b / a:.2f}×")
            else:
                cells.append("")
        print("| " + label + " | " + " | ".join(cells) + " |")

    cmd = ["python3", "benches/redis_commands.py"] + sys.argv[1:]
    if "BENCH_TARGET_DIR" in os.environ:
        cmd = [f"BENCH_TARGET_DIR={shlex.quote(os.environ['BENCH_TARGET_DIR'])}"] + cmd
    print()
    print(f"Command: `{' '.join(shlex.quote(c) if not c.startswith('BENCH_TARGET_DIR=') else c for c in cmd)}`")
    print()
    print(f"{args.workers} workers each, {args.requests} GET {args.path} from {args.concurrency} threads "
          f"after {args.warmup} warm-up requests; redis-server {redis_version} (private, loopback); "
          f"counted window = CONFIG RESETSTAT → INFO commandstats (the requests, then {args.settle:g} s "
          f"for the last sync); gpe sync interval "
          f"{args.sync_interval if args.sync_interval is not None else 'default (1 s)'}; "
          f"load average before {load_before}, after {load_after}.")
    print()
    head = "| | " + " | ".join(c[0] for c in cols) + (" | exporter / gpe |" if ratio else " |")
    print(head)
    print("|---|" + "---:|" * (len(cols) + (1 if ratio else 0)))
    rs = [c[1] for c in cols]
    row("HTTP requests ok / failed", [f"{r['load']['ok']} / {r['load']['failed']}" for r in rs], "{}")
    # (the driver's Python threads, not the server, bound gpe's figure: no ratio)
    row("driver throughput (req/s)", [r["load"]["ok"] / r["load"]["seconds"] for r in rs], "{:,.0f}",
        ratio_ok=False)
    row("request time / counted window (s)",
        [f"{r['load']['seconds']:.2f} / {r['win'].seconds:.2f}" for r in rs], "{}")
    row("Redis commands in the window", [r["win"].total for r in rs], "{:,}")
    row("Redis commands per HTTP request", [r["win"].total / max(1, r["load"]["ok"]) for r in rs], "{:,.3f}")
    row("Redis commands per worker per second",
        [r["win"].total / (args.workers * r["win"].seconds) for r in rs], "{:,.1f}")
    if all("idle" in r for r in rs):
        row(f"idle ({args.idle_seconds:g} s, no requests): commands per worker per second",
            [r["idle"].total / (args.workers * r["idle"].seconds) for r in rs], "{:,.2f}")
    row("commands in the window, by name", [fmt_stats(r["win"].stats, top=5) for r in rs], "{}", ratio_ok=False)
    if "gpe" in results:
        g = results["gpe"]
        print()
        print(f"gpe check: gunicorn_worker_requests_total summed = {g['metrics_sum']:.0f} on gpe-master "
              f"/metrics, {g['redis_sum']:.0f} in Redis (>= {args.requests}): "
              f"{'ok' if g['verified'] else 'MISMATCH'}")
    for r in rs:
        if r["load"]["retried"]:
            print(f"{r['name']}: {r['load']['retried']} requests retried once on a new connection "
                  "(keep-alive closed by the server)")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Reload (HUP) and binary upgrade (USR2, then TERM to the old master) under wrk load: gpe-master
against gunicorn, same machine, same run.

    python3 benches/reload.py              # from the repository root (or from anywhere)

For each server (gpe-master running example-axum, gunicorn running a one-line WSGI app, both with
--workers 4 on a fresh loopback port) and each action:

* baseline: nothing is sent;
* HUP: SIGHUP to the master at ACTION_AT (default 3 s) into the load;
* USR2: SIGUSR2 to the master at ACTION_AT, then (polled, bounded) until the new master's pidfile
  (`<pidfile>.2`) holds a new pid, `<pidfile>` still holds the old one (both servers: the old
  master keeps its pidfile, as gunicorn >= 19.6 does) and the new master has 4 children that have
  each answered a request; then SIGTERM to the old master (the new one then renames `<pidfile>.2`
  to `<pidfile>`);

the server is started fresh, waited for (bounded polling), and loaded with
`wrk -t2 -c16 -d10s --latency http://127.0.0.1:PORT/` (under `timeout`). Alongside wrk, a probe
process (this script with --probe, so that it shares no GIL with the polling above) sends GET / on
a fresh connection, one at a time, and counts successes per 0.5 s bucket and every failure
(refused, reset, timeout, non-200) with its time.

Reported per run: wrk requests/s, p99, wrk failures (socket errors + non-2xx/3xx), probe failures,
and the worst 0.5 s probe bucket relative to the median bucket (the dip).

Which process answered a request is known from the body for gunicorn (the app answers with its
pid) and, for example-axum (whose body carries no pid), by looking up the server side of the
still-open keep-alive connection with sock_diag (netlink) and finding the worker that holds that
socket inode.

Needs only the Python standard library and wrk; gunicorn (latest on PyPI) is installed into a venv
under /tmp if missing (as benches/respawn.py does), and gpe-master + example-axum are built in
release into $BENCH_TARGET_DIR (default <root>/target-bench). --no-build skips the cargo step.
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
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import (
    PID_WSGI_APP, TARGET, alive, cargo_build, command_line, ensure_gunicorn, environ_without,
    free_port, interrupt, kill_group, live_children, loadavg, log, parse_wrk, reap_or_kill, wait_gone,
    wrk_argv,
)

WORKERS = 4
BUCKET = 0.5  # seconds per probe bucket
WINDOW = 3.0  # the dip is also looked for in [action, action + WINDOW) (baseline: same times)
BOOT_WAIT = 20.0  # bound on a server's first boot (4 children, GET / answered)
ALL_ANSWER_WAIT = 5.0  # bound on seeing each of the 4 workers answer, after that
UPGRADE_WAIT = 6.0  # bound on the new master being ready after USR2 (TERM is not sent otherwise)
STOP_WAIT = 10.0  # bound on each stop step
WRK_SLACK = 15  # wrk runs under `timeout` -d + this many seconds


# ---------------------------------------------------------------------------------------------
# /proc helpers


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# HTTP and "which worker answered"

NLMSG_ERROR = 2
SOCK_DIAG_BY_FAMILY = 20
NETLINK_SOCK_DIAG = 4
INET_DIAG_NOCOOKIE = 0xFFFFFFFF


def server_side_inode(port, client_port):
    """Inode of the server side (127.0.0.1:port <- 127.0.0.1:client_port) of a TCP connection, by
    an exact sock_diag lookup (no dump of the whole table, which TIME_WAIT entries make large);
    falls back to /proc/net/tcp. None if not found (or not yet accepted: inode 0)."""
    lo = socket.inet_aton("127.0.0.1") + b"\0" * 12
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            req = (struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
                   + struct.pack("!HH", port, client_port) + lo + lo
                   + struct.pack("=III", 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE))
            nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, 1, 1, 0) + req)
            data = nl.recv(65536)
        if len(data) >= 16 + 72:
            _, mtype, _, _, _ = struct.unpack_from("=IHHII", data, 0)
            if mtype == SOCK_DIAG_BY_FAMILY:
                sport, dport = struct.unpack_from("!HH", data, 16 + 4)
                inode = struct.unpack_from("=I", data, 16 + 4 + 48 + 16)[0]
                # a lookup can fall back to the listener (dport 0): that inode is every worker's
                if sport == port and dport == client_port and inode:
                    return inode
                return None
            if mtype == NLMSG_ERROR:
                return None
    except OSError:
        pass
    want_local = f"0100007F:{port:04X}"
    want_remote = f"0100007F:{client_port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want_local and parts[2] == want_remote:
                    return int(parts[9]) or None
    except OSError:
        pass
    return None


def owner_of_inode(inode, pids):
    link = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == link:
                    return pid
            except OSError:
                pass
    return None


def read_response(s, limit=65536):
    """One HTTP/1.x response from s: (status, headers bytes, body), reading the body by
    Content-Length when given, else to EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            break
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    status = int(m.group(1)) if m else None
    cl = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if cl:
        n = int(cl.group(1))
        while len(body) < n:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
    else:
        while len(body) <= limit:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
    return status, head, body


def who_answers(port, candidates, timeout=1.0):
    """GET / on a fresh keep-alive connection; the pid (one of `candidates`, or from the body)
    of the worker that answered 200, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_response(s)
            if status != 200:
                return None
            m = re.fullmatch(rb"ok (\d+)", body.strip())
            if m:  # gunicorn's app tells its pid
                return int(m.group(1))
            inode = server_side_inode(port, s.getsockname()[1])
            return owner_of_inode(inode, candidates) if inode else None
    except OSError:
        return None


def answers_200(port, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            return read_response(s)[0] == 200
    except OSError:
        return False


def see_all_answer(port, kids, deadline, hold_idle):
    """Poll until every pid of kids has answered a request (bounded by deadline); the set seen.
    hold_idle: keep an idle connection open during each request (a sync worker that took it is
    busy, so the request goes to another one)."""
    seen = set()
    for _ in range(100_000):
        if seen >= set(kids) or time.monotonic() >= deadline:
            break
        idle = None
        if hold_idle:
            try:
                idle = socket.create_connection(("127.0.0.1", port), timeout=0.2)
            except OSError:
                idle = None
        try:
            p = who_answers(port, kids, timeout=1.0)
        finally:
            if idle is not None:
                idle.close()
        if p in kids:
            seen.add(p)
        elif p is None:
            time.sleep(0.01)
    return seen


# ---------------------------------------------------------------------------------------------
# the probe (a separate process: --probe)


def probe_main(port, start, duration):
    """Sequential GET / on fresh connections from `start` (CLOCK_MONOTONIC, shared by processes)
    for `duration` s; prints JSON: successes per bucket and failures with times."""
    nbuckets = int(round(duration / BUCKET))
    buckets = [0] * nbuckets
    failures = []
    nfail = 0
    slowest = [0.0, 0.0, None, None, None]  # seconds, started at, connected after, sent after, outcome
    delay = start - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # a start time, not synchronisation
    end = start + duration
    for _ in range(2_000_000):
        now = time.monotonic()
        if now >= end:
            break
        err = None
        connected = sent = None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
                connected = time.monotonic() - now
                s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")  # 1.0: the server closes first
                sent = time.monotonic() - now
                status = read_response(s)[0]
                if status != 200:
                    err = f"status {status}" if status else "empty or malformed response"
        except socket.timeout:
            err = "timeout"
        except OSError as e:
            err = type(e).__name__ + (f" ({e.errno})" if e.errno else "")
        t = time.monotonic() - start
        if t - (now - start) > slowest[0]:
            slowest = [t - (now - start), now - start, connected, sent, err or "ok"]
        if err is None:
            i = int(t / BUCKET)
            if 0 <= i < nbuckets:
                buckets[i] += 1
        else:
            nfail += 1
            if len(failures) < 500:
                failures.append([round(t, 3), err])
            time.sleep(0.001)  # a refused connect returns at once: do not spin
    print(json.dumps({"buckets": buckets, "failures": failures, "nfail": nfail, "slowest": slowest}))


# ---------------------------------------------------------------------------------------------
# one run


class Run:
    def __init__(self, server, action, argv, env, port, pidfile, master_bin, logfile, args):
        self.server, self.action, self.argv, self.env = server, action, argv, env
        self.port, self.pidfile, self.master_bin, self.logfile = port, pidfile, master_bin, logfile
        self.args = args
        self.events = []  # (seconds since load start, text)
        self.notes = []
        self.new_master = None
        self.t0 = None

    def event(self, text):
        t = time.monotonic() - self.t0
        self.events.append((t, text))
        log(f"    +{t:6.3f} s  {text}")

    def ours(self, pid):
        """pid is still a process running our master binary (guards against pid reuse)."""
        cl = cmdline(pid)
        return alive(pid) and any(os.path.basename(self.master_bin).encode() in a for a in cl)

    def wait_ready(self, proc):
        deadline = time.monotonic() + BOOT_WAIT
        kids = []
        for _ in range(100_000):
            if proc.poll() is not None:
                raise RuntimeError(f"{self.server} exited with {proc.returncode}; see {self.logfile}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{self.server}: {WORKERS} workers answering not seen within "
                                   f"{BOOT_WAIT:g} s (children {kids}); see {self.logfile}")
            kids = live_children(proc.pid)
            if len(kids) == WORKERS and answers_200(self.port):
                break
            time.sleep(0.05)
        seen = see_all_answer(self.port, kids, time.monotonic() + ALL_ANSWER_WAIT,
                              hold_idle=self.server == "gunicorn")
        if len(seen) < WORKERS:
            self.notes.append(f"at start only {len(seen)}/{WORKERS} workers seen answering "
                              f"within {ALL_ANSWER_WAIT:g} s (all {WORKERS} alive)")
        return kids

    def do_hup(self, master, old_kids):
        os.kill(master, signal.SIGHUP)
        self.event("HUP sent")
        deadline = time.monotonic() + UPGRADE_WAIT
        old = set(old_kids)
        for _ in range(100_000):
            if time.monotonic() >= deadline:
                self.notes.append(f"HUP: {WORKERS} new workers with the old ones gone not seen "
                                  f"within {UPGRADE_WAIT:g} s")
                return
            kids = live_children(master)
            if len(kids) == WORKERS and not old & set(kids):
                self.event(f"{WORKERS} new workers, old ones gone")
                return
            time.sleep(0.02)

    def do_usr2(self, master):
        os.kill(master, signal.SIGUSR2)
        self.event("USR2 sent")
        deadline = time.monotonic() + UPGRADE_WAIT
        two = self.pidfile + ".2"
        stage = 0  # 0: waiting for pidfiles, 1: for 4 children, 2: for them answering
        kids, seen = [], set()
        for _ in range(100_000):
            if time.monotonic() >= deadline:
                break
            if stage == 0:
                new = read_pid(two)
                old = read_pid(self.pidfile)
                # the old master keeps <pidfile> until it exits (gpe-master and gunicorn >= 19.6)
                if new and new != master and alive(new) and old == master:
                    self.new_master = new
                    self.event(f"new master {new} in {os.path.basename(two)}, "
                               f"{os.path.basename(self.pidfile)} still {old}")
                    stage = 1
                    continue
                time.sleep(0.02)
            elif stage == 1:
                kids = live_children(self.new_master)
                if len(kids) == WORKERS:
                    self.event(f"new master has {WORKERS} children")
                    stage = 2
                    continue
                time.sleep(0.02)
            else:
                p = who_answers(self.port, kids, timeout=1.0)
                if p in kids:
                    seen.add(p)
                    if seen >= set(kids):
                        self.event(f"all {WORKERS} new workers answered")
                        break
                else:
                    time.sleep(0.005)
        if stage < 2 or not seen:
            self.notes.append(f"USR2: new master not ready within {UPGRADE_WAIT:g} s (stage {stage}); "
                              "old master NOT terminated")
            return
        if len(seen) < WORKERS:
            self.notes.append(f"USR2: only {len(seen)}/{WORKERS} new workers seen answering within "
                              f"{UPGRADE_WAIT:g} s; TERM sent anyway")
        os.kill(master, signal.SIGTERM)
        self.event("TERM sent to the old master")
        deadline = time.monotonic() + STOP_WAIT
        exited = promoted = False
        for _ in range(100_000):
            if time.monotonic() >= deadline:
                break
            if not exited and not alive(master):
                exited = True
                self.event("old master exited")
            if not promoted and read_pid(self.pidfile) == self.new_master:
                promoted = True
                self.event(f"new master promoted to {os.path.basename(self.pidfile)}")
            if exited and promoted:
                break
            time.sleep(0.02)
        if not (exited and promoted):
            self.notes.append(f"USR2: old master exited={exited}, new master promoted={promoted} "
                              f"after {STOP_WAIT:g} s")

    def run(self):
        args = self.args
        log(f"--- {self.server} / {self.action}")
        out = open(self.logfile, "ab")
        proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        master = proc.pid
        probe = wrk = None
        result = {"server": self.server, "action": self.action}
        try:
            kids = self.wait_ready(proc)
            self.t0 = time.monotonic() + 0.3
            probe = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--probe", "--port", str(self.port),
                 "--start", repr(self.t0), "--duration", str(args.duration)],
                stdout=subprocess.PIPE, text=True, start_new_session=True)
            time.sleep(max(0.0, self.t0 - time.monotonic()))  # a start time, not synchronisation
            wrk = subprocess.Popen(self.wrk_argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
            if self.action != "baseline":
                time.sleep(max(0.0, self.t0 + args.action_at - time.monotonic()))
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.server} exited under load; see {self.logfile}")
                if self.action == "HUP":
                    self.do_hup(master, kids)
                else:
                    self.do_usr2(master)
            wrk_out, _ = wrk.communicate(timeout=args.duration + 30)
            probe_out, _ = probe.communicate(timeout=args.duration + 30)
            result["wrk"] = parse_wrk(wrk_out)
            result["wrk_raw"] = wrk_out
            if result["wrk"]["rps"] is None:
                raise RuntimeError(f"wrk printed no result (exit {wrk.returncode}):\n{wrk_out}")
            result["probe"] = json.loads(probe_out)
        except Exception as e:  # one failed run does not stop the others
            result["error"] = str(e)
            log(f"  ERROR: {e}")
            try:
                with open(self.logfile, errors="replace") as f:
                    log("".join(f.readlines()[-20:]))
            except OSError:
                pass
        finally:
            for p in (wrk, probe):
                kill_group(p, STOP_WAIT)
            self.stop(proc)
            out.close()
        result["events"] = self.events
        result["notes"] = self.notes
        return result

    def wrk_argv(self):
        return wrk_argv(self.args, self.port, self.args.duration, WRK_SLACK)

    def stop(self, proc):
        """Stop the master(s) we started (and a re-exec'd one) and every worker: INT (quick
        shutdown) to the process group and to each master, then KILL whatever is left."""
        masters = [proc.pid] + ([self.new_master] if self.new_master and self.ours(self.new_master) else [])
        workers = [k for m in masters for k in live_children(m)]
        interrupt(proc, STOP_WAIT, others=masters[1:])
        left = reap_or_kill(proc, masters[1:] + workers, STOP_WAIT)
        if left:
            wait_gone(left, time.monotonic() + STOP_WAIT)


# ---------------------------------------------------------------------------------------------


def gunicorn_has(gunicorn, flag):
    out = subprocess.run([gunicorn, "--help"], capture_output=True, text=True).stdout
    return flag in out


def describe_slowest(sl):
    total, at, connected, sent, outcome = sl
    ms = lambda x: "—" if x is None else f"{x * 1000:.0f} ms"
    return (f"{ms(total)} started at +{at:.2f} s (connected after {ms(connected)}, request sent "
            f"after {ms(sent)}; {outcome})")


def dip(buckets, lo=0, hi=None):
    """(worst / median, worst bucket's start in s, median): the worst bucket among
    buckets[lo:hi], against the median of all buckets."""
    if not buckets:
        return None, None, None
    med = statistics.median(buckets)
    hi = len(buckets) if hi is None else min(hi, len(buckets))
    worst = min(range(lo, hi), key=lambda i: buckets[i])
    return (buckets[worst] / med if med else float("nan")), worst * BUCKET, med


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--duration", type=float, default=10.0, help="wrk -d, seconds (default 10)")
    ap.add_argument("--action-at", type=float, default=3.0, help="seconds into the load (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--servers", default="gpe-master,gunicorn")
    ap.add_argument("--actions", default="baseline,HUP,USR2")
    ap.add_argument("--worker", default="example-axum", choices=["example-axum", "example-actix", "example-hyper"],
                    help="gpe-master's worker binary (default example-axum)")
    # internal: the probe process
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        probe_main(args.port, args.start, args.duration)
        return
    if not (2 <= args.duration <= 60 and 0 < args.action_at < args.duration
            and 1 <= args.threads <= 16 and args.threads <= args.connections <= 1000):
        ap.error("need 2 <= --duration <= 60, 0 < --action-at < --duration, sane --threads/--connections")
    servers = [s for s in args.servers.split(",") if s]
    actions = [a for a in args.actions.split(",") if a]
    if not set(servers) <= {"gpe-master", "gunicorn"} or not set(actions) <= {"baseline", "HUP", "USR2"}:
        ap.error("--servers from gpe-master,gunicorn; --actions from baseline,HUP,USR2")
    if shutil.which("wrk") is None:
        sys.exit("wrk not found on PATH")
    # TERM (e.g. from `timeout`) unwinds like an exception, so every finally stops what we started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if not args.no_build and "gpe-master" in servers:
        cargo_build(args.worker)
    gunicorn, gversion = ensure_gunicorn() if "gunicorn" in servers else (None, "")
    master_bin = os.path.join(TARGET, "release", "gpe-master")
    worker_bin = os.path.join(TARGET, "release", args.worker)

    load_before = loadavg()
    log(f"machine: {os.cpu_count()} cores; load average before: {load_before}; {gversion}")

    work = tempfile.mkdtemp(prefix="gpe-reload.")
    results, commands = [], {}
    try:
        base_env = environ_without(("GPE_", "LISTEN_", "GUNICORN_", "PROMETHEUS_"))
        with open(os.path.join(work, "app.py"), "w") as f:
            f.write(PID_WSGI_APP)
        g_extra = []
        if gunicorn and gunicorn_has(gunicorn, "--no-control-socket"):
            # gunicorn >= 25.1 binds a control socket at a fixed per-user path by default
            # ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl): shared with anyone else's gunicorn
            # and re-bound by the USR2 master; not part of what is measured.
            g_extra = ["--no-control-socket"]
        for server in servers:
            for action in actions:
                n = len(results)
                d = os.path.join(work, f"{n}-{server}-{action}")
                os.mkdir(d)
                port = free_port()
                env = dict(base_env)
                if server == "gpe-master":
                    store = os.path.join(d, "store")
                    os.mkdir(store)
                    env["PROMETHEUS_MULTIPROC_DIR"] = store
                    env["RUST_LOG"] = "warn"
                    pidfile = os.path.join(d, "gpe.pid")
                    argv = [master_bin, "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}",
                            "--pid", pidfile, "--no-metrics", worker_bin]
                    mbin = master_bin
                else:
                    pidfile = os.path.join(d, "g.pid")
                    # --chdir with an absolute path: the USR2 master re-execs with the same argv
                    # and cwd, and imports app:app from there
                    argv = [gunicorn, "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}",
                            "--pid", pidfile, "--chdir", work, *g_extra, "app:app"]
                    mbin = "gunicorn"
                run = Run(server, action, argv, env, port, pidfile, mbin,
                          os.path.join(d, "server.log"), args)
                commands.setdefault(server, argv)
                commands.setdefault("wrk", run.wrk_argv())
                results.append(run.run())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = loadavg()

    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s against {WORKERS} workers; "
          f"action at {args.action_at:g} s; probe buckets {BUCKET:g} s; {os.cpu_count()} cores; "
          f"{gversion or 'gunicorn not run'}; load average before {load_before}, after {load_after}")
    print()
    print("| server | action | wrk req/s | p99 (ms) | wrk failed (socket errors + non-2xx) "
          "| probe failures (of requests) | worst 0.5 s probe bucket / median (at) "
          f"| worst bucket in {args.action_at:g}–{args.action_at + WINDOW:g} s / median (at) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['server']} | {r['action']} | error: {r['error'].splitlines()[0]} | | | | |")
            continue
        w, p = r["wrk"], r["probe"]
        breakdown = ", ".join(f"{k} {v}" for k, v in w["sock"].items() if v)
        if w["non2xx"]:
            breakdown = ", ".join(filter(None, [breakdown, f"non-2xx {w['non2xx']}"]))
        ratio, at, med = dip(p["buckets"])
        lo = int(round(args.action_at / BUCKET))
        wratio, wat, _ = dip(p["buckets"], lo, lo + int(round(WINDOW / BUCKET)))
        total = sum(p["buckets"]) + p["nfail"]
        print(f"| {r['server']} | {r['action']} | {w['rps']:.0f} | {w['p99_ms']:.2f} | "
              f"{w['errors']}{f' ({breakdown})' if breakdown else ''} | {p['nfail']} (of {total}) | "
              f"{ratio:.2f} ({at:g}–{at + BUCKET:g} s; median {med:g}/bucket) | "
              f"{wratio:.2f} ({wat:g}–{wat + BUCKET:g} s) |")
    print()
    for r in results:
        print(f"- {r['server']} / {r['action']}: "
              + ("; ".join(f"+{t:.2f} s {e}" for t, e in r.get("events", [])) or "no action"))
        for n in r.get("notes", []):
            print(f"  - note: {n}")
        fails = r.get("probe", {}).get("failures", [])
        if fails:
            kinds = {}
            for _, k in fails:
                kinds[k] = kinds.get(k, 0) + 1
            print(f"  - probe failures between +{fails[0][0]:.2f} s and +{fails[-1][0]:.2f} s: "
                  + ", ".join(f"{v}× {k}" for k, v in kinds.items()))
        if "probe" in r:
            print("  - probe successes per 0.5 s: " + " ".join(map(str, r["probe"]["buckets"]))
                  + "; slowest probe request: " + describe_slowest(r["probe"]["slowest"]))
    print()
    print("Commands (ports and temp paths vary per run):")
    print()
    print(f"    {command_line(__file__)}")
    for k in ("gpe-master", "gunicorn", "wrk"):
        if k in commands:
            prefix = "PROMETHEUS_MULTIPROC_DIR=<fresh dir> RUST_LOG=warn " if k == "gpe-master" else ""
            print(f"    {prefix}{' '.join(shlex.quote(a) for a in commands[k])}")


if __name__ == "__main__":
    main()

"""What the benchmark scripts share: processes from /proc, free ports, wrk's output, expositions.

Standard library only. Imported by `max_requests.py` and `soak/run.py`.
"""

import os
import re
import signal
import socket
import sys
import time
import urllib.request

def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def stat_fields(pid):
    """Fields after `(comm)` of /proc/<pid>/stat (state is [0], ppid [1]), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def alive(pid):
    f = stat_fields(pid)
    return f is not None and f[0] not in (b"Z", b"X")


def live_children(master):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = stat_fields(int(name))
        if f is not None and int(f[1]) == master and f[0] not in (b"Z", b"X"):
            out.append(int(name))
    return sorted(out)


TICK = os.sysconf("SC_CLK_TCK")


def kill_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def wait_gone(pids, deadline):
    for _ in range(100_000):
        if not any(alive(p) for p in pids) or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


def scrape(port, timeout=5.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        return r.read().decode()


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.M)


def samples(text, name):
    """[(labels text, value)] of the samples called `name` in an exposition."""
    return [(m.group(2) or "", float(m.group(3))) for m in SAMPLE.finditer(text) if m.group(1) == name]


def label(labels, key):
    m = re.search(rf'{key}="([^"]*)"', labels)
    return m.group(1) if m else None


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_wrk(out):
    r = {"rps": None, "requests": None, "p50_ms": None, "p99_ms": None, "max_ms": None,
         "sock": {"connect": 0, "read": 0, "write": 0, "timeout": 0}, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if m:
            r[key] = float(m.group(1)) * UNITS[m.group(2)]
    m = re.search(r"^\s*Latency\s+\S+?(?:us|ms|s|m)\s+\S+?(?:us|ms|s|m)\s+([\d.]+)(us|ms|s|m)", out, re.M)
    if m:
        r["max_ms"] = float(m.group(1)) * UNITS[m.group(2)]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["sock"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    r["errors"] = sum(r["sock"].values()) + r["non2xx"]
    return r


def reap_or_kill(proc, workers, wait):
    """After a stop signal: wait up to `wait` s for the master `proc` and its `workers` to be
    gone, then SIGKILL whatever is left (the master's process group included) and reap it."""
    left = wait_gone([proc.pid] + workers, time.monotonic() + wait)
    if proc.poll() is None or left:
        kill_quietly(-proc.pid, signal.SIGKILL)
        for p in left:
            kill_quietly(p, signal.SIGKILL)
        proc.wait(timeout=wait)


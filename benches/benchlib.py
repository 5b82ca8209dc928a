"""What the benchmark scripts share: processes from /proc, free ports, wrk's command and output,
expositions, the cargo build, and gunicorn in a venv.

Standard library only. Imported by the scripts of benches/ and by `soak/run.py`.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("BENCH_TARGET_DIR", os.path.join(ROOT, "target-bench"))
GUNICORN_VENV = "/tmp/gpe-respawn-venv"

# A one-line WSGI app for gunicorn that answers with its worker's pid.
PID_WSGI_APP = """\
import os
PID = str(os.getpid()).encode()
def app(e, s): s('200 OK', []); return [b'ok ' + PID]
"""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environ_without(prefixes):
    """os.environ without the variables whose names start with one of `prefixes` (a tuple)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


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


def kill_group(proc, wait):
    """SIGKILL the process group of `proc` (started with start_new_session) if it still runs,
    and reap it (at most `wait` s)."""
    if proc is not None and proc.poll() is None:
        kill_quietly(-proc.pid, signal.SIGKILL)
        proc.wait(timeout=wait)


def status_200(s):
    """Read the start of an HTTP answer from the socket s (until 12 bytes or EOF): whether its
    status line says 200. Raises OSError as recv does."""
    data = b""
    while len(data) < 12:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


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


def wrk_argv(args, port, duration, slack):
    """`wrk -t<args.threads> -c<args.connections> -d<duration>s --latency` against GET / on the
    loopback port, under `timeout` (duration + slack s, then KILL 5 s later)."""
    return ["timeout", "-k", "5", str(int(duration + slack)), "wrk", f"-t{args.threads}",
            f"-c{args.connections}", f"-d{duration:g}s", "--latency", f"http://127.0.0.1:{port}/"]


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


def interrupt(proc, wait, others=()):
    """SIGINT (quick shutdown) to the process group of the master `proc`, to the master itself and
    to each pid of `others` (other masters, e.g. a re-exec'd one); then wait up to `wait` s for
    `proc` to exit."""
    kill_quietly(-proc.pid, signal.SIGINT)
    for pid in [proc.pid, *others]:
        kill_quietly(pid, signal.SIGINT)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass


def reap_or_kill(proc, workers, wait):
    """After a stop signal: wait up to `wait` s for the master `proc` and its `workers` to be
    gone, then SIGKILL whatever is left (the master's process group included) and reap it.
    Returns the pids that were still there (and got SIGKILL)."""
    left = wait_gone([proc.pid] + workers, time.monotonic() + wait)
    if proc.poll() is None or left:
        kill_quietly(-proc.pid, signal.SIGKILL)
        for p in left:
            kill_quietly(p, signal.SIGKILL)
        proc.wait(timeout=wait)
    return left


def log_tails(work, names, lines):
    """Log the last `lines` lines of each file of `names` (in the directory `work`) that exists."""
    for name in names:
        path = os.path.join(work, name)
        if os.path.exists(path):
            log(f"--- {name} (last lines)")
            with open(path, errors="replace") as f:
                log("".join(f.readlines()[-lines:]))


# ---------------------------------------------------------------------------------------------
# building, and the programs to run


def cargo_build(worker, note=""):
    """`cargo build --release` of gpe-master and the package `worker` into TARGET (logged, with
    `note` after "(release)")."""
    log(f"building gpe-master and {worker} (release){note}...")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gpe-master", "-p", worker],
                   cwd=ROOT, env={**os.environ, "CARGO_TARGET_DIR": TARGET}, check=True)


def add_build_args(ap):
    """--no-build and --bin-dir, for built_binaries()."""
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", default=os.path.join(TARGET, "release"),
                    help="directory of gpe-master and example-axum (default $BENCH_TARGET_DIR/release)")


def built_binaries(args):
    """(gpe-master, example-axum) in --bin-dir, built first unless --no-build; exits if one is
    missing."""
    if not args.no_build:
        cargo_build("example-axum")
    bins = tuple(os.path.join(args.bin_dir, b) for b in ("gpe-master", "example-axum"))
    for b in bins:
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} not found (build it, or give --bin-dir)")
    return bins


def ensure_gunicorn():
    """gunicorn (latest on PyPI) in GUNICORN_VENV, installed there if missing: (path, version)."""
    gunicorn = os.path.join(GUNICORN_VENV, "bin", "gunicorn")
    if not os.path.exists(gunicorn):
        log(f"installing gunicorn (latest) into {GUNICORN_VENV}")
        subprocess.run([sys.executable, "-m", "venv", GUNICORN_VENV], check=True)
        subprocess.run([os.path.join(GUNICORN_VENV, "bin", "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "-U", "gunicorn"], check=True)
    version = subprocess.run([gunicorn, "--version"], capture_output=True, text=True).stdout.strip()
    return gunicorn, version


def command_line(script):
    """`python3 <script, relative to ROOT> <this run's arguments>`, shell-quoted: how to run it
    again."""
    argv = [os.path.relpath(os.path.abspath(script), ROOT)] + sys.argv[1:]
    return f"python3 {' '.join(shlex.quote(a) for a in argv)}"


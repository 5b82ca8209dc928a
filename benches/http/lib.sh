# Shell helpers shared by the scripts of benches/http (sourced; some use the caller's
# $server_pid).

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Wait (at most $2 seconds, default 10) until the port answers GET / with 200.
wait_ready() {
  local port="$1" secs="${2:-10}" i
  for i in $(seq 1 $((secs * 20))); do
    if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/" 2>/dev/null; then return 0; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then echo "server exited before answering" >&2; return 1; fi
    sleep 0.05
  done
  echo "server not ready on port $port after $secs s" >&2
  return 1
}

# Stop $server_pid: INT, then KILL after 5 s (some bench servers ignore INT).
stop_server() {
  [ -n "$server_pid" ] || return 0
  kill -INT "$server_pid" 2>/dev/null || true
  local i
  for i in $(seq 1 50); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# The CPUs wrk runs on when the server is pinned to CPU 0: all the others.
wrk_cpus() {
  echo "1-$(($(nproc) - 1))"
}

# The CPU time (user + system, in clock ticks) the process $1 and its children have used so far.
cpu_ticks() {
  local total=0 p t
  for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
    # Fields after the command name (which is in parentheses): utime and stime are 12th and 13th.
    t="$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')" || continue
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

# Exit unless every tool after $1 (the script's name, for the message) is on PATH.
need_tools() {
  local who="$1" tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$who needs $tool" >&2; exit 1; }
  done
}

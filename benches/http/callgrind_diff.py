#!/usr/bin/env python3
"""Function-by-function difference of two callgrind dumps, in self instructions per request.

    python3 benches/http/callgrind_diff.py BASE.callgrind OTHER.callgrind REQUESTS [TOP]

The dumps are the ones `KEEP_DUMPS=DIR bash benches/http/instructions.sh` keeps (both taken with
the same REQUESTS). Prints the TOP (default 40) functions whose self instructions per request
differ most, as `difference  base  other  function`, then the total difference. As in
instructions.sh, the thread's entry frames (listed at their inclusive cost, over half of the
total) are skipped. The binary's
path and name are taken out of the function names, so that the same function in two servers
(axum-bare and axum-gpe, say) compares as one.
"""

import re
import subprocess
import sys

LINE = re.compile(r"^\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(.*)$")


def self_cost(dump, requests):
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", dump],
        capture_output=True, text=True, check=True,
    ).stdout
    cost, total = {}, None
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = n
        elif total is not None and n <= total / 2:
            name = re.sub(r"\s*\[[^\]]*/benches/http/target/[^\]]*\]", "", m.group(2))
            cost[name] = cost.get(name, 0.0) + n / requests
    if total is None:
        sys.exit(f"{dump}: no PROGRAM TOTALS line from callgrind_annotate")
    return cost, total / requests


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    requests = int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) == 5 else 40
    (a, a_total), (b, b_total) = self_cost(sys.argv[1], requests), self_cost(sys.argv[2], requests)
    names = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0.0) - a.get(k, 0.0)))
    for k in names[:top]:
        print(f"{b.get(k, 0.0) - a.get(k, 0.0):+9.1f} {a.get(k, 0.0):9.1f} {b.get(k, 0.0):9.1f}  {k[:150]}")
    print(f"total {b_total - a_total:+.1f} instructions per request ({a_total:.0f} -> {b_total:.0f})")


if __name__ == "__main__":
    main()

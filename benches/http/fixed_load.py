#!/usr/bin/env python3
"""Send exactly N HTTP/1.1 GET requests to 127.0.0.1:PORT over C keep-alive connections.

Used by instructions.sh, where the server runs under valgrind and a request count that is known
exactly (unlike wrk's, which stops at a deadline) turns the server's instruction total into
instructions per request. Every response must be 200 with a body; anything else exits 1.

    python3 fixed_load.py PORT PATH REQUESTS [CONNECTIONS]
"""

import http.client
import sys
import threading


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    port, path, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    conns = int(sys.argv[4]) if len(sys.argv) == 5 else 4
    if total < 0 or conns < 1:
        print("REQUESTS must be >= 0 and CONNECTIONS >= 1", file=sys.stderr)
        return 2
    errors: list[str] = []

    def worker(n: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            for _ in range(n):
                c.request("GET", path)
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or not body:
                    errors.append(f"GET {path}: status {r.status}, {len(body)} body bytes")
                    return
        except OSError as e:
            errors.append(f"GET {path}: {e}")
        finally:
            c.close()

    shares = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in shares if n]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("\n".join(errors[:5]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Scrape of 16 processes x 1,000 series: Python prometheus_client vs gpe-core, same files.

Run from the repository root:  python3 gpe-core/benches/scrape_vs_python.py
It writes the files with 16 Python processes, times Python's MultiProcessCollector +
generate_latest over them, then runs the criterion bench `scrape_16x1000` over the same
directory and prints both and their ratio.
"""
import importlib.metadata
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def writer(directory):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import Counter, Gauge, Histogram

    c = Counter("bench_requests_total", "Requests.", ["endpoint", "method"])
    for i in range(800):
        c.labels(f"/e{i // 4}", ["GET", "POST", "PUT", "DELETE"][i % 4]).inc(i)
    g = Gauge("bench_in_flight", "In flight.", ["endpoint"], multiprocess_mode="livesum")
    for i in range(100):
        g.labels(f"/e{i}").set(i)
    h = Histogram("bench_latency_seconds", "Latency.", ["endpoint"])
    for i in range(100):
        h.labels(f"/e{i}").observe(i / 100)


def main():
    directory = tempfile.mkdtemp(prefix="gpe-scrape-bench-")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=writer, args=(directory,)) for _ in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    def scrape():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)

    scrape()
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        size = len(scrape())
    py_ms = (time.perf_counter() - start) / runs * 1000
    print(f"python prometheus_client {importlib.metadata.version('prometheus_client')}: "
          f"{py_ms:.2f} ms per scrape ({size} bytes)")

    env = dict(os.environ, SCRAPE_BENCH_DIR=directory)
    subprocess.run(["cargo", "bench", "-p", "gpe-core", "--bench", "store", "--", "scrape_16x1000"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    est = os.path.join(target, "criterion", "scrape_16x1000", "gpe_gather_encode_text", "new", "estimates.json")
    with open(est) as f:
        rust_ms = json.load(f)["mean"]["point_estimate"] / 1e6
    print(f"gpe-core gather + encode_text: {rust_ms:.2f} ms per scrape")
    print(f"ratio python / gpe: {py_ms / rust_ms:.1f}x")


if __name__ == "__main__":
    main()

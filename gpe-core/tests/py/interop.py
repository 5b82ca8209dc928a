"""Interop oracle for gpe-core's multiprocess files, using Python prometheus_client 0.26.

usage:
  interop.py write   -- write a fixed set of metrics into $PROMETHEUS_MULTIPROC_DIR
  interop.py read    -- print the MultiProcessCollector's samples of $PROMETHEUS_MULTIPROC_DIR as JSON
"""
import json
import os
import sys

if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    sys.exit("PROMETHEUS_MULTIPROC_DIR must be set")

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402


def write():
    c = Counter("py_requests_total", "Requests from Python.", ["method", "path"])
    c.labels("GET", "/ü").inc(3)
    c.labels("POST", '/q"x').inc(2.5)
    g = Gauge("py_temperature", "A max gauge.", ["room"], multiprocess_mode="max")
    g.labels("a").set(21.5)
    g2 = Gauge("py_in_flight", "A livesum gauge.", multiprocess_mode="livesum")
    g2.set(4)
    g3 = Gauge("py_memory", "An all gauge.")
    g3.set(1024)
    h = Histogram("py_latency_seconds", "Latency.", ["route"], buckets=[0.1, 0.5, 1.0, 1000000.0])
    for v in (0.05, 0.3, 0.7, 2.0, 2.0):
        h.labels("/a").observe(v)
    print(os.getpid())


def read():
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    out = []
    for metric in registry.collect():
        for s in metric.samples:
            out.append({"name": s.name, "labels": s.labels, "value": s.value, "type": metric.type})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]]()

#!/usr/bin/env python3
"""Parses a /metrics document with prometheus_client's text-format parser and checks it.

Usage: check_metrics.py FILE. Prints "OK <families> <samples>" and exits 0, or prints
every problem and exits 1 (2 when prometheus_client is missing).
"""
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("prometheus_client missing")
    sys.exit(2)

text = open(sys.argv[1], encoding="utf-8").read()
problems = []
families = {}
try:
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam
except Exception as e:  # the parser rejects malformed exposition
    print(f"parse error: {e}")
    sys.exit(1)

# Every family declared its TYPE and HELP lines (the parser reports "untyped" and an
# empty documentation otherwise).
for name, fam in families.items():
    if fam.type not in ("counter", "gauge", "histogram"):
        problems.append(f"{name}: type {fam.type}")
    if not fam.documentation:
        problems.append(f"{name}: no HELP")
    if not fam.samples:
        problems.append(f"{name}: no samples")
for line in text.splitlines():
    if line.startswith("# TYPE "):
        _, _, n, t = line.split(" ", 3)
        if f"# HELP {n} " not in text:
            problems.append(f"{n}: TYPE without HELP")

required = {
    "libellula_http_requests": "counter",
    "libellula_http_responses": "counter",
    "libellula_http_connections_open": "gauge",
    "libellula_lwkt_ipi_received": "counter",
    "libellula_lwkt_busy_seconds": "counter",
    "libellula_process_resident_bytes": "gauge",
    "libellula_http_service_seconds": "histogram",
    "libellula_domsg_round_trip_seconds": "histogram",
    "libellula_ipi_delivery_seconds": "histogram",
    "libellula_memcached_command_seconds": "histogram",
}
for name, t in required.items():
    fam = families.get(name)
    if fam is None:
        problems.append(f"missing family {name}")
    elif fam.type != t:
        problems.append(f"{name}: type {fam.type}, want {t}")

for name in ("libellula_http_requests", "libellula_lwkt_ipi_received"):
    fam = families.get(name)
    if fam and not all("cpu" in s.labels for s in fam.samples):
        problems.append(f"{name}: a sample without a cpu label")

hist = families.get("libellula_http_service_seconds")
if hist:
    by_cpu = {}
    for s in hist.samples:
        by_cpu.setdefault(s.labels.get("cpu"), []).append(s)
    served = 0
    for cpu, samples in by_cpu.items():
        kinds = {s.name.rsplit("_", 1)[-1] for s in samples}
        if kinds != {"bucket", "sum", "count"}:
            problems.append(f"http_service cpu {cpu}: series {sorted(kinds)}")
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        values = [s.value for s in buckets]
        if values != sorted(values):
            problems.append(f"http_service cpu {cpu}: buckets not cumulative")
        if buckets[-1].labels.get("le") != "+Inf":
            problems.append(f"http_service cpu {cpu}: last bucket is not +Inf")
        count = [s.value for s in samples if s.name.endswith("_count")][0]
        if count != buckets[-1].value:
            problems.append(f"http_service cpu {cpu}: _count {count} != +Inf bucket {buckets[-1].value}")
        served += count
    if served < 1:
        problems.append("http_service: no request recorded")

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"OK {len(families)} {sum(len(f.samples) for f in families.values())}")

"""Scrape time of ``/metrics``'s multiprocess files with dead workers, before and after folding them.

A worker process that counted every series the gateway has (every sign-in
outcome and reason seen in practice, SCIM method x resource x status,
forward-auth decisions, both histograms) exits; its files are copied as if
N more such workers had died; then the files are read as a scrape reads
them (prometheus_client's MultiProcessCollector), before and after
``gateway.metrics.archive.fold_dead_workers``. Prints the times (median of
5) and each as a ratio to the scrape of one worker's files, and checks the
samples are the same.

    .venv/bin/python bench/metrics_scrape.py [--dead 1 10 100 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = r"""
import os, time
from gateway.metrics import instruments as i
for outcome, reason in [("success", ""), ("refused", "expired"), ("refused", "signature_invalid"),
                        ("refused", "replay"), ("refused", "denied")]:
    i.SIGNINS.labels(outcome, reason).inc()
    i.SIGNIN_DURATION.observe(0.05)
for m in ("GET", "POST", "PATCH", "PUT", "DELETE"):
    for r in ("Users", "Groups", "discovery", "other"):
        for s in ("200", "201", "204", "400", "401", "404", "409"):
            i.SCIM_REQUESTS.labels(m, r, s).inc()
        i.SCIM_DURATION.labels(m, r).observe(0.01)
for decision in ("allow", "deny", "unauthenticated"):
    i.FORWARD_AUTH.labels(decision).inc()
i.METADATA_REFRESHED.set(time.time())
i.METADATA_FAILURES.inc()
print(os.getpid())
"""


def read(directory: str) -> tuple[float, bytes]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=directory)
    started = time.perf_counter()
    text = generate_latest(registry)
    return time.perf_counter() - started, text


def median_ms(directory: str) -> float:
    return sorted(read(directory)[0] for _ in range(5))[2] * 1000


def samples(text: bytes) -> set:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dead", type=int, nargs="+", default=[1, 10, 100, 1000])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from gateway.metrics.archive import fold_dead_workers

    baseline = None
    for dead in args.dead:
        directory = tempfile.mkdtemp(prefix="gateway-bench-metrics-")
        try:
            env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory, PYTHONPATH=str(ROOT))
            pid = int(
                subprocess.run(
                    [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, check=True
                ).stdout
            )
            files = os.listdir(directory)
            if baseline is None:
                # One worker's files, as if it were alive: what every scrape reads at least.
                baseline = median_ms(directory)
            for n in range(dead - 1):
                for name in files:
                    shutil.copy(
                        os.path.join(directory, name),
                        os.path.join(directory, name.replace(f"_{pid}.db", f"_{4_000_000 + n}.db")),
                    )
            before_text = read(directory)[1]
            before = median_ms(directory)
            started = time.perf_counter()
            fold_dead_workers(directory)
            folding = (time.perf_counter() - started) * 1000
            after = median_ms(directory)
            same = samples(before_text) == samples(read(directory)[1])
            left = len([n for n in os.listdir(directory) if n.endswith(".db")])
            print(
                f"{dead:5d} dead workers: scrape {before:8.1f} ms ({before / baseline:6.1f}x one worker's);"
                f" folding {folding:8.1f} ms once; then {after:6.1f} ms ({after / baseline:4.1f}x, {left} files);"
                f" same samples: {same}"
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()

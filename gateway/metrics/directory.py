"""Where the worker processes keep their metric values: prometheus_client's multiprocess directory.

Under Granian each worker process counts for itself; prometheus_client's
multiprocess mode has every process write its values to memory-mapped
files in one directory, and a scrape (in whichever worker answers it)
adds the files up. Two things that mode leaves to us:

* The directory must be chosen before ``prometheus_client`` is first
  imported (it picks its value class at import). :func:`ensure` runs
  before that import (``gateway.metrics.instruments`` calls it first
  thing): it keeps ``PROMETHEUS_MULTIPROC_DIR`` when the deployer set it,
  otherwise makes a fresh private directory and exports it, so that the
  workers Granian forks from the master (or spawns) write to the same one.
  One process (waitress) works the same way.
* The files of an earlier run must not add to this one: :func:`wipe` empties
  the directory when the server starts (``gateway.serve.granian`` in the
  master, before the workers fork). A directory :func:`ensure` made is new,
  hence empty; one the deployer set for waitress is theirs to empty before
  start (docs/operations.md).

The files of a worker that died or was replaced stay: its counts belong in
the totals, which must never go down. Scrapes fold them into one archive
(:mod:`gateway.metrics.archive`), so that they do not make scrapes slower.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def ensure() -> str:
    """The multiprocess directory, made (and exported to child processes) when none is set."""
    path = os.environ.get(VARIABLE)
    if path:
        os.makedirs(path, exist_ok=True)
        return path
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[VARIABLE] = path
    creator = os.getpid()
    # Removed when the process that made it exits (the master, or the one process);
    # a forked worker inherits the handler, hence the check.
    atexit.register(lambda: os.getpid() == creator and shutil.rmtree(path, ignore_errors=True))
    return path


def wipe() -> None:
    """Empty the directory at server start: counts of an earlier run are not this run's."""
    path = ensure()
    for name in os.listdir(path):
        if name.endswith(".db"):
            try:
                os.unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass

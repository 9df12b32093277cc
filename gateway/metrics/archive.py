"""The files of dead workers, folded into one archive so that scrapes stay fast.

Every worker process writes its values to files of its own
(``counter_<pid>.db``, ``histogram_<pid>.db``, ...) and a scrape reads all of
them. A worker that died (Granian replaces it) leaves its files: its counts
belong in the totals, which must never go down. But each replaced worker
would add its files to every later scrape, and a crash loop would make
scrapes slow (measured: docs/operations.md). So before a scrape reads the
directory, :func:`fold_dead_workers` adds the values of dead workers' files
into one archive file per kind (``counter_archive.db``, ...) and removes
them: the totals are the same, the number of files stays that of the live
workers plus the archive.

Gauges: those of mode ``max``/``min``/``sum`` fold like counters (by max, min
or sum); ``live*`` ones are simply removed (what prometheus_client's
``mark_process_dead`` does); ``all`` and ``mostrecent`` ones are left as they
are. The gateway's own gauges are read at scrape time (gateway.metrics.collector)
but for the metadata refresh time (``max``).

Folding and scraping take a lock on the directory (exclusive for folding,
shared for reading), so no scrape ever sees a dead worker counted twice or
not at all. A process that dies between replacing the archive and removing
the folded files would leave them counted twice; both steps are a few
file-system calls apart.

This is the one module that relies on prometheus_client internals: the
file format's writer (``prometheus_client.mmap_dict``). Reading and merging
use its public ``MultiProcessCollector.merge(files, accumulate=False)``,
documented for writing merged data back to files. tests/test_metrics.py
fails when the writer changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

ARCHIVE = "archive"
_LOCK = ".lock"
#: Gauge modes whose values fold into one (the others: removed with the worker, or kept per worker).
_FOLDED_GAUGES = ("max", "min", "sum")


@contextlib.contextmanager
def locked(path: str, exclusive: bool):
    """The directory's lock: shared to read the files, exclusive to fold them."""
    with open(os.path.join(path, _LOCK), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody's process, maybe a worker under another user: leave it
    return True


def _kind_and_pid(name: str) -> tuple[str, str]:
    """``counter_123.db`` -> ("counter", "123"); ``gauge_max_123.db`` -> ("gauge_max", "123")."""
    stem = name[:-3]
    kind, _, pid = stem.rpartition("_")
    return kind, pid


def dead_worker_files(path: str) -> dict[str, list[str]]:
    """{kind: files of processes that are gone}."""
    found: dict[str, list[str]] = {}
    status: dict[int, bool] = {}
    for file in glob.glob(os.path.join(path, "*.db")):
        kind, pid = _kind_and_pid(os.path.basename(file))
        if not pid.isdigit():
            continue  # the archive
        number = int(pid)
        if number not in status:
            status[number] = _alive(number)
        if not status[number]:
            found.setdefault(kind, []).append(file)
    return found


def fold_dead_workers(path: str) -> int:
    """Fold the files of dead workers into the archive; how many files were folded or removed."""
    if not dead_worker_files(path):
        return 0  # the common case, without taking the lock
    with locked(path, exclusive=True):
        dead = dead_worker_files(path)  # again: another worker may have folded them meanwhile
        replaced = []
        for kind, files in dead.items():
            if kind.startswith("gauge_live"):
                continue  # removed below, like mark_process_dead
            if kind.startswith("gauge_") and kind[len("gauge_") :] not in _FOLDED_GAUGES:
                files.clear()  # per worker by design: left alone
                continue
            archive = os.path.join(path, f"{kind}_{ARCHIVE}.db")
            sources = files + ([archive] if os.path.exists(archive) else [])
            replaced.append((_write(archive + ".new", MultiProcessCollector.merge(sources, accumulate=False)), archive))
        for new, archive in replaced:
            os.replace(new, archive)
        count = 0
        for files in dead.values():
            for file in files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(file)
                count += 1
        return count


def _write(path: str, metrics) -> str:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a leftover of an interrupted fold
    values = MmapedDict(path)
    try:
        for metric in metrics:
            for sample in metric.samples:
                key = mmap_key(
                    metric.name, sample.name, list(sample.labels), list(sample.labels.values()), metric.documentation
                )
                values.write_value(key, sample.value, sample.timestamp or 0.0)
    finally:
        values.close()
    return path

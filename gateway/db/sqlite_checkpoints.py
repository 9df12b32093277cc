"""SQLite: the WAL is copied into the database by a background thread, not by a request.

In WAL mode, SQLite's default is that the commit which takes the WAL past
1,000 pages also checkpoints it: copies those pages into the database file
and syncs it, while the request waits and, holding the write lock, every
writer after it waits too. On an Entra sync that is every few hundred
writes, and it was the slowest one in a hundred (measured: POST /Users p99
39 ms with it, 21 ms without; group PATCH p99 59-64 ms against 43-46 ms).

So the app's own engine (:func:`watch`) raises each connection's
``wal_autocheckpoint`` to :data:`SAFETY_NET_PAGES`, and one daemon thread
per database and process runs ``PRAGMA wal_checkpoint(PASSIVE)`` every
:data:`INTERVAL` seconds on a connection of its own. PASSIVE waits for no
reader or writer, and SQLite releases the GIL while it copies and syncs.
Should the thread fall behind or stop, writers checkpoint again at the
safety net's size, as before. The thread ends when every engine it serves
is disposed (before ``dispose()`` returns, so that no SQLite connection is
open when the server forks its workers) or garbage-collected, or when the
database file is gone.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref

import sqlalchemy as sa
from sqlalchemy import event

log = logging.getLogger(__name__)

#: Seconds between background checkpoints.
INTERVAL = 0.2
#: wal_autocheckpoint of the app's connections: writers checkpoint only if the WAL reaches this many pages.
SAFETY_NET_PAGES = 20_000

_threads: dict[str, threading.Thread] = {}
#: The live engines each thread serves; it ends when none is left.
_engines: dict[str, weakref.WeakSet] = {}
_wakers: dict[str, threading.Event] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # The parent's threads do not exist in a forked child (and one may have
    # held the lock): its own engines start their own.
    global _lock
    _lock = threading.Lock()
    _threads.clear()
    _engines.clear()
    _wakers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def watch(engine: sa.Engine, database: str) -> None:
    """Checkpoint ``database`` (a file path) in the background for ``engine``'s connections."""

    @event.listens_for(engine, "connect")
    def _raise_autocheckpoint(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA wal_autocheckpoint={SAFETY_NET_PAGES}")
        cursor.close()

    @event.listens_for(engine, "engine_disposed")
    def _forget(disposed):
        with _lock:
            _engines.get(database, set()).discard(disposed)
            thread = None if _engines.get(database) else _threads.get(database)
            if thread is not None:
                _wakers[database].set()
        if thread is not None and thread is not threading.current_thread():
            # Ended, its connection closed, before dispose() returns: the
            # server forks its workers right after disposing its engines, and
            # an SQLite connection open across a fork breaks the child's locks.
            thread.join(timeout=5)

    with _lock:
        _engines.setdefault(database, weakref.WeakSet()).add(engine)
        running = _threads.get(database)
        if running is not None and running.is_alive():
            return
        wake = _wakers[database] = threading.Event()
        thread = threading.Thread(
            target=_checkpoint_while_watched,
            args=(database, wake),
            name=f"sqlite-checkpoints:{os.path.basename(database)}",
            daemon=True,
        )
        _threads[database] = thread
        thread.start()


def checkpoint(connection: sqlite3.Connection) -> tuple[int, int, int]:
    """One PASSIVE checkpoint: (busy, frames in the WAL, frames checkpointed)."""
    return tuple(connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())


def _still_watched(database: str) -> bool:
    """Whether to go on; if not, the thread is deregistered in the same breath."""
    with _lock:
        if _engines.get(database) and os.path.exists(database):
            return True
        _engines.pop(database, None)
        if _threads.get(database) is threading.current_thread():
            del _threads[database]
            del _wakers[database]
        return False


def _checkpoint_while_watched(database: str, wake: threading.Event) -> None:
    connection = None
    try:
        while True:
            wake.wait(INTERVAL)
            if not _still_watched(database):
                return
            try:
                if connection is None:
                    connection = sqlite3.connect(database, timeout=0, check_same_thread=False)
                checkpoint(connection)
            except sqlite3.Error:
                # Locked for a moment, or the file is being replaced: try at the next tick.
                log.debug("background checkpoint of %s failed", database, exc_info=True)
                if connection is not None:
                    connection.close()
                    connection = None
    finally:
        if connection is not None:
            connection.close()

"""SQLite: writers take turns on a lock instead of SQLite's sleeping retry.

SQLite lets one connection write at a time. A second writer is refused with
SQLITE_BUSY and its busy handler *sleeps* (1, 2, 5, 10, 15, 20, 25 ... ms)
before trying again, even if the lock was freed a microsecond later: under
concurrent writes (an Entra sync's POSTs from several threads or worker
processes) much of the time goes into those sleeps, with the CPU idle.
Queuing the writers on a lock instead wakes the next one the moment the
previous one commits: a thread lock within the process, and an exclusive
``flock`` on a file beside the database (``<database>-writer``) between
the gateway's worker processes and its CLI (polled every millisecond at
most, and given up after ``BUSY_TIMEOUT`` like SQLite's own busy timeout).

The lock is taken where SQLite takes its write lock, at a transaction's first
write (``before_cursor_execute`` for statements SQLAlchemy runs,
:func:`before_write` for :mod:`gateway.db.prepared` ones), and freed once
SQLite has committed or rolled back (closing a connection with a transaction
open rolls it back). SQLAlchemy's ``commit`` and ``rollback`` events fire
*before* the DBAPI call, so they only hand the hold to the pooled connection;
the dialect's ``do_commit``/``do_rollback`` free it after SQLite is done. Freed
any earlier, the next writer would start while SQLite still held its write
lock (a commit that checkpoints the WAL takes milliseconds) and fall into the
busy handler's sleeps after all. Reading transactions never take it. A thread may write
on two connections at once, as before (the lock is re-entrant); SQLite then
decides, as it always did.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time

import sqlalchemy as sa
from sqlalchemy import event

#: How long a writer waits for the write lock before giving up with "database
#: is locked", as SQLite's own ``busy_timeout`` (set to the same on every connection).
BUSY_TIMEOUT = 30.0

_HELD = "gateway.sqlite_writer_held"
_ENDING = "gateway.sqlite_writer_ending"
_READS = ("SELECT", "PRAGMA", "EXPLAIN")


class _WriterLock:
    """Re-entrant for the owning thread; released by whoever ends the transaction.

    Each hold is a ticket, kept on the SQLAlchemy connection (for the commit
    and rollback events, which still fire on an invalidated connection whose
    ``info`` can no longer be read) and in the pool record's ``info`` (for the
    check-in safety net). A ticket is released once, by whichever comes first.
    """

    def __init__(self, path: str | None = None):
        self._lock = threading.Lock()
        # Opened on first use in each process (a forked worker opens its own).
        self._path = path
        self._file: tuple[int, int] | None = None  # (pid, fd)
        self._owner: int | None = None
        self._depth = 0
        self._tickets: set[object] = set()

    def hold(self) -> object:
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
        else:
            if not self._lock.acquire(timeout=BUSY_TIMEOUT):
                raise _locked("another thread of this process")
            try:
                self._lock_file(fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise
            self._owner = me
            self._depth = 1
        ticket = object()
        self._tickets.add(ticket)
        return ticket

    def release(self, ticket: object) -> None:
        if ticket not in self._tickets:
            return  # already released by the other path
        self._tickets.discard(ticket)
        self._depth -= 1
        if self._depth <= 0:
            self._depth = 0
            self._owner = None
            try:
                self._lock_file(fcntl.LOCK_UN)
            finally:
                self._lock.release()

    def _lock_file(self, operation: int) -> None:
        if self._path is None:
            return
        pid = os.getpid()
        if self._file is None or self._file[0] != pid:
            # Read-only is enough for flock, and works whoever created the file.
            self._file = (pid, os.open(self._path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        fd = self._file[1]
        if operation == fcntl.LOCK_UN:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
        # Polled rather than blocking, so a writer stuck in another process
        # ends in "database is locked" after BUSY_TIMEOUT instead of a hang.
        deadline = time.monotonic() + BUSY_TIMEOUT
        pause = 0.0001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _locked("another gateway process") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.001)


def _locked(holder: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError(
        None,
        None,
        sqlite3.OperationalError(f"database is locked: {holder} has held the write lock for {BUSY_TIMEOUT:.0f} s"),
    )


#: One lock per database file in a process, shared by every engine on it: a
#: thread writing through two engines holds it once, re-entrantly.
_LOCKS: dict[str, _WriterLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: str | None) -> _WriterLock:
    if path is None:
        return _WriterLock(None)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, _WriterLock(path))


def _hold(lock: _WriterLock, connection) -> None:
    if connection.__dict__.get(_HELD) is None:
        ticket = lock.hold()
        connection.__dict__[_HELD] = ticket
        connection.info[_HELD] = ticket


def before_write(connection) -> None:
    """Call before a statement that writes runs on ``connection`` outside SQLAlchemy's execution."""
    lock = getattr(connection.engine, "_gateway_writer_lock", None)
    if lock is not None:
        _hold(lock, connection)


def queue_writers(engine, database: str | None) -> None:
    """Queue ``engine``'s writers; ``database`` (the SQLite file, None in memory)
    names the lock file shared with other processes."""
    lock = _lock_for(f"{database}-writer" if database else None)
    engine._gateway_writer_lock = lock

    @event.listens_for(engine, "before_cursor_execute")
    def _before(connection, cursor, statement, parameters, context, executemany):
        if connection.__dict__.get(_HELD) is None and not statement.lstrip()[:7].upper().startswith(_READS):
            _hold(lock, connection)

    def _ending(connection):
        # Never touch connection.info here: on an invalidated connection it reconnects.
        ticket = connection.__dict__.pop(_HELD, None)
        if ticket is None:
            return
        if connection.invalidated or connection.closed:  # SQLite rolled back when the connection closed
            lock.release(ticket)
        else:
            connection.connection.info[_ENDING] = ticket  # freed by do_commit / do_rollback, after SQLite

    event.listen(engine, "commit", _ending)
    event.listen(engine, "rollback", _ending)

    dialect = engine.dialect  # one per engine
    for name in ("do_commit", "do_rollback"):
        dialect.__dict__[name] = _then_release(lock, getattr(dialect, name))

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection, record):
        # Safety net: a connection returned without a commit or rollback event,
        # or whose commit or rollback never reached the dialect.
        for key in (_HELD, _ENDING):
            ticket = record.info.pop(key, None)
            if ticket is not None:
                lock.release(ticket)


def _then_release(lock: _WriterLock, end):
    """``end`` (the dialect's do_commit or do_rollback), then free the hold it ended."""

    def ended(dbapi_connection):
        try:
            end(dbapi_connection)
        finally:
            try:
                ticket = dbapi_connection.info.pop(_ENDING, None)
            except (AttributeError, NotImplementedError):  # a raw or ad-hoc connection holds no ticket
                ticket = None
            if ticket is not None:
                lock.release(ticket)

    return ended

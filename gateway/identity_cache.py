"""Values kept in memory until the database reports a change that may affect them.

Forward-auth asks about the same few sessions thousands of times a second
(:class:`IdentityCache`); the SCIM server checks the same bearer token on
every request (a :class:`ChangeCache` watching ``scim_tokens``).
Rather than a time-to-live (which would let a deactivated person in until it
ran out), every cached entry is dropped the moment the database says that
something changed, and nothing is served from memory while the gateway cannot
tell:

- SQLite: ``PRAGMA data_version`` on a connection of each thread changes
  whenever any other connection, in this process or another, commits. It is
  checked before every cache read, so the check is exact.
- PostgreSQL: triggers on the sessions, users, groups, memberships and SCIM
  token tables ``NOTIFY gateway_identity`` with the table's name (migration
  0002); a listener thread in each process drops the caches that watch that
  table when a notification arrives, within milliseconds of the commit. While
  the listener is not connected, the caches are off.
- Every commit of a request's SQLAlchemy session in this process drops the
  identity cache synchronously, right after the commit, so a change made
  through this instance is seen by its very next request on either database.
  A cache that watches only some tables is dropped by a local commit only
  when the session says it wrote one of them (:func:`mark_written`).

Several caches share one detector (one watcher connection per thread on
SQLite, one listener connection per process on PostgreSQL): pass
``detector=`` to :func:`attach`.

A read races a change only through the generation counter: a value read
before a drop is never stored after it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from .db.prepared import Prepared, session_connection

log = logging.getLogger(__name__)

CHANNEL = "gateway_identity"


#: The tables whose changes may alter a signed-in identity.
IDENTITY_TABLES = frozenset({"sessions", "users", "groups", "group_members"})

#: PostgreSQL advisory lock class of a user's identity (the key is ``hashtext(user id)``):
#: shared by membership changes, exclusive for a sign-in (migration 0006).
IDENTITY_LOCK_CLASS = 7201


def hold_identity_lock(dbsession, user_id: str) -> None:
    """PostgreSQL: hold ``user_id``'s identity lock exclusively until the transaction ends.

    A sign-in takes it before it creates the session. A membership change of
    this user, which takes the lock shared before it looks for sessions to
    announce itself to, then either waits and sees the new session, or
    commits first and is seen by any identity read after the sign-in. A
    no-op on SQLite, whose change detection sees every commit.
    """
    connection = session_connection(dbsession)
    if connection.dialect.name == "postgresql":
        _IDENTITY_LOCK.execute(connection, {"user_id": user_id})


_IDENTITY_LOCK = Prepared(
    sa.select(
        sa.func.pg_advisory_xact_lock(IDENTITY_LOCK_CLASS, sa.func.hashtext(sa.bindparam("user_id", type_=sa.String)))
    )
)


class ChangeCache:
    """A dict in memory, dropped whenever one of ``tables`` may have changed.

    ``tables`` None means any table. ``local_commits`` drops it after every
    commit of the app's own ORM sessions (not only those that
    :func:`mark_written` one of its tables).
    """

    def __init__(self, max_entries: int = 50_000, tables: frozenset[str] | None = None, local_commits: bool = True):
        self.max_entries = max_entries
        self.tables = tables
        self.local_commits = local_commits
        self._entries: dict[str, Any] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self.detector = None
        self._on_clear: list = []

    def on_clear(self, callback) -> None:
        """Call ``callback()`` after every drop: for what is derived from the entries and must go with them."""
        self._on_clear.append(callback)

    def watches(self, table: str | None) -> bool:
        """Whether a change to ``table`` (None: unknown) may invalidate this cache."""
        return self.tables is None or table is None or table in self.tables

    def generation(self) -> int | None:
        """Check the database for changes; the generation to store under, or None when off."""
        detector = self.detector
        if detector is None or not detector.check(self):
            return None
        return self._generation

    def get(self, key: str):
        return self._entries.get(key)

    def put(self, key: str, value: Any, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # something changed while this value was being read
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = value

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
        for callback in self._on_clear:
            callback()

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
            self.detector = None
        self.clear()


class IdentityCache(ChangeCache):
    """Signed-in identities (forward-auth): dropped on any change to who is who."""

    def __init__(self, max_entries: int = 50_000):
        super().__init__(max_entries, tables=IDENTITY_TABLES, local_commits=True)


class _Detector:
    """What the detectors share: the caches they drop."""

    def __init__(self):
        self.caches: list[ChangeCache] = []

    def subscribe(self, cache: ChangeCache) -> None:
        self.caches.append(cache)
        cache.detector = self

    def clear(self, table: str | None = None) -> None:
        for cache in self.caches:
            if cache.watches(table):
                cache.clear()


class SqliteDataVersion(_Detector):
    """Exact change detection for a SQLite file, one watcher connection per thread.

    ``PRAGMA data_version`` does not say which table changed, so a change
    drops every subscribed cache.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self._local = threading.local()

    def check(self, cache: ChangeCache) -> bool:
        local = self._local
        cursor = getattr(local, "cursor", None)
        try:
            if cursor is None:
                connection = sqlite3.connect(self.path, check_same_thread=True)
                cursor = local.cursor = connection.cursor()
                local.version = None
            cursor.execute("PRAGMA data_version")
            version = cursor.fetchone()[0]
        except sqlite3.Error:
            log.warning("identity cache: cannot watch %s; serving from the database", self.path, exc_info=True)
            local.cursor = None
            return False
        if version != local.version:
            # First look from this thread, or a commit elsewhere since its last look.
            local.version = version
            self.clear()
        return True

    def close(self) -> None:
        cursor = getattr(self._local, "cursor", None)
        if cursor is not None:
            cursor.connection.close()


class PostgresNotifications(_Detector):
    """Drops the caches that watch the table a ``NOTIFY gateway_identity``
    names; off while not listening."""

    def __init__(self, conninfo: str, cache: ChangeCache):
        super().__init__()
        self.conninfo = conninfo
        self.subscribe(cache)
        self.listening = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="identity-cache-listener", daemon=True)
        self._thread.start()

    def check(self, cache: ChangeCache) -> bool:
        return self.listening

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    # Anything may have changed while nobody listened.
                    self.clear()
                    self.listening = True
                    backoff = 0.5
                    while not self._stop.is_set():
                        for notify in connection.notifies(timeout=1.0, stop_after=1):
                            # The payload is the changed table's name (migration 0002).
                            self.clear(notify.payload or None)
            except Exception:  # noqa: BLE001 - any failure means "not listening"; retry
                if not self._stop.is_set():
                    log.warning(
                        "identity cache: lost the PostgreSQL listener; serving from the database", exc_info=True
                    )
            finally:
                self.listening = False
                self.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def close(self) -> None:
        self._stop.set()


def attach(cache: ChangeCache, engine: sa.Engine, session_factory, detector=None) -> None:
    """Wire the cache to the database behind ``engine`` and to the app's ORM sessions.

    ``detector``: another cache's detector to share (``other.detector``)
    rather than opening a watcher of its own; closing either cache closes it.
    """
    url = engine.url
    if detector is not None:
        detector.subscribe(cache)
    elif url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            SqliteDataVersion(database).subscribe(cache)
    elif url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        from psycopg.conninfo import make_conninfo

        # SQLAlchemy URL query arguments (for example options=-csearch_path=...) are libpq parameters.
        conninfo = make_conninfo(
            conninfo.split("?", 1)[0], **{k: v for k, v in url.query.items() if isinstance(v, str)}
        )
        PostgresNotifications(conninfo, cache)

    @event.listens_for(session_factory, "after_commit")
    def _drop_on_local_commit(session):
        if cache.local_commits:
            cache.clear()
            return
        written = session.info.get(_WRITTEN)
        if written and any(cache.watches(table) for table in written):
            cache.clear()


_WRITTEN = "gateway.written_tables"


def mark_written(dbsession, *tables: str) -> None:
    """Say that ``dbsession`` wrote ``tables``: caches watching them are
    dropped right after it commits (other processes learn it from the database)."""
    dbsession.info.setdefault(_WRITTEN, set()).update(tables)


def wait_until_listening(cache: IdentityCache, timeout: float = 5.0) -> bool:
    """For tests and start-up checks: True once the detector can vouch for the cache."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detector = cache.detector
        if detector is not None and detector.check(cache):
            return True
        time.sleep(0.01)
    return False

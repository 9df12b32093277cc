"""Signed-in identities kept in memory until the database reports any change.

Forward-auth asks about the same few sessions thousands of times a second.
Rather than a time-to-live (which would let a deactivated person in until it
ran out), every cached entry is dropped the moment the database says that
something changed, and nothing is served from memory while the gateway cannot
tell:

- SQLite: ``PRAGMA data_version`` on a connection of each thread changes
  whenever any other connection, in this process or another, commits. It is
  checked before every cache read, so the check is exact.
- PostgreSQL: triggers on the sessions, users, groups and memberships tables
  ``NOTIFY gateway_identity`` (migration 0002); a listener thread in each
  process drops the cache when a notification arrives, within milliseconds of
  the commit. While the listener is not connected, the cache is off.
- Every commit of a request's SQLAlchemy session in this process drops the
  cache synchronously, right after the commit, so a change made through this
  instance is seen by its very next request on either database.

A read races a change only through the generation counter: an identity read
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

log = logging.getLogger(__name__)

CHANNEL = "gateway_identity"


class IdentityCache:
    def __init__(self, max_entries: int = 50_000):
        self.max_entries = max_entries
        self._entries: dict[str, Any] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self.detector = None

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

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
            self.detector = None
        self.clear()


class SqliteDataVersion:
    """Exact change detection for a SQLite file, one watcher connection per thread."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()

    def check(self, cache: IdentityCache) -> bool:
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
            cache.clear()
        return True

    def close(self) -> None:
        cursor = getattr(self._local, "cursor", None)
        if cursor is not None:
            cursor.connection.close()


class PostgresNotifications:
    """Drops the cache on ``NOTIFY gateway_identity``; off while not listening."""

    def __init__(self, conninfo: str, cache: IdentityCache):
        self.conninfo = conninfo
        self.cache = cache
        self.listening = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="identity-cache-listener", daemon=True)
        self._thread.start()

    def check(self, cache: IdentityCache) -> bool:
        return self.listening

    def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    # Anything may have changed while nobody listened.
                    self.cache.clear()
                    self.listening = True
                    backoff = 0.5
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            self.cache.clear()
            except Exception:  # noqa: BLE001 - any failure means "not listening"; retry
                if not self._stop.is_set():
                    log.warning("identity cache: lost the PostgreSQL listener; serving from the database", exc_info=True)
            finally:
                self.listening = False
                self.cache.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def close(self) -> None:
        self._stop.set()


def attach(cache: IdentityCache, engine: sa.Engine, session_factory) -> None:
    """Wire the cache to the database behind ``engine`` and to the app's ORM sessions."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            cache.detector = SqliteDataVersion(database)
    elif url.get_backend_name() == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        from psycopg.conninfo import make_conninfo

        # SQLAlchemy URL query arguments (for example options=-csearch_path=...) are libpq parameters.
        conninfo = make_conninfo(
            conninfo.split("?", 1)[0], **{k: v for k, v in url.query.items() if isinstance(v, str)}
        )
        cache.detector = PostgresNotifications(conninfo, cache)

    @event.listens_for(session_factory, "after_commit")
    def _drop_on_local_commit(session):
        cache.clear()


def wait_until_listening(cache: IdentityCache, timeout: float = 5.0) -> bool:
    """For tests and start-up checks: True once the detector can vouch for the cache."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detector = cache.detector
        if detector is not None and detector.check(cache):
            return True
        time.sleep(0.01)
    return False

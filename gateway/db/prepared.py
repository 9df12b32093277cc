"""Prebuilt statements run straight on the DBAPI cursor of a pooled connection.

The gateway's one way past SQLAlchemy's per-statement work: a statement is
compiled once per dialect, and values go through the column types' own bind
and result processors, so they are stored and come back exactly as with
``connection.execute`` (aware UTC datetimes, JSON, booleans); what is
skipped is SQLAlchemy's per-execution work (cache key, execution context,
result object), which costs more than the statement on SQLite. Two ways to
run one:

- :meth:`Prepared.execute` runs any statement (SELECT, INSERT, UPDATE,
  DELETE, with RETURNING) on a connection the caller already holds,
  typically the one of the request's session, so it joins the request's
  transaction (:func:`session_connection`).
- :meth:`Prepared.read` runs one SELECT alone on a pooled connection of a
  :func:`read_engine` (autocommit, no ping), for the hot read paths that
  need no transaction: forward-auth's "who is this session?" and the SCIM
  token check. A pooled connection that fails is thrown away and the read
  retried once on a fresh one.

Rules: bind parameters are named (``sa.bindparam("name")``); no ``IN``
lists (expanding parameters). DBAPI errors come back as SQLAlchemy's
exceptions (``sa.exc.IntegrityError`` ...), as from ``connection.execute``,
so callers and the transaction manager's retry policy see what they would.
Only public SQLAlchemy API is used (``Compiled.binds`` and ``positiontup``,
``TypeEngine.bind_processor`` and ``result_processor``, ``PoolProxiedConnection``).
"""

from __future__ import annotations

import logging
import threading
from collections import namedtuple
from typing import Any

import sqlalchemy as sa

from .sqlite_writer import before_write

log = logging.getLogger(__name__)


def read_engine(url: str) -> sa.Engine:
    """An engine for :meth:`Prepared.read`: autocommit (no BEGIN/ROLLBACK round
    trips around a single SELECT), no ping (a second round trip per request),
    no reset on return."""
    from gateway.db import create_engine

    return create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_reset_on_return=None)


class _Compiled:
    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.dialect = dialect
        self.sql = str(compiled)
        self.writes = not isinstance(statement, sa.Select)
        self.positional = dialect.positional
        names = list(compiled.positiontup or ()) if self.positional else list(compiled.binds)
        self.names = names
        binds = compiled.binds
        self.defaults = {
            name: binds[name].effective_value for name in names if binds[name].value is not None or binds[name].callable
        }
        self.binds = [(name, binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]
        columns = list(getattr(statement, "selected_columns", None) or statement.exported_columns)
        # Unnamed columns (count(*) has no key) become _0, _1 ... by position.
        self.row_type = namedtuple("Row", [str(c.key) for c in columns], rename=True) if columns else None
        processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
        self.result_processors = [(i, p) for i, p in enumerate(processors) if p is not None]

    def params(self, values: dict[str, Any]):
        defaults = self.defaults
        if self.positional:
            out = []
            for name, process in self.binds:
                value = values[name] if name in values else defaults[name]
                out.append(process(value) if process is not None else value)
            return tuple(out)
        out = {}
        for name, process in self.binds:
            value = values[name] if name in values else defaults[name]
            out[name] = process(value) if process is not None else value
        return out

    def convert(self, raw) -> list:
        make = self.row_type._make
        processors = self.result_processors
        if not processors:
            return [make(row) for row in raw]
        rows = []
        for row in raw:
            values = list(row)
            for index, process in processors:
                values[index] = process(values[index])
            rows.append(make(values))
        return rows


_CURSOR = "gateway.prepared_cursor"


def _cursor(pooled):
    """One DBAPI cursor per pooled connection, kept in its pool record's
    ``info`` for the statements of every request that checks it out (a new
    cursor per statement cost a fifth of a short statement's client time).
    A connection replaced by the pool gets a new one."""
    dbapi_connection = pooled.dbapi_connection
    cursor = pooled.info.get(_CURSOR)
    if cursor is None or cursor.connection is not dbapi_connection:
        cursor = pooled.info[_CURSOR] = dbapi_connection.cursor()
    return cursor


class Prepared:
    """One statement, compiled on first use for each dialect."""

    def __init__(self, statement):
        self.statement = statement
        self._compiled: dict[tuple, _Compiled] = {}
        self._lock = threading.Lock()

    def compiled(self, dialect) -> _Compiled:
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        found = self._compiled.get(key)
        if found is None:
            with self._lock:
                found = self._compiled.get(key) or _Compiled(self.statement, dialect)
                self._compiled[key] = found
        return found

    def execute(self, connection: sa.Connection, values: dict[str, Any]) -> tuple[list, int]:
        """Run on ``connection`` (in its transaction): (rows, rowcount); rows
        are named tuples of the selected or RETURNING columns."""
        compiled = self.compiled(connection.dialect)
        params = compiled.params(values)
        if compiled.writes:
            before_write(connection)
        cursor = _cursor(connection.connection)
        try:
            cursor.execute(compiled.sql, params)
            raw = cursor.fetchall() if compiled.row_type is not None else ()
            rowcount = cursor.rowcount
        except compiled.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(
                compiled.sql, params, exc, compiled.dialect.loaded_dbapi.Error, dialect=compiled.dialect
            ) from exc
        return (compiled.convert(raw) if raw else []), rowcount

    def rows(self, connection: sa.Connection, values: dict[str, Any]) -> list:
        return self.execute(connection, values)[0]

    def read(self, engine: sa.Engine, values: dict[str, Any]) -> list:
        """Run this SELECT alone on a pooled connection of ``engine`` (a
        :func:`read_engine`): its rows, as named tuples."""
        compiled = self.compiled(engine.dialect)
        params = compiled.params(values)
        error = compiled.dialect.loaded_dbapi.Error
        for attempt in (1, 2):
            pooled = engine.raw_connection()
            try:
                cursor = _cursor(pooled)
                cursor.execute(compiled.sql, params)
                raw = cursor.fetchall()
            except error as exc:
                pooled.invalidate()
                if attempt == 2:
                    raise sa.exc.DBAPIError.instance(
                        compiled.sql, params, exc, error, dialect=compiled.dialect
                    ) from exc
                log.warning("a read failed on a pooled connection; retrying on a fresh one", exc_info=True)
                continue
            finally:
                pooled.close()
            return compiled.convert(raw) if raw else []
        raise AssertionError("unreachable")

    def execute_many(self, connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Run a writing statement (no RETURNING) once per row, with the driver's
        ``executemany`` (psycopg pipelines it; sqlite3 loops in C): the
        provisioning log writes its queue so, at a few microseconds a row."""
        compiled = self.compiled(connection.dialect)
        assert compiled.writes and compiled.row_type is None, "execute_many is for statements without rows"
        params = [compiled.params(values) for values in rows]
        before_write(connection)
        cursor = _cursor(connection.connection)
        try:
            cursor.executemany(compiled.sql, params)
        except compiled.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(
                compiled.sql, params[:1], exc, compiled.dialect.loaded_dbapi.Error, dialect=compiled.dialect
            ) from exc


def session_connection(dbsession, *, write: bool = False) -> sa.Connection:
    """The connection of ``dbsession``'s transaction (begun if need be).

    ``write``: tell the transaction manager the session is joined to, if
    any, that it wrote (as zope.sqlalchemy's listener does for ORM
    statements), so the transaction commits instead of rolling back as
    read-only.
    """
    connection = dbsession.connection()
    if write:
        from .tm import mark_changed

        mark_changed(dbsession)
    return connection


class FastSelect:
    """A :class:`Prepared` SELECT bound to a :func:`read_engine`: ``rows(values)``."""

    def __init__(self, engine: sa.Engine, statement: sa.Select):
        self.engine = engine
        self.prepared = Prepared(statement)

    def rows(self, values: dict[str, Any]) -> list:
        return self.prepared.read(self.engine, values)

"""A prebuilt SELECT run straight on the DBAPI cursor, for the hot read paths.

Forward-auth asks "who is this session?" on every request a proxy sends, so
the per-request cost matters more than anywhere else. SQLAlchemy's Core
execution adds tens of microseconds per statement; this runs a statement
compiled once per dialect on a raw pooled connection, and uses the column
types' own (public) bind and result processors, so values come back exactly
as the ORM would return them (aware UTC datetimes, decoded JSON, booleans).

Give it an engine from :func:`read_engine`: autocommit (no BEGIN/ROLLBACK
round trips around a single SELECT) and no pre-ping (a ping is a second round
trip per request); a connection that fails is thrown away and the query
retried once on a fresh one.
"""

from __future__ import annotations

import logging
from collections import namedtuple
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)


def read_engine(url: str) -> sa.Engine:
    """An engine for single-statement reads: autocommit, no ping, no reset on return."""
    from gateway.db import create_engine

    return create_engine(
        url, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_reset_on_return=None
    )


class FastSelect:
    """One compiled SELECT; ``rows(params)`` returns named tuples, like SQLAlchemy rows."""

    def __init__(self, engine: sa.Engine, statement: sa.Select):
        dialect = engine.dialect
        self.engine = engine
        self.dialect = dialect
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = dialect.positional
        self.param_names = list(compiled.positiontup or ()) if self.positional else list(compiled.binds)
        self.bind_processors = {
            name: compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.param_names
        }
        self.row_type = namedtuple("Row", [c.key for c in statement.selected_columns])
        processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in statement.selected_columns]
        self.result_processors = [(i, p) for i, p in enumerate(processors) if p is not None]

    def _params(self, values: dict[str, Any]):
        converted = {}
        for name, process in self.bind_processors.items():
            value = values[name]
            converted[name] = process(value) if process is not None else value
        if self.positional:
            return tuple(converted[name] for name in self.param_names)
        return converted

    def _convert(self, row) -> tuple:
        values = list(row)
        for index, process in self.result_processors:
            values[index] = process(values[index])
        return self.row_type._make(values)

    def rows(self, values: dict[str, Any]) -> list[tuple]:
        params = self._params(values)
        for attempt in (1, 2):
            connection = self.engine.raw_connection()
            try:
                cursor = connection.cursor()
                cursor.execute(self.sql, params)
                raw = cursor.fetchall()
                cursor.close()
            except self.dialect.loaded_dbapi.Error:
                connection.invalidate()
                if attempt == 2:
                    raise
                log.warning("fast read failed on a pooled connection; retrying on a fresh one", exc_info=True)
                continue
            finally:
                connection.close()
            return [self._convert(row) for row in raw]
        raise AssertionError("unreachable")

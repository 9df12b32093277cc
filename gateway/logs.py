"""One JSON object per log line, for a log pipeline (Loki, Elasticsearch, CloudWatch ...).

Chosen in the ini's logging section, as Pyramid configures logging
(``pserve`` and the workers read it with ``logging.config.fileConfig``)::

    [formatter_json]
    class = gateway.logs.JsonFormatter

Built on python-json-logger rather than structlog: it is a plain
``logging.Formatter``, so the ini switches it on with no code, and every
library's log call (SQLAlchemy, pysaml2, Granian) comes out as JSON too,
without a second logging pipeline to configure.

Each line has ``time`` (ISO 8601, UTC), ``level``, ``logger`` and
``message``; in a request also its ``correlation_id`` (the ``X-Request-Id``
the response carries), its ``route`` and, once the session is read, the
``user_id``; ``exc_info`` when there is one. Nothing else of the request
goes in: no headers, cookies, tokens or bodies, whatever a message says.
"""

from __future__ import annotations

import datetime as dt

from pyramid.threadlocal import get_current_request
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

#: The record's own fields, under the names the lines use.
FIELDS = {"asctime": "time", "levelname": "level", "name": "logger", "message": "message"}


class JsonFormatter(_JsonFormatter):
    """``class = gateway.logs.JsonFormatter`` in a ``[formatter_*]`` section; its ``format`` is not needed."""

    def __init__(self, fmt=None, datefmt=None, style="%", *args, **kwargs):
        kwargs.setdefault("rename_fields", {k: v for k, v in FIELDS.items() if k != v})
        super().__init__(" ".join(f"%({name})s" for name in FIELDS), datefmt, "%", *args, **kwargs)

    def formatTime(self, record, datefmt=None) -> str:  # noqa: N802 - logging's name
        return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")

    def add_fields(self, log_data, record, message_dict) -> None:
        super().add_fields(log_data, record, message_dict)
        # Pyramid's request of this thread (its router sets it for each request), if any.
        request = get_current_request()
        if request is None:
            return
        try:
            log_data["correlation_id"] = request.correlation_id
            route = request.matched_route
            if route is not None:
                log_data["route"] = route.name
            from .sessions import _ENVIRON_KEY

            identity = request.environ.get(_ENVIRON_KEY)
            if identity is not None:
                log_data["user_id"] = identity.user_id
        except Exception:  # noqa: BLE001 - a log line must never fail for its extras
            pass

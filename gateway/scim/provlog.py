"""The provisioning log: one row per SCIM request, written off the request's path.

An operator must see at a glance that Entra's last cycle produced 400s and
why, but SCIM is the gateway's busiest write path (an initial sync is
thousands of requests a minute, half of them reads that open no
transaction). So a request only appends a tuple to an in-memory queue, in a
response callback (after pyramid_tm has committed or aborted, so the status,
the ``scimType`` and the duration are final, and a rolled-back write is still
logged); a thread per process writes the queue in one multi-row INSERT every
:data:`FLUSH_INTERVAL` seconds, on a connection and transaction of its own.
Measured (docs/admin-signins.md, "What it costs"): nothing on the request's
path, about 15 µs a row in the thread; bench/scim_sync.py saw no change
beyond noise.

What a crash loses is the last :data:`FLUSH_INTERVAL` seconds of rows;
``close()`` (server stop, tests) and the admin page flush at once.

Secrets never reach a row: the bearer token is not read here (only the name
of the token it matched), and bodies, kept only when
``admin.provisioning_log_bodies`` is on, lose every attribute whose name
looks like a secret (``password`` and the like) at any depth.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import logging
import os
import re
import threading
import time
import weakref
from urllib.parse import unquote_plus

import sqlalchemy as sa

from .. import jsoncodec
from ..db.models import ProvisioningLogEntry
from ..db.prepared import Prepared
from ..metrics import instruments

log = logging.getLogger(__name__)

#: Seconds between writes of the queue.
FLUSH_INTERVAL = 0.5
#: Rows written per INSERT at most; a longer queue is written in several.
BATCH = 1000
#: Rows kept in memory at most while the database does not take them (then the oldest go).
MAX_QUEUED = 100_000

_STARTED = "gateway.scim_started"
_BODY = "gateway.scim_body"
_SECRET = re.compile(r"pass(word|phrase)?|secret|token|credential|private|^pwd$", re.I)
_REDACTED = "(removed)"

_COLUMNS = (
    "at",
    "token_name",
    "method",
    "path",
    "status",
    "scim_type",
    "duration_ms",
    "correlation_id",
    "remote_addr",
    "resource_type",
    "resource_id",
    "resource_name",
    "error",
    "body",
)
#: One prebuilt INSERT, run with the driver's executemany for a whole batch.
_INSERT = Prepared(sa.insert(ProvisioningLogEntry).values({c: sa.bindparam(c) for c in _COLUMNS}))


def redact(value):
    """``value`` with every secret-looking attribute replaced, at any depth;
    a PATCH operation on a secret-looking path loses its value."""
    if isinstance(value, dict):
        path = value.get("path")
        if isinstance(path, str) and _SECRET.search(path.rsplit(":", 1)[-1]) and "value" in value:
            value = {**value, "value": _REDACTED}
        return {k: (_REDACTED if isinstance(k, str) and _SECRET.search(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _short(text, limit: int) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_of(body: bytes) -> tuple[str | None, str | None]:
    """(scimType, detail) of an error response: what the client was told, from the body it got."""
    try:
        body = jsoncodec.loads(body)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    scim_type, detail = body.get("scimType"), body.get("detail")
    return (
        _short(scim_type, 32) if isinstance(scim_type, str) else None,
        _short(detail, 512) if isinstance(detail, str) else None,
    )


def remember_body(request, body) -> None:
    """Keep the parsed JSON body for the request's row (its userName / displayName, or all of it)."""
    request.environ[_BODY] = body


class ProvisioningLog:
    """``registry.provisioning_log``: queue a row per SCIM request; a thread writes them."""

    def __init__(self, registry):
        self.engine = registry.db_engine
        self.keep_bodies = registry.gateway_settings.admin.provisioning_log_bodies
        from ..retention import retention

        self.retention = retention(registry)
        self._queue: collections.deque = collections.deque(maxlen=MAX_QUEUED)
        #: Rows a failed write left, tried first next time.
        self._retry: list[dict] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = None
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        _open.add(self)

    # ------------------------------------------------------------ request side

    def begin(self, request) -> None:
        """Called first thing for a SCIM request: the row is queued once its response is final."""
        request.environ[_STARTED] = time.perf_counter()
        request.add_response_callback(self._record)

    def _record(self, request, response) -> None:
        """Response callback: note the raw facts only; :meth:`_row` makes the row in the writer thread."""
        try:
            environ = request.environ
            status = response.status_int
            scim = getattr(request, "scim", None)
            matchdict = request.matchdict
            duration = time.perf_counter() - environ[_STARTED]
            route = request.matched_route
            # The same callback counts it for /metrics: no second one per request.
            instruments.scim_request(
                environ["REQUEST_METHOD"],
                matchdict.get("resource") if matchdict else None,
                route.name if route is not None else None,
                status,
                duration,
            )
            self._queue.append(
                (
                    time.time(),
                    duration,
                    environ["REQUEST_METHOD"],
                    environ.get("PATH_INFO", ""),
                    environ.get("QUERY_STRING", ""),
                    status,
                    scim.actor if scim is not None else None,
                    request.correlation_id,
                    request.client_addr,
                    matchdict.get("resource") if matchdict else None,
                    matchdict.get("id") if matchdict else None,
                    response.headers.get("Location") if status == 201 else None,
                    environ.get(_BODY),
                    response.body if status >= 400 else None,
                )
            )
        except Exception:  # noqa: BLE001 - the log must never fail a SCIM request
            log.warning("provisioning log: could not record %s %s", request.method, request.path, exc_info=True)
            return
        if self._thread is None or self._pid != os.getpid():
            self._start()

    def _row(self, raw: tuple) -> dict:
        """The row of one request, from what :meth:`_record` noted."""
        (
            at,
            duration,
            method,
            path_info,
            query,
            status,
            actor,
            correlation_id,
            address,
            resource,
            resource_id,
            location,
            body,
            error_body,
        ) = raw
        scim_type = error = None
        if error_body is not None:
            scim_type, error = _error_of(error_body)
        resource = (resource or "").lower()
        resource_type = "User" if resource == "users" else "Group" if resource == "groups" else None
        if resource_id is None and location:
            resource_id = location.rstrip("/").rsplit("/", 1)[-1]
        name = None
        if isinstance(body, dict):
            name = body.get("userName") if resource_type == "User" else body.get("displayName")
        # PATH_INFO is WSGI's latin-1 text of the raw bytes; the query is shown decoded.
        path = path_info.encode("latin-1", "replace").decode("utf-8", "replace")
        if query:
            path += "?" + unquote_plus(query)
        return {
            "at": dt.datetime.fromtimestamp(at, dt.UTC),
            "token_name": actor.partition(":")[2] if actor else None,
            "method": method[:8],
            "path": _short(path, 512),
            "status": status,
            "scim_type": scim_type,
            "duration_ms": duration * 1000,
            "correlation_id": correlation_id,
            "remote_addr": _short(address, 64),
            "resource_type": resource_type,
            "resource_id": _short(resource_id, 64),
            "resource_name": _short(name, 256) if isinstance(name, str) else None,
            "error": error,
            "body": redact(body) if self.keep_bodies and body is not None else None,
        }

    # ------------------------------------------------------------ writer side

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return
            self._stop.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="provisioning-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            self.flush()
            self.retention.maybe_prune()

    def flush(self) -> int:
        """Write every queued row now; the number written. Never raises."""
        written = 0
        with self._flush_lock:
            while self._retry or self._queue:
                rows = self._retry[:BATCH]
                del self._retry[:BATCH]
                while self._queue and len(rows) < BATCH:
                    raw = self._queue.popleft()
                    try:
                        rows.append(self._row(raw))
                    except Exception:  # noqa: BLE001 - one odd request must not block the others
                        log.warning("provisioning log: could not describe a request: %r", raw[:6], exc_info=True)
                if not rows:
                    continue
                try:
                    with self.engine.begin() as connection:
                        _INSERT.execute_many(connection, rows)
                except Exception:  # noqa: BLE001 - bookkeeping: keep the rows for the next try
                    log.warning("provisioning log: could not write %d rows; will retry", len(rows), exc_info=True)
                    self._retry[:0] = rows
                    del self._retry[MAX_QUEUED:]
                    break
                written += len(rows)
        return written

    def close(self) -> None:
        """Stop the thread and write what is queued (the server stops, or a test ends)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None
        self.flush()
        _open.discard(self)


#: Logs not closed yet: what is queued is written when the interpreter exits.
_open: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for provisioning_log in list(_open):
        provisioning_log.flush()

"""The provisioning log: one row per SCIM request, written off the request's path.

An operator must see at a glance that Entra's last cycle produced 400s and
why, but SCIM is the gateway's busiest write path (an initial sync is
thousands of requests a minute, half of them reads that open no
transaction). So a request only appends a tuple to an in-memory queue, in a
response callback (after pyramid_tm has committed or aborted, so the status,
the ``scimType`` and the duration are final, and a rolled-back write is still
logged); a thread per process writes the queue in one multi-row INSERT every
:data:`FLUSH_INTERVAL` seconds, on a connection and transaction of its own.
Measured with bench/scim_sync.py (docs/benchmarks.md): no change beyond noise.

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
import logging
import os
import re
import threading
import time
import weakref
from urllib.parse import unquote_plus

import sqlalchemy as sa

from .. import jsoncodec
from ..db.models import ProvisioningLogEntry, utcnow

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

_INSERT = sa.insert(ProvisioningLogEntry)


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


def _error_of(response) -> tuple[str | None, str | None]:
    """(scimType, detail) of an error response: what the client was told, from the body it got."""
    try:
        body = jsoncodec.loads(response.body)
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
        try:
            self._queue.append(self._row(request, response))
        except Exception:  # noqa: BLE001 - the log must never fail a SCIM request
            log.warning("provisioning log: could not record %s %s", request.method, request.path, exc_info=True)
            return
        if self._thread is None or self._pid != os.getpid():
            self._start()

    def _row(self, request, response) -> dict:
        environ = request.environ
        started = environ.get(_STARTED)
        duration = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        status = response.status_int
        scim_type = error = None
        if status >= 400:
            scim_type, error = _error_of(response)
        matchdict = request.matchdict or {}
        resource = (matchdict.get("resource") or "").lower()
        resource_type = "User" if resource == "users" else "Group" if resource == "groups" else None
        resource_id = matchdict.get("id")
        if resource_id is None and status == 201:
            location = response.headers.get("Location")
            if location:
                resource_id = location.rstrip("/").rsplit("/", 1)[-1]
        body = environ.get(_BODY)
        name = None
        if isinstance(body, dict):
            name = body.get("userName") if resource_type == "User" else body.get("displayName")
        scim = getattr(request, "scim", None)
        token_name = scim.actor.partition(":")[2] if scim is not None else None
        path = request.path
        if request.query_string:
            path += "?" + unquote_plus(request.query_string)
        return {
            "at": utcnow(),
            "token_name": token_name,
            "method": request.method[:8],
            "path": _short(path, 512),
            "status": status,
            "scim_type": scim_type,
            "duration_ms": round(duration, 3),
            "correlation_id": request.correlation_id,
            "remote_addr": _short(request.client_addr, 64),
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
            while self._queue:
                rows = []
                while self._queue and len(rows) < BATCH:
                    rows.append(self._queue.popleft())
                try:
                    with self.engine.begin() as connection:
                        connection.execute(_INSERT, rows)
                except Exception:  # noqa: BLE001 - bookkeeping: keep the rows for the next try
                    log.warning("provisioning log: could not write %d rows; will retry", len(rows), exc_info=True)
                    self._queue.extendleft(reversed(rows))
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

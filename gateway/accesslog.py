"""The access log: one line per request on the logger ``gateway.access``, when ``logging.access`` is on.

Each line carries the request's method, route name, status, duration and
correlation id, as the log record's attributes ``method``, ``route``,
``status``, ``duration_ms`` and ``correlation_id`` (and ``user_id`` once the
session was read), so the JSON formatter (:mod:`gateway.logs`) writes them
as keys. Nothing else of the request goes in: no path or query (a SCIM filter
names people), no header, cookie or body.

It is the outermost WSGI layer, around forward-auth's fast path, so checks
answered from memory are logged too; not a tween (any tween switches the fast
path off). The correlation id is decided here, once: a well-formed
``X-Request-Id`` the client sent, else a fresh one, written back into the
WSGI environ so that every layer below (Pyramid's ``request.correlation_id``,
the guard's 400 and 503) takes the same one; a response that does not carry
it yet gets it as ``X-Request-Id``. With ``logging.access`` off this layer is
not installed at all, and nothing of this runs.
"""

from __future__ import annotations

import logging
import time

from . import web

log = logging.getLogger("gateway.access")

#: The WSGI environ key of a request's :class:`Entry`; :class:`gateway.request.GatewayRequest` fills it in.
ENTRY = "gateway.access"
_FAST_PATH_ROUTE = "forward_auth.check"


class Entry:
    """What the layers below tell the access log: Pyramid's request, once there is one."""

    __slots__ = ("request",)

    def __init__(self):
        self.request = None


def note_request(request) -> None:
    """Called as Pyramid makes a request: remembered for its route name (one dict look-up when the log is off).

    The first one counts: a retry routes the same path again, and the guard's
    503 page makes a request of its own that is never routed."""
    entry = request.environ.get(ENTRY)
    if entry is not None and entry.request is None:
        entry.request = request


class AccessLog:
    """WSGI wrapper that logs every request it passes on, once it is answered."""

    def __init__(self, app, registry):
        from .sessions import _ENVIRON_KEY  # where a request's identity is, once it was read

        self.app = app
        self.registry = registry
        self._identity_key = _ENVIRON_KEY

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        rid = web.correlation_id_for(environ.get("HTTP_X_REQUEST_ID", ""))
        environ["HTTP_X_REQUEST_ID"] = rid
        entry = environ[ENTRY] = Entry()
        answer = []

        def answering(status, headers, exc_info=None):
            for name, _ in headers:
                if len(name) == 12 and name.lower() == "x-request-id":
                    break
            else:
                headers.append(("X-Request-Id", rid))
            answer[:] = [status]
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, answering)
        except BaseException:
            # The server answers 500 to whatever escapes; say so, then let it escape.
            self._log(environ, entry, "500", rid, started)
            raise
        if answer:
            self._log(environ, entry, answer[0], rid, started)
            return body
        # The status is set when the body starts: log when the server closes it.
        return _Closing(body, lambda: self._log(environ, entry, answer[0] if answer else "500", rid, started))

    def _log(self, environ, entry: Entry, status: str, rid: str, started: float) -> None:
        request, entry.request = entry.request, None  # environ -> entry -> request -> environ: not kept
        if not log.isEnabledFor(logging.INFO):
            return
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        code = int(status[:3]) if status[:3].isdigit() else 0
        method = environ.get("REQUEST_METHOD", "")
        route = None
        if request is not None:
            matched = request.matched_route
            route = matched.name if matched is not None else None
        elif code == 200 and environ.get("PATH_INFO") == "/auth":
            route = _FAST_PATH_ROUTE  # answered from memory, before Pyramid, for the one route it stands for
        fields = {"method": method, "route": route, "status": code, "duration_ms": duration_ms, "correlation_id": rid}
        user_id = getattr(environ.get(self._identity_key), "user_id", None)
        if user_id is not None:
            fields["user_id"] = user_id
        # The record made directly: Logger.info would walk the stack for the caller's file and line, which
        # costs more than the rest of the line, on every request (bench/forward_auth.py --access-log).
        log.handle(
            log.makeRecord(
                log.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %s %.1fms [%s]",
                (method, route or "-", code, duration_ms, rid),
                None,
                extra=fields,
            )
        )


class _Closing:
    """A response body that calls ``done`` once, when the server closes it."""

    def __init__(self, body, done):
        self._body = body
        self._done = done

    def __iter__(self):
        return iter(self._body)

    def close(self):
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()


def access_log(app, registry):
    """``app`` behind :class:`AccessLog` when ``logging.access`` is on, else ``app`` itself."""
    if registry.gateway_settings.logging.access:
        return AccessLog(app, registry)
    return app

"""The outermost WSGI layer: requests the gateway cannot read, and a database
it cannot reach, answered in this one place.

Below this layer every view may assume that the path, the query string and
a URL-encoded form are UTF-8 without NUL characters (WebOb would raise
``UnicodeDecodeError`` from ``request.GET`` deep inside a view, and
PostgreSQL cannot store NUL), and that a database error meaning "not
reachable now" never needs handling: it escapes whatever view, tween or
commit it happened in and is answered here with 503 and ``Retry-After``.
SCIM clients (Entra) retry a 503; reverse proxies show their own error page
for the empty 503 of ``/auth``; a person sees a page with the reference.

It is a WSGI layer around Pyramid, not a tween (any tween switches
forward-auth's fast path off); the fast path sits in front of it, reads only
the exact path ``/auth`` and hands a check it cannot answer for want of the
database to the app, so that too ends here.
"""

from __future__ import annotations

import io
import logging
import sys
from urllib.parse import unquote_to_bytes

from . import jsoncodec

log = logging.getLogger(__name__)

SCIM_PREFIX = "/scim/"
#: Seconds a client is told to wait before trying again while the database is away.
RETRY_AFTER = "5"
#: The form bodies read here to check them (SAML posts are far smaller).
MAX_FORM_BYTES = 4 * 1024 * 1024
_FORM = "application/x-www-form-urlencoded"


class Unreadable(Exception):
    """Why a request cannot be read, in words for the client."""


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached now (refused,
    timed out, restarting, pool exhausted), as opposed to a bug or bad data.
    Connection problems are ``OperationalError`` in every DB-API driver;
    SQLAlchemy wraps them, and reports an exhausted pool as ``TimeoutError``."""
    import sqlalchemy.exc as sa_exc

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
            return True
        if type(exc).__name__ in ("OperationalError", "PoolTimeout", "InterfaceError") and _from_driver(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _from_driver(exc) -> bool:
    module = type(exc).__module__ or ""
    return module.split(".")[0] in ("psycopg", "psycopg_pool", "sqlite3", "_sqlite3")


def check_readable(environ) -> None:
    """Raise :class:`Unreadable` unless path, query and a URL-encoded form
    body decode as UTF-8 without NUL; a form must not name another charset.
    A form body read here is put back for the app to read."""
    _text(environ.get("PATH_INFO", "").encode("latin-1", "replace"), "path")
    _text(unquote_to_bytes(environ.get("QUERY_STRING", "").encode("latin-1", "replace")), "query string")
    media_type, _, params = environ.get("CONTENT_TYPE", "").partition(";")
    media_type = media_type.strip().lower()
    if media_type not in (_FORM, "multipart/form-data"):
        return
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise Unreadable(f"a form must be sent as UTF-8, not {value.strip()}")
    if media_type != _FORM:
        return
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Unreadable("the Content-Length is not a number") from None
    if length <= 0 or length > MAX_FORM_BYTES:
        return  # nothing to check, or refused as too large where the form is read
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    _text(unquote_to_bytes(body.replace(b"+", b" ")), "form")


def _text(raw: bytes, where: str) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable(f"the {where} is not valid UTF-8") from None
    if "\x00" in text:
        raise Unreadable(f"the {where} contains a NUL character")


class Guard:
    """WSGI wrapper: :func:`check_readable` before the app, :func:`database_unavailable` around it."""

    def __init__(self, app, registry):
        self.app = app
        self.registry = registry

    def __call__(self, environ, start_response):
        try:
            check_readable(environ)
        except Unreadable as exc:
            return self._answer(environ, start_response, 400, str(exc))
        try:
            return self.app(environ, start_response)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            log.warning(
                "database unavailable [%s]: %s",
                _correlation_id(environ),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return self._answer(
                environ, start_response, 503, "the database is unavailable; try again shortly", sys.exc_info()
            )

    def _answer(self, environ, start_response, status: int, detail: str, exc_info=None):
        rid = _correlation_id(environ)
        path = environ.get("PATH_INFO", "")
        headers = [("X-Request-Id", rid)]
        if status == 503:
            headers.append(("Retry-After", RETRY_AFTER))
        if path.startswith(SCIM_PREFIX) or path == "/scim":
            from .scim.errors import SCIM_CONTENT_TYPE, error_body

            scim_type = "invalidSyntax" if status == 400 else None
            body = jsoncodec.dumps(error_body(status, detail, scim_type))
            headers.append(("Content-Type", SCIM_CONTENT_TYPE))
        elif path == "/auth":
            body = b""  # the proxy shows its own error page
        else:
            from .templating import SECURITY_HEADERS

            body, content_type = self._page(environ, status, detail, rid)
            headers.append(("Content-Type", content_type))
            headers.extend(SECURITY_HEADERS.items())
        headers.append(("Content-Length", str(len(body))))
        reason = "Bad Request" if status == 400 else "Service Unavailable"
        start_response(f"{status} {reason}", headers, exc_info)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    def _page(self, environ, status: int, detail: str, rid: str) -> tuple[bytes, str]:
        """The page on the layout (nobody shown as signed in: that would need
        the database); plain text if even that cannot be rendered."""
        if status == 503:
            try:
                from pyramid.interfaces import IRequestFactory

                from .sessions import _ENVIRON_KEY

                page_environ = {k: v for k, v in environ.items() if k != "webob.adhoc_attrs"}
                page_environ["wsgi.input"] = io.BytesIO()
                page_environ[_ENVIRON_KEY] = None
                request = self.registry.queryUtility(IRequestFactory)(page_environ)
                request.registry = self.registry
                request.correlation_id = rid
                from pyramid.renderers import render

                html = render("unavailable.html", {"detail": detail}, request=request)
                return html.encode(), "text/html; charset=utf-8"
            except Exception:
                log.exception("the unavailable page could not be rendered [%s]", rid)
            return (
                f"Temporarily unavailable. Please try again shortly.\nReference: {rid}\n".encode(),
                "text/plain; charset=utf-8",
            )
        return f"Bad request: {detail}.\nReference: {rid}\n".encode(), "text/plain; charset=utf-8"


def _correlation_id(environ) -> str:
    """The request's correlation id if Pyramid made one, else one made the same way."""
    from . import web

    made = environ.get("webob.adhoc_attrs", {}).get("correlation_id")
    if made:
        return made
    rid = environ.setdefault("gateway.guard_id", None) or web.correlation_id(_Headers(environ))
    environ["gateway.guard_id"] = rid
    return rid


class _Headers:
    """Just enough of a request for :func:`gateway.web.correlation_id`."""

    def __init__(self, environ):
        self.headers = {"X-Request-Id": environ.get("HTTP_X_REQUEST_ID", "")}

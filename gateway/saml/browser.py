"""The requests this gateway sends, bound to the browser that asked for them.

An AuthnRequest (``/saml/login``) and a LogoutRequest (``POST /logout``)
each get a row in ``saml_requests``: the request id, its kind, and the
SHA-256 of a random value that only this browser holds, in a cookie scoped to
``/saml/`` and named after the request. The answer (a Response at
``/saml/acs``, a LogoutResponse at ``/saml/slo``) is accepted only when its
InResponseTo names a row of the right kind, unused, unexpired, whose hash
matches that request's cookie as the answer brought it.

One cookie per request: a page whose session ended sends its parallel
requests (a favicon, XHRs) through the proxy to ``/saml/login`` at once, and
with one shared cookie the last of their answers would replace the binding
of the sign-in the person goes on with, which would then be refused as
started in another browser. The rows live in the database, so an answer can arrive at any instance;
using one is a single atomic UPDATE, so it completes once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

import sqlalchemy as sa

from ..db.models import SamlRequest, utcnow
from ..db.prepared import Prepared, session_connection
from .errors import SamlRejection

#: How long a started sign-in (MFA prompts included) or sign-out may take.
REQUEST_LIFETIME = dt.timedelta(minutes=15)
#: How long an expired request row stays before the next request deletes it.
KEEP_EXPIRED = dt.timedelta(hours=1)
_UNREAD = object()
_BINDING = re.compile(r"^[A-Za-z0-9_\-]{40,64}$")

_WHAT = {"authn": "sign-in", "logout": "sign-out", "test": "test sign-in"}


def cookie_name(request, request_id: str) -> str:
    """The binding cookie of ``request_id`` (its name holds a digest of the id, never the id)."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:16]
    return f"{request.registry.gateway_settings.session.cookie_name}_saml_{digest}"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


_TABLE = SamlRequest.__table__
_COLUMNS = ("request_id", "kind", "browser_hash", "next_path", "created_at", "expires_at")
_INSERT = sa.insert(_TABLE).values({c: sa.bindparam(c) for c in _COLUMNS})
# Requests never answered would otherwise stay forever. Rows are kept a
# while past expiry so that a late answer is told "took too long".
_PRUNE = sa.delete(_TABLE).where(_TABLE.c.expires_at <= sa.bindparam("stale"))
#: PostgreSQL: one round trip, the prune riding along with the insert.
_REMEMBER_PG = Prepared(_INSERT.add_cte(_PRUNE.cte("expired")))
_REMEMBER, _PRUNE_EXPIRED = Prepared(_INSERT), Prepared(_PRUNE)
#: PostgreSQL: this transaction's commit need not wait for the disk.
_NO_FLUSH_WAIT = Prepared(sa.select(sa.func.set_config("synchronous_commit", "off", True)))
_READ = Prepared(sa.select(_TABLE).where(_TABLE.c.request_id == sa.bindparam("request_id")))
_USE = Prepared(
    sa.update(_TABLE)
    .where(_TABLE.c.request_id == sa.bindparam("request_id"), _TABLE.c.used_at.is_(None))
    .values(used_at=sa.bindparam("now"))
    .returning(_TABLE.c.request_id)
)


def remember(request, request_id: str, kind: str, next_path: str = "/", *, durable: bool = True) -> None:
    """Store ``request_id`` bound to this browser, and set the binding cookie on the response.

    ``durable=False`` (a sign-in's login, when nothing else is written): on
    PostgreSQL the commit does not wait for the disk, a few milliseconds of
    every sign-in. A crash of the database may then lose the last fraction of
    a second of these rows, and a sign-in started in it is refused as
    unknown and started again; nothing else depends on them.
    """
    name = cookie_name(request, request_id)
    binding = secrets.token_urlsafe(32)
    now = utcnow()
    connection = session_connection(request.dbsession, write=True)
    values = {
        "request_id": request_id,
        "kind": kind,
        "browser_hash": _hash(binding),
        "next_path": next_path,
        "created_at": now,
        "expires_at": now + REQUEST_LIFETIME,
        "stale": now - KEEP_EXPIRED,
    }
    if connection.dialect.name == "postgresql":
        if not durable:
            _NO_FLUSH_WAIT.execute(connection, {})
        _REMEMBER_PG.execute(connection, values)
    else:
        _PRUNE_EXPIRED.execute(connection, values)
        _REMEMBER.execute(connection, values)
    settings = request.registry.gateway_settings.session

    def set_cookie(_request, response):
        # The ACS POST comes from the IdP's site: a SameSite=Lax cookie would
        # not be sent with it, so over https the binding cookie is
        # SameSite=None. Over plain http (development) SameSite=None is
        # refused by browsers; leaving the attribute out lets them send it
        # with a top-level POST soon after.
        response.set_cookie(
            name,
            binding,
            max_age=int(REQUEST_LIFETIME.total_seconds()),
            path="/saml/",
            secure=settings.cookie_secure,
            httponly=True,
            samesite="None" if settings.cookie_secure else None,
        )

    request.add_response_callback(set_cookie)


def forget(request, request_id: str) -> None:
    """Delete the binding cookie of ``request_id`` once it is answered."""
    name = cookie_name(request, request_id)
    request.add_response_callback(lambda _request, response: response.delete_cookie(name, path="/saml/"))


def find(request, request_id: str):
    """The row of ``request_id`` (a named tuple of the table's columns), or None."""
    rows = _READ.rows(session_connection(request.dbsession), {"request_id": request_id[:128]})
    return rows[0] if rows else None


def bound(request, request_id: str, kind: str, now: dt.datetime, row=_UNREAD):
    """The row of ``request_id`` if this browser sent it as a ``kind`` request; else a refusal.

    ``row``: the row as :func:`find` read it, when the caller already did.
    """
    what = _WHAT[kind]
    if row is _UNREAD:
        row = find(request, request_id)
    if row is None or row.kind != kind:
        raise SamlRejection("in_response_to_unknown", f"This answer does not belong to a {what} started here.")
    if row.used_at is not None:
        raise SamlRejection("in_response_to_used", f"This {what} was already completed once.")
    if row.expires_at <= now:
        raise SamlRejection("in_response_to_expired", f"The {what} took too long.")
    binding = request.cookies.get(cookie_name(request, request_id), "")
    if not _BINDING.match(binding) or not secrets.compare_digest(_hash(binding), row.browser_hash):
        raise SamlRejection(
            "in_response_to_other_browser",
            f"This answer belongs to a {what} started in another browser.",
            hint=f"Start the {what} again in this browser; if cookies are blocked for this site, allow them.",
        )
    return row


def use(request, request_id: str, kind: str, now: dt.datetime) -> None:
    """Mark the request answered, atomically on every instance: the second of two racing answers fails."""
    used = _USE.rows(session_connection(request.dbsession, write=True), {"request_id": request_id, "now": now})
    if not used:
        raise SamlRejection("in_response_to_used", f"This {_WHAT[kind]} was already completed once.")

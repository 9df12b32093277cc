"""The requests this gateway sends, bound to the browser that asked for them.

An AuthnRequest (``/saml/login``) and a LogoutRequest (``POST /logout``)
each get a row in ``saml_requests``: the request id, its kind, and the
SHA-256 of a random value that only this browser holds, in a cookie scoped to
``/saml/``. The answer (a Response at ``/saml/acs``, a LogoutResponse at
``/saml/slo``) is accepted only when its InResponseTo names a row of the
right kind, unused, unexpired, whose hash matches the cookie the answer came
with. The rows live in the database, so an answer can arrive at any instance;
using one is a single atomic UPDATE, so it completes once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

import sqlalchemy as sa
import zope.sqlalchemy

from ..db.models import SamlRequest, utcnow
from .errors import SamlRejection

#: How long a started sign-in (MFA prompts included) or sign-out may take.
REQUEST_LIFETIME = dt.timedelta(minutes=15)
#: How long an expired request row stays before the next request deletes it.
KEEP_EXPIRED = dt.timedelta(hours=1)
_BINDING = re.compile(r"^[A-Za-z0-9_\-]{40,64}$")

_WHAT = {"authn": "sign-in", "logout": "sign-out", "test": "test sign-in"}


def cookie_name(request) -> str:
    return request.registry.gateway_settings.session.cookie_name + "_saml"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def remember(request, request_id: str, kind: str, next_path: str = "/") -> None:
    """Store ``request_id`` bound to this browser, and set the binding cookie on the response."""
    name = cookie_name(request)
    binding = request.cookies.get(name)
    if not binding or not _BINDING.match(binding):
        binding = secrets.token_urlsafe(32)
    now = utcnow()
    dbsession = request.dbsession
    table = SamlRequest.__table__
    insert = sa.insert(table).values(
        request_id=request_id,
        kind=kind,
        browser_hash=_hash(binding),
        next_path=next_path,
        created_at=now,
        expires_at=now + REQUEST_LIFETIME,
    )
    # Requests never answered would otherwise stay forever. Rows are kept a
    # while past expiry so that a late answer is told "took too long".
    expired = sa.delete(table).where(table.c.expires_at <= now - KEEP_EXPIRED)
    if dbsession.get_bind().dialect.name == "postgresql":
        # One round trip on the sign-in's hot path: the prune rides along.
        dbsession.execute(insert.add_cte(expired.cte("expired")))
    else:
        dbsession.execute(expired)
        dbsession.execute(insert)
    zope.sqlalchemy.mark_changed(dbsession)
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


def forget(request) -> None:
    """Delete the binding cookie once its request is answered."""
    name = cookie_name(request)
    request.add_response_callback(lambda _request, response: response.delete_cookie(name, path="/saml/"))


def bound(request, request_id: str, kind: str, now: dt.datetime) -> SamlRequest:
    """The row of ``request_id`` if this browser sent it as a ``kind`` request; else a refusal."""
    what = _WHAT[kind]
    row = request.dbsession.get(SamlRequest, request_id[:128])
    if row is None or row.kind != kind:
        raise SamlRejection("in_response_to_unknown", f"This answer does not belong to a {what} started here.")
    if row.used_at is not None:
        raise SamlRejection("in_response_to_used", f"This {what} was already completed once.")
    if row.expires_at <= now:
        raise SamlRejection("in_response_to_expired", f"The {what} took too long.")
    binding = request.cookies.get(cookie_name(request), "")
    if not secrets.compare_digest(_hash(binding), row.browser_hash):
        raise SamlRejection(
            "in_response_to_other_browser",
            f"This answer belongs to a {what} started in another browser.",
            hint=f"Start the {what} again in this browser; if cookies are blocked for this site, allow them.",
        )
    return row


def use(request, request_id: str, kind: str, now: dt.datetime) -> None:
    """Mark the request answered, atomically on every instance: the second of two racing answers fails."""
    # On the table, not the ORM entity: the same statement without the ORM's bulk-update work.
    table = SamlRequest.__table__
    used = request.dbsession.execute(
        sa.update(table)
        .where(table.c.request_id == request_id, table.c.used_at.is_(None))
        .values(used_at=now)
        .returning(table.c.request_id)
    ).first()
    zope.sqlalchemy.mark_changed(request.dbsession)
    if used is None:
        raise SamlRejection("in_response_to_used", f"This {_WHAT[kind]} was already completed once.")

"""SCIM bearer tokens: made once, stored as a SHA-256 hash, checked every request.

A token is 256 random bits, so an unsalted SHA-256 is enough to make the
stored value useless to a reader of the database, and lets a request find
its token by an indexed hash lookup. The found hash is compared again with
:func:`hmac.compare_digest` so the check does not depend on string
comparison timing. Revocation is a column read on every request, so
``token revoke`` takes effect on the next request on every instance.
``last_used_at`` is written at most once a minute per token: a write per
SCIM request would double the write load of an Entra sync for no gain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets

import sqlalchemy as sa

from ..db.models import ScimToken, utcnow

PREFIX = "gws_"
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}$")


class TokenError(Exception):
    """A token command cannot be done; the message says why."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(dbsession, name: str) -> str:
    """Store a new token named ``name``; return the token (shown only this once)."""
    if not NAME.match(name):
        raise TokenError(f'bad token name "{name}": use letters, digits and _ . @ - (at most 128)')
    if dbsession.scalar(sa.select(ScimToken.id).where(ScimToken.name == name)) is not None:
        # Names stay taken after revocation: the audit trail refers to them.
        raise TokenError(f'a token named "{name}" exists already (revoked or not); choose another name')
    token = PREFIX + secrets.token_urlsafe(32)
    dbsession.add(ScimToken(name=name, token_hash=hash_token(token)))
    dbsession.flush()
    return token


def list_tokens(dbsession) -> list[ScimToken]:
    return list(dbsession.scalars(sa.select(ScimToken).order_by(ScimToken.created_at, ScimToken.id)))


def revoke_token(dbsession, name: str) -> ScimToken:
    token = dbsession.scalar(sa.select(ScimToken).where(ScimToken.name == name))
    if token is None:
        raise TokenError(f'no token named "{name}"')
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


def authenticate(dbsession, presented: str):
    """The live token matching ``presented`` (a row with ``id``, ``name``,
    ``token_hash``, ``last_used_at``, ``revoked_at``), or None."""
    if not presented or len(presented) > 512:
        return None
    wanted = hash_token(presented)
    # Plain columns, not an ORM object: this runs on every SCIM request.
    token = dbsession.execute(
        sa.select(ScimToken.id, ScimToken.name, ScimToken.token_hash, ScimToken.last_used_at, ScimToken.revoked_at)
        .where(ScimToken.token_hash == wanted)
    ).first()
    if token is None or not hmac.compare_digest(token.token_hash, wanted) or token.revoked_at is not None:
        return None
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # A conditional UPDATE, so concurrent requests do not all write.
        dbsession.execute(
            sa.update(ScimToken)
            .where(ScimToken.id == token.id)
            .where(sa.or_(ScimToken.last_used_at.is_(None), ScimToken.last_used_at < now - LAST_USED_RESOLUTION))
            .values(last_used_at=now)
        )
    return token

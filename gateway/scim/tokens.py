"""SCIM bearer tokens: made once, stored as a SHA-256 hash, checked every request.

A token is 256 random bits, so an unsalted SHA-256 is enough to make the
stored value useless to a reader of the database, and lets a request find
its token by an indexed hash lookup. The found hash is compared again with
:func:`hmac.compare_digest` so the check does not depend on string
comparison timing.

Every SCIM request checks its token, so :class:`TokenVerifier` keeps the
tokens it has seen valid in memory, in a
:class:`~gateway.identity_cache.ChangeCache` that watches ``scim_tokens``:
it is dropped the moment the database reports a change there (SQLite: any
commit, seen through ``PRAGMA data_version`` before every read; PostgreSQL:
the ``NOTIFY`` trigger of migration 0002, within milliseconds, and nothing is
served from memory while the listener is down). So ``token revoke`` takes
effect on the next request on every instance, as when the column was read on
every request. A miss is one prebuilt indexed SELECT on a pooled autocommit
connection, outside the request's transaction.

``last_used_at`` (and ``last_used_address``, the client's address) is
written at most once a minute per token, in a short
transaction of its own rather than the request's (a failed request does not
undo it, and a busy minute costs one write, not one per request).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import threading

import sqlalchemy as sa

from ..db.models import ScimToken, utcnow
from ..identity_cache import ChangeCache, mark_written

log = logging.getLogger(__name__)

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
    mark_written(dbsession, "scim_tokens")
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
        mark_written(dbsession, "scim_tokens")
        token.revoked_at = utcnow()
    return token


def authenticate(dbsession, presented: str, address: str | None = None):
    """The live token matching ``presented`` (a row with ``id``, ``name``,
    ``token_hash``, ``last_used_at``, ``revoked_at``), or None."""
    if not presented or len(presented) > 512:
        return None
    wanted = hash_token(presented)
    # Plain columns, not an ORM object: this runs on every SCIM request.
    token = dbsession.execute(
        sa.select(
            ScimToken.id, ScimToken.name, ScimToken.token_hash, ScimToken.last_used_at, ScimToken.revoked_at
        ).where(ScimToken.token_hash == wanted)
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
            .values(last_used_at=now, last_used_address=(address or "")[:64] or None)
        )
    return token


#: The token columns a request needs, by hash: built once.
_FIND = sa.select(
    ScimToken.id, ScimToken.name, ScimToken.token_hash, ScimToken.last_used_at, ScimToken.revoked_at
).where(ScimToken.token_hash == sa.bindparam("token_hash"))


def _touch_statement(token_id: int, now: dt.datetime, address: str | None = None):
    # Conditional, so concurrent instances do not all write.
    return (
        sa.update(ScimToken)
        .where(ScimToken.id == token_id)
        .where(sa.or_(ScimToken.last_used_at.is_(None), ScimToken.last_used_at < now - LAST_USED_RESOLUTION))
        .values(last_used_at=now, last_used_address=(address or "")[:64] or None)
    )


class TokenVerifier:
    """``registry.scim_tokens``: the live token for a presented one, from memory when the database allows."""

    def __init__(self, registry):
        from ..db.prepared import FastSelect, read_engine
        from ..identity_cache import attach

        self.engine = registry.db_engine
        reader_engine = getattr(registry, "db_read_engine", None)
        if reader_engine is None:
            reader_engine = registry.db_read_engine = read_engine(registry.gateway_settings.database_url)
        self.reader = FastSelect(reader_engine, _FIND)
        self.cache = ChangeCache(max_entries=1000, tables=frozenset({"scim_tokens"}), local_commits=False)
        identity_cache = getattr(registry, "identity_cache", None)
        attach(self.cache, self.engine, registry.dbsession_factory, detector=getattr(identity_cache, "detector", None))
        self._touched: dict[int, tuple] = {}  # id -> (last_used_at seen, when we wrote)
        self._lock = threading.Lock()

    def verify(self, presented: str, address: str | None = None):
        """The live token matching ``presented`` (``id``, ``name``, ``token_hash``,
        ``last_used_at``, ``revoked_at``), or None. ``address`` (the client's)
        is recorded as ``last_used_address`` whenever ``last_used_at`` is."""
        if not presented or len(presented) > 512:
            return None
        wanted = hash_token(presented)
        cache = self.cache
        generation = cache.generation()
        token = cache.get(wanted) if generation is not None else None
        if token is None:
            rows = self.reader.rows({"token_hash": wanted})
            token = rows[0] if rows else None
            if token is None or not hmac.compare_digest(token.token_hash, wanted) or token.revoked_at is not None:
                return None
            if generation is not None:
                cache.put(wanted, token, generation)
        self._touch(token, address)
        return token

    def _last_used(self, token):
        # What this process wrote wins while the row it saw is unchanged (the
        # cached row is stale after our own write); a changed row speaks for itself.
        seen, wrote = self._touched.get(token.id, (None, None))
        return wrote if wrote is not None and seen == token.last_used_at else token.last_used_at

    def _touch(self, token, address: str | None = None) -> None:
        now = utcnow()
        last = self._last_used(token)
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return
        with self._lock:
            last = self._last_used(token)
            if last is not None and now - last < LAST_USED_RESOLUTION:
                return
            self._touched[token.id] = (token.last_used_at, now)
        try:
            with self.engine.begin() as connection:
                connection.execute(_touch_statement(token.id, now, address))
        except sa.exc.SQLAlchemyError:
            # Bookkeeping only: the request goes on; the next minute tries again.
            log.warning("could not record that SCIM token %s was used", token.name, exc_info=True)

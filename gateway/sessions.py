"""Server-side browser sessions, and the Pyramid security policy built on them.

The cookie holds a random token; the ``sessions`` row is keyed by its
HMAC-SHA256 under ``session.secret``, so a database dump gives no usable
cookie. Because the state is a row, logout, single logout and deactivation
end a session at once on every instance.

``request.identity`` is a :class:`SessionIdentity` or None. Loading it is the
hot path (forward-auth asks on every proxied request), so it is one indexed
query (primary key of ``sessions`` joined to the user by primary key) that
already refuses ended, expired, idle and deactivated sessions, and it writes
only when ``last_seen_at`` is more than :data:`TOUCH_INTERVAL` old.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import zope.sqlalchemy
from pyramid.interfaces import ICSRFStoragePolicy
from pyramid.security import Allowed, Denied
from zope.interface import implementer

from .db.models import Group, GroupMember, SsoSession, User, utcnow
from .db.prepared import Prepared, session_connection
from .identity_cache import hold_identity_lock

#: ``last_seen_at`` is refreshed at most this often, so most requests only read.
TOUCH_INTERVAL = dt.timedelta(seconds=60)

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]{40,64}$")
_ENVIRON_KEY = "gateway.session_identity"


@dataclass(frozen=True)
class SessionIdentity:
    """The signed-in person as ``request.identity`` shows them."""

    session_hash: str
    user_id: str
    user_name: str
    email: str | None
    display_name: str | None
    given_name: str | None
    family_name: str | None
    title: str | None
    department: str | None
    is_admin: bool
    csrf_token: str
    created_at: dt.datetime
    expires_at: dt.datetime
    last_seen_at: dt.datetime
    name_id: str | None = None
    session_index: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Display names of the user's groups, sorted, and their external ids (Entra object ids).
    groups: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The ``/whoami`` shape (SCIM-like names); ``/`` shows the same."""
        attributes = dict(self.attributes or {})
        for key in ("title", "department", "given_name", "family_name"):
            value = getattr(self, key)
            if value:
                attributes.setdefault(key, value)
        return {
            "id": self.user_id,
            "userName": self.user_name,
            "email": self.email,
            "displayName": self.display_name or self.user_name,
            "groups": list(self.groups),
            "attributes": attributes,
        }


def hash_token(secret: str, token: str) -> str:
    """The row key of a session cookie: HMAC-SHA256 keyed with ``session.secret``.

    A database dump yields no usable cookie, and write access to the database
    alone cannot mint a session: that needs the secret too. Changing the
    secret therefore signs everybody out.
    """
    return hmac.new(secret.encode("utf-8"), token.encode("ascii"), hashlib.sha256).hexdigest()


def _row_key(request, token: str) -> str:
    return hash_token(_settings(request).secret, token)


def _settings(request):
    return request.registry.gateway_settings.session


_COLUMNS = (
    SsoSession.id_hash,
    SsoSession.user_id,
    SsoSession.csrf_token,
    SsoSession.created_at,
    SsoSession.expires_at,
    SsoSession.last_seen_at,
    SsoSession.name_id,
    SsoSession.session_index,
    User.user_name,
    User.email,
    User.display_name,
    User.given_name,
    User.family_name,
    User.title,
    User.department,
    User.is_admin,
    User.attributes,
)


def load_identity(request) -> SessionIdentity | None:
    """The identity behind this request's session cookie, or None (cached per request)."""
    if _ENVIRON_KEY in request.environ:
        return request.environ[_ENVIRON_KEY]
    identity = None
    token = request.cookies.get(_settings(request).cookie_name)
    if token and _TOKEN.match(token):
        identity = _load(request, _row_key(request, token))
    request.environ[_ENVIRON_KEY] = identity
    return identity


#: Built once: session, user and the user's groups in one indexed query.
#: Building a statement per request costs more than running it.
_LOAD = (
    sa.select(*_COLUMNS, Group.display_name.label("group_name"), Group.external_id.label("group_external_id"))
    .select_from(SsoSession)
    .join(User, User.id == SsoSession.user_id)
    .outerjoin(GroupMember, GroupMember.user_id == SsoSession.user_id)
    .outerjoin(Group, Group.id == GroupMember.group_id)
    .where(
        SsoSession.id_hash == sa.bindparam("id_hash"),
        SsoSession.ended_at.is_(None),
        SsoSession.expires_at > sa.bindparam("now"),
        SsoSession.last_seen_at > sa.bindparam("idle_since"),
        User.active.is_(True),
    )
)
_TOUCH = (
    sa.update(SsoSession)
    .where(SsoSession.id_hash == sa.bindparam("touch_hash"))
    .values(last_seen_at=sa.bindparam("touch_now"))
)


def _load(request, id_hash: str) -> SessionIdentity | None:
    settings = _settings(request)
    now = utcnow()
    generation = None
    if "dbsession" in request.__dict__:
        # This request already has a transaction (it may have just started
        # this very session): read through it so it sees its own writes.
        rows = request.dbsession.execute(_LOAD, _load_params(id_hash, now, settings)).all()
    else:
        # The common case, and forward-auth's hot path: memory while the
        # database reports no change, else one prebuilt statement on a raw
        # pooled connection, without the ORM and transaction manager.
        generation = request.registry.identity_cache.generation()
        if generation is not None:
            identity = _fresh(request.registry.identity_cache.get(id_hash), now)
            if identity is not None:
                return identity
        rows = request.registry.session_reader.rows(_load_params(id_hash, now, settings))
    if not rows:
        return None
    row = rows[0]
    last_seen_at = row.last_seen_at
    if now - last_seen_at > TOUCH_INTERVAL:
        # Sampled, not per request: idle timeouts need minute precision only.
        with request.registry.db_engine.begin() as connection:
            connection.execute(_TOUCH, {"touch_hash": id_hash, "touch_now": now})
        last_seen_at = now
    groups = sorted({(r.group_name, r.group_external_id) for r in rows if r.group_name is not None})
    identity = SessionIdentity(
        session_hash=row.id_hash,
        user_id=row.user_id,
        user_name=row.user_name,
        email=row.email,
        display_name=row.display_name,
        given_name=row.given_name,
        family_name=row.family_name,
        title=row.title,
        department=row.department,
        is_admin=bool(row.is_admin),
        csrf_token=row.csrf_token,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_seen_at=last_seen_at,
        name_id=row.name_id,
        session_index=row.session_index,
        attributes=row.attributes or {},
        groups=tuple(name for name, _ in groups),
        group_ids=tuple(external_id for _, external_id in groups if external_id),
    )
    if generation is not None:
        request.registry.identity_cache.put(id_hash, identity, generation)
    return identity


def _fresh(identity: SessionIdentity | None, now: dt.datetime) -> SessionIdentity | None:
    """A cached identity still good to answer from memory: not expired, and
    seen within TOUCH_INTERVAL (so its idle timeout cannot have run out)."""
    if identity is not None and identity.expires_at > now and now - identity.last_seen_at <= TOUCH_INTERVAL:
        return identity
    return None


def cached_identity(registry, cookie_token: str) -> SessionIdentity | None:
    """The identity of a session cookie from memory only, or None (not cached,
    or the cache cannot vouch for itself right now): forward-auth's fast path."""
    if not _TOKEN.match(cookie_token):
        return None
    cache = registry.identity_cache
    if cache.generation() is None:
        return None
    return _fresh(cache.get(hash_token(registry.gateway_settings.session.secret, cookie_token)), utcnow())


def _load_params(id_hash: str, now: dt.datetime, settings) -> dict:
    return {"id_hash": id_hash, "now": now, "idle_since": now - dt.timedelta(seconds=settings.idle_timeout)}


_INSERT_SESSION = Prepared(
    sa.insert(SsoSession.__table__).values({c.name: sa.bindparam(c.name) for c in SsoSession.__table__.columns})
)


def start_session(request, user_id: str, *, name_id: str | None = None, session_index: str | None = None) -> str:
    """Create a session for ``user_id`` and set its cookie on the response.

    Any session this browser already had is ended first (a fresh id at every
    sign-in defeats session fixation). Returns the new cookie value.
    """
    settings = _settings(request)
    old = request.cookies.get(settings.cookie_name)
    if old and _TOKEN.match(old):
        _end(request.dbsession, [SsoSession.id_hash == _row_key(request, old)])
    # A membership change of this user committing meanwhile waits for this
    # sign-in, then sees its session and tells every instance (migration 0006).
    hold_identity_lock(request.dbsession, user_id)
    token = secrets.token_urlsafe(32)
    now = utcnow()
    request.dbsession.flush()  # the user, if still pending, before the row that refers to it
    _INSERT_SESSION.execute(
        session_connection(request.dbsession, write=True),
        {
            "id_hash": _row_key(request, token),
            "user_id": user_id,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + dt.timedelta(seconds=settings.max_age),
            "ended_at": None,
            "csrf_token": secrets.token_urlsafe(32),
            "name_id": (name_id or None) and name_id[:512],
            "session_index": (session_index or None) and session_index[:256],
            "remote_addr": (request.client_addr or "")[:64] or None,
            "user_agent": (request.user_agent or "")[:512] or None,
        },
    )
    request.environ.pop(_ENVIRON_KEY, None)

    def set_cookie(_request, response):
        response.set_cookie(
            settings.cookie_name,
            token,
            max_age=settings.max_age,
            path="/",
            domain=settings.cookie_domain or None,
            secure=settings.cookie_secure,
            httponly=True,
            samesite="Lax",
        )

    request.add_response_callback(set_cookie)
    # Every sign-in adds a row: the processes that add them delete the old
    # ones (gateway.retention; after the commit, at most once a minute).
    request.add_response_callback(_maybe_prune)
    return token


def _maybe_prune(request, _response) -> None:
    from .retention import retention

    retention(request.registry).maybe_prune()


def end_session(request) -> SessionIdentity | None:
    """End this browser's session (if any) and delete its cookie; return who it was."""
    settings = _settings(request)
    identity = load_identity(request)
    token = request.cookies.get(settings.cookie_name)
    if token and _TOKEN.match(token):
        _end(request.dbsession, [SsoSession.id_hash == _row_key(request, token)])
    request.environ[_ENVIRON_KEY] = None
    clear_cookie(request)
    return identity


def clear_cookie(request) -> None:
    settings = _settings(request)

    def delete(_request, response):
        response.delete_cookie(settings.cookie_name, path="/", domain=settings.cookie_domain or None)

    request.add_response_callback(delete)


def _end(dbsession, where) -> int:
    result = dbsession.execute(
        sa.update(SsoSession).where(SsoSession.ended_at.is_(None), *where).values(ended_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    zope.sqlalchemy.mark_changed(dbsession)
    return result.rowcount or 0


def end_session_by_hash(dbsession, id_hash: str) -> int:
    """End the session whose row key is ``id_hash`` (an admin ending someone's session); 1 or 0."""
    return _end(dbsession, [SsoSession.id_hash == id_hash])


def end_sessions_for_user(dbsession, user_id: str) -> int:
    """End every open session of a user (deactivation, deletion); returns how many."""
    return _end(dbsession, [SsoSession.user_id == user_id])


def end_sessions_by_name_id(dbsession, name_id: str, session_index: str | None = None) -> int:
    """End the sessions a SAML LogoutRequest names (by NameID, and SessionIndex when given)."""
    where = [SsoSession.name_id == name_id]
    if session_index:
        where.append(SsoSession.session_index == session_index)
    return _end(dbsession, where)


def check_csrf(request, supplied: str | None) -> bool:
    identity = load_identity(request)
    # As bytes: compare_digest refuses str with non-ASCII characters, which a form can send.
    return bool(
        identity and supplied and hmac.compare_digest(identity.csrf_token.encode(), str(supplied).encode("utf-8"))
    )


@implementer(ICSRFStoragePolicy)
class SessionCSRFStoragePolicy:
    """Pyramid's CSRF storage, backed by the session row's ``csrf_token``.

    The token is made with the session at sign-in and lives as long as it,
    so views declared with ``require_csrf=True`` (the admin console's) are
    checked by Pyramid's own CSRF support against the same token the
    sign-out form carries. Without a session there is no token, and every
    check fails.
    """

    def new_csrf_token(self, request) -> str:
        # The token changes only with the session (a fresh one at every sign-in).
        return self.get_csrf_token(request)

    def get_csrf_token(self, request) -> str:
        identity = load_identity(request)
        return identity.csrf_token if identity is not None else ""

    def check_csrf_token(self, request, supplied_token) -> bool:
        return check_csrf(request, supplied_token)


class SessionSecurityPolicy:
    """Pyramid 2 security policy: the identity is the server-side session's person.

    Permissions: ``signed-in`` for anybody with a session, ``admin`` for
    users flagged admin. Everything else is denied.
    """

    def identity(self, request):
        return load_identity(request)

    def authenticated_userid(self, request):
        identity = load_identity(request)
        return identity.user_id if identity else None

    def permits(self, request, context, permission):
        identity = load_identity(request)
        if identity is None:
            return Denied("not signed in")
        if permission == "signed-in" or (permission == "admin" and identity.is_admin):
            return Allowed(f"{permission}: granted to {identity.user_name}")
        return Denied(f"{permission}: not granted to {identity.user_name}")

    def remember(self, request, userid, **kw):
        # Sessions start only through start_session() after a verified sign-in.
        return []

    def forget(self, request, **kw):
        end_session(request)
        return []


def includeme(config):
    from .db.prepared import FastSelect, read_engine
    from .identity_cache import IdentityCache, attach

    reader_engine = read_engine(config.registry.gateway_settings.database_url)
    config.registry.db_read_engine = reader_engine
    config.registry.session_reader = FastSelect(reader_engine, _LOAD)
    config.registry.identity_cache = cache = IdentityCache()
    attach(cache, config.registry.db_engine, config.registry.dbsession_factory)
    config.set_security_policy(SessionSecurityPolicy())
    # Views that ask for it (require_csrf=True) check the session's token.
    config.set_csrf_storage_policy(SessionCSRFStoragePolicy())

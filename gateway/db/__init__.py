"""Storage wiring: one engine per app, one request-scoped session under pyramid_tm.

Views never commit: pyramid_tm commits when the request succeeds and aborts
on an error, so a failed request leaves the database as it was. pyramid_retry
replays a request that lost a serialization race on PostgreSQL.
"""

from __future__ import annotations

import os
import time

import pyramid_tm
import sqlalchemy as sa
import zope.sqlalchemy
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from .. import jsoncodec
from .models import Base  # noqa: F401  (re-exported for migrations and tests)

#: SQLite: Python's ``str.lower()`` as a SQL function, on every connection of
#: the gateway's engines, so case-insensitive comparisons agree with the
#: ``*_key`` columns and with PostgreSQL (plugins/gateway_sqlstore/query.py).
SQLITE_LOWER = "gateway_lower"


def _python_lower(value):
    # SQLite's lower() answers text for a number too; so does this.
    if value is None or isinstance(value, str):
        return value.lower() if value is not None else None
    return str(value)


def create_engine(url: str, *, checkpoint_in_background: bool = False, **kwargs) -> sa.Engine:
    """An engine with the per-backend settings the gateway relies on.

    ``checkpoint_in_background``: the app's own engine on a SQLite file has
    its WAL checkpointed by a thread instead of by a request's commit
    (:mod:`gateway.db.sqlite_checkpoints`); the CLI's short-lived engines keep
    SQLite's default.
    """
    # JSON columns (SCIM data, audit details) through the gateway's codec.
    kwargs.setdefault("json_serializer", jsoncodec.dumps_text)
    kwargs.setdefault("json_deserializer", jsoncodec.loads)
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
        from .sqlite_writer import BUSY_TIMEOUT

        kwargs.setdefault("connect_args", {}).setdefault("timeout", BUSY_TIMEOUT)
        engine = sa.create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # WAL lets readers run beside the one writer; foreign keys are off
            # by default in SQLite and the schema relies on them.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            cursor.close()
            dbapi_connection.create_function(SQLITE_LOWER, 1, _python_lower, deterministic=True)

        if kwargs.get("isolation_level") != "AUTOCOMMIT":
            # Writers queue on a lock, not on SQLite's sleeping busy handler.
            from .sqlite_writer import queue_writers

            in_memory = not database or database == ":memory:" or database.startswith("file:")
            queue_writers(engine, None if in_memory else os.path.abspath(database))
            if checkpoint_in_background and not in_memory:
                from .sqlite_checkpoints import watch

                watch(engine, os.path.abspath(database))
        return engine
    ping = kwargs.pop("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = sa.create_engine(url, **kwargs)
    if ping:
        _ping_idle_connections(engine)
    return engine


#: Seconds a pooled connection may rest before its next checkout pings it.
PING_AFTER_IDLE = 10.0
_CHECKED_IN = "gateway.checked_in"


def _ping_idle_connections(engine: sa.Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections that rested a while.

    A ping is a round trip before every request's first statement: on an
    Entra sync, one request in four of all the round trips to PostgreSQL.
    A connection used within the last ``PING_AFTER_IDLE`` seconds is handed
    out as it is; one that rested longer (through a database restart or a
    firewall's idle timeout, say) is pinged with the dialect's own ping and,
    if dead, replaced before the request sees it. A connection that died in
    the last few seconds fails its request, and SQLAlchemy then replaces
    every connection of the pool.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection, record):
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):
        rested = record.info.get(_CHECKED_IN)
        if rested is None or time.monotonic() - rested < PING_AFTER_IDLE:
            return  # just connected, or in use moments ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error:
            alive = False
        if not alive:
            # The pool discards it and checks out another (SQLAlchemy's pessimistic disconnect handling).
            raise sa.exc.DisconnectionError("a pooled connection no longer answers")


def get_session_factory(engine: sa.Engine) -> sessionmaker:
    from .tm import register_once

    factory = sessionmaker(bind=engine, expire_on_commit=False)
    # zope.sqlalchemy's listeners once here, not on every request's session (see tm.py).
    register_once(factory)
    return factory


def request_dbsession(request) -> Session:
    """``request.dbsession``: one session per request, joined to ``request.tm``."""
    # Reuse a session the test harness or a tween placed in the environ.
    session = request.environ.get("app.dbsession")
    if session is None:
        session = get_tm_session(request.registry.dbsession_factory, request.tm, request=request)
    return session


def get_tm_session(session_factory: sessionmaker, transaction_manager, request=None) -> Session:
    """A session joined to ``transaction_manager``: it commits or aborts with it."""
    from .tm import EVENTS_KEY, TM_KEY, is_registered, join

    if is_registered(session_factory):
        return session_factory(info=join({"request": request}, transaction_manager))
    dbsession = session_factory(info={"request": request})
    events = zope.sqlalchemy.register(dbsession, transaction_manager=transaction_manager)
    dbsession.info.update({TM_KEY: transaction_manager, EVENTS_KEY: events})
    return dbsession


#: Read-only hot paths that never touch ``request.dbsession``.
NO_TRANSACTION_PATHS = frozenset({"/auth", "/healthz"})


#: SCIM reads, when the storage backend says it reads without one (see below).
SCIM_PREFIX = "/scim/"


def needs_transaction(request) -> bool:
    """pyramid_tm's activate hook: whether the request runs in a transaction.

    Not for forward-auth and health checks, nor for SCIM GET/HEAD requests
    when the SCIM storage backend declares ``reads_without_transaction``
    (the shipped ``sqlstore`` reads on pooled autocommit connections, and the
    token check uses its own): there is nothing to commit or abort. Every
    other method under ``/scim/`` (writes, ``POST .search``) keeps its
    transaction.
    """
    path = request.path_info
    if path in NO_TRANSACTION_PATHS:
        return False
    if path.startswith(SCIM_PREFIX) and request.method in ("GET", "HEAD"):
        storage = getattr(request.registry, "scim_storage", None)
        return not getattr(storage, "reads_without_transaction", False)
    return True


def includeme(config):
    settings = config.get_settings()
    settings["tm.manager_hook"] = pyramid_tm.explicit_manager
    # pyramid_tm would look up the signed-in user on every request just to
    # label the transaction; the audit trail records who did what instead.
    settings["tm.annotate_user"] = "false"
    # Forward-auth only reads, through its own pooled connection: no transaction to manage.
    settings["tm.activate_hook"] = "gateway.db.needs_transaction"
    config.include("pyramid_tm")
    # request.tm is a property of gateway.request.GatewayRequest (see there
    # for why), not pyramid_tm's request method: this registration, with no
    # callable, overrides pyramid_tm's (the includer's action wins a conflict
    # with its include's), so Pyramid adds nothing to the request.
    config.add_request_method(None, name="tm")
    config.include("pyramid_retry")

    engine = create_engine(config.registry.gateway_settings.database_url, checkpoint_in_background=True)
    config.registry.db_engine = engine
    session_factory = get_session_factory(engine)
    config.registry.dbsession_factory = session_factory
